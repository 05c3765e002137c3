"""Wall time of the README's main job (``wnll-art evaluate``, 50 images), median of ``--repeats`` fresh runs.

    python benchmarks/bench_main_job.py --data-root ../shared/data --weights ../shared/weights/resnet56-4bfd9763.th

Each run is a new process writing a new temporary ``--out`` (nothing resumed), exactly the README's command
after the install; extra ``wnll-art evaluate`` options go after ``--``. Target (issue "Adaptive evaluation"):
a median of at most 5 minutes on 2 quiet CPU cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=None, help="CIFAR-10 root (default: $WNLL_ART_DATA)")
    parser.add_argument("--weights", default=None, help="the public ResNet-56 checkpoint")
    parser.add_argument("extra", nargs="*", help="further wnll-art evaluate options (after --)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    env = dict(os.environ)
    if args.data_root:
        env["WNLL_ART_DATA"] = args.data_root
    times = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "wnll_art.cli", "evaluate", "--no-progress", "--out", str(Path(tmp) / "run"),
                   *(["--weights", args.weights] if args.weights else []), *args.extra]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
                return done.returncode
            if i == 0:
                print((Path(tmp) / "run" / "results.md").read_text().split("## ", 1)[0].strip())
        print(f"run {i + 1}: {times[-1]:.0f} s", flush=True)
    median = statistics.median(times)
    print(f"main job, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}: "
          f"median {median:.0f} s of {args.repeats} ({', '.join(f'{t:.0f}' for t in times)}); "
          f"target <= {TARGET_S:.0f} s: {'met' if median <= TARGET_S else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
