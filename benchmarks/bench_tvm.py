"""Side-by-side speed and objective of ``TotalVarMinimization`` (ADMM) vs ART ``TotalVarMin`` on CIFAR-10.

References:
    C. Guo, M. Rana, M. Cisse, L. van der Maaten, "Countering Adversarial Images using Input
    Transformations", ICLR 2018 (the defence both implement).
    A. Athalye, N. Carlini, D. Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018.

Both sides run on the CPU in this process, interleaved repeat by repeat, medians reported. ART's
``TotalVarMin`` (scipy L-BFGS-B, one image channel at a time, single-threaded) is fed NHWC through its
public ``__call__``; ours is ``TotalVarMinimization.__call__`` on NCHW NumPy (mask drawing, checks and
conversions included) with ``--threads`` torch threads (default 1: the same single core as ART).
The objective comparison gives both identical masks: ART's ``_minimize`` per image (what its
``__call__`` runs after drawing a mask) and ours through ``total_variation_minimize(mask=...)``, both
scored with ART's own ``_loss_func`` summed over channels.

Usage::

    python benchmarks/bench_tvm.py --data-root ../shared/data --n-images 200
    python benchmarks/bench_tvm.py --device cuda --no-art --n-images 2000   # GPU throughput only

With ``--device cuda`` ours also runs as :class:`~wnll_art.tvm.module.TVMPurifier` on tensors already on the
GPU (synchronised around each timed call); ``--no-art`` leaves ART (CPU, slow) and the objective section out.

BLAS pools are limited to one thread (``OPENBLAS_NUM_THREADS=1`` etc., unless already set) before NumPy
loads: on a busy machine OpenBLAS' idle-spinning threads slowed ART's L-BFGS-B up to ~50x here.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import add_device_option, synchronize  # noqa: E402
from art.defences.preprocessor import TotalVarMin  # noqa: E402

from wnll_art import load_cifar10  # noqa: E402
from wnll_art.adapters.art_tvm import TotalVarMinimization  # noqa: E402
from wnll_art.tvm import PRESETS, total_variation_minimize  # noqa: E402


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("WNLL_ART_DATA"), help="holds cifar-10-batches-py/")
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for ours (ART is single-threaded)")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-art", action="store_true", help="time ours only (no ART, no objective section)")
    add_device_option(p)
    return p.parse_args()


def _median_rate(fn: Callable[[], object], n: int, times: list[float], device: str = "cpu") -> None:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    times.append(n / (time.perf_counter() - t0))


def _art_objectives(x_nhwc: np.ndarray, z_nhwc: np.ndarray, m_nhwc: np.ndarray) -> np.ndarray:
    """ART's ``_loss_func`` of every image, summed over channels (NHWC inputs)."""
    out = np.zeros(len(x_nhwc))
    for i in range(len(x_nhwc)):
        for c in range(x_nhwc.shape[-1]):
            zc = z_nhwc[i, :, :, c].astype(np.float64)
            xc = x_nhwc[i, :, :, c].astype(np.float64)
            out[i] += TotalVarMin._loss_func(zc.flatten(), xc, m_nhwc[i, :, :, c], 2, 0.5)
    return out


def _objective_section(x: torch.Tensor, seed: int) -> None:
    """Win rates with identical masks: ours (presets) vs ART (max_iter 10 and 100)."""
    gen = torch.Generator().manual_seed(seed + 1)
    mask = (torch.rand(x.shape, generator=gen) < 0.3).to(x.dtype)
    x_nhwc = x.permute(0, 2, 3, 1).numpy()
    m_nhwc = mask.permute(0, 2, 3, 1).numpy().astype(int)
    print("\nobjective (ART _loss_func per image, identical masks; lower is better):")
    print(f"  input itself                      mean {_art_objectives(x_nhwc, x_nhwc, m_nhwc).mean():8.3f}")
    for art_iter, preset in ((10, "art-default"), (100, "art-100")):
        art = TotalVarMin(max_iter=art_iter)
        z_art = np.stack([art._minimize(x_nhwc[i], m_nhwc[i]) for i in range(len(x))])
        ours = total_variation_minimize(x, mask=mask, preset=preset)
        o_art = _art_objectives(x_nhwc, z_art, m_nhwc)
        o_ours = _art_objectives(x_nhwc, ours.permute(0, 2, 3, 1).numpy(), m_nhwc)
        print(f"  ART max_iter={art_iter:<3d}                  mean {o_art.mean():8.3f}")
        print(
            f"  ours preset={preset:<12s} ({PRESETS[preset]:3d} it)  mean {o_ours.mean():8.3f}   "
            f"ours <= ART on {100 * np.mean(o_ours <= o_art):5.1f} % of {len(x)} images"
        )
    conv = total_variation_minimize(x, mask=mask, preset="converged")
    o_conv = _art_objectives(x_nhwc, conv.permute(0, 2, 3, 1).numpy(), m_nhwc)
    print(f"  ours preset=converged    ({PRESETS['converged']} it)  mean {o_conv.mean():8.3f}")


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    images, _ = load_cifar10(args.data_root, split="test")
    x = images[: args.n_images].float() / 255.0
    n = len(x)
    x_nchw, x_nhwc = x.numpy(), x.permute(0, 2, 3, 1).contiguous().numpy()
    np.random.seed(args.seed)  # ART draws its masks from NumPy's global generator

    variants: dict[str, Callable[[], object]] = {} if args.no_art else {
        "ART TotalVarMin max_iter=10 ": lambda: TotalVarMin(max_iter=10)(x_nhwc),
        "ART TotalVarMin max_iter=100": lambda: TotalVarMin(max_iter=100)(x_nhwc),
    }  # fmt: skip
    device_type = "gpu" if torch.device(args.device).type == "cuda" else "cpu"
    if device_type == "gpu":
        variants.update(_device_variants(x, args))
    for preset in ("art-default", "art-100"):
        for comp in (False, True) if not args.no_compile else (False,):
            tvm = TotalVarMinimization(preset=preset, seed=args.seed, chunk_size=args.chunk_size,
                                       compile=comp, device_type=device_type)  # fmt: skip
            label = f"ours {preset:<11s} {'compile' if comp else 'eager  '}"
            variants[label] = functools.partial(tvm, x_nchw)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tvm(x_nchw)  # warm-up (compiles when asked)
            fallbacks = [str(w.message) for w in caught if "runs eagerly" in str(w.message)]
            note = f" ({fallbacks[0]})" if fallbacks else ""
            print(f"warm-up {label}: {time.perf_counter() - t0:6.2f} s{note}")

    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for label, fn in variants.items():
            _median_rate(fn, n, rates[label], args.device)
    med = {k: statistics.median(v) for k, v in rates.items()}
    art10, art100 = med.get("ART TotalVarMin max_iter=10 "), med.get("ART TotalVarMin max_iter=100")
    print(f"\n{n} CIFAR-10 test images, ours on {args.device}, torch threads {args.threads}, "
          f"median of {args.repeats} repeats")  # fmt: skip
    for label, rate in med.items():
        ratio = (
            ""
            if label.startswith("ART") or art10 is None or art100 is None
            else f"   x{rate / art10:6.1f} vs ART-10   x{rate / art100:7.1f} vs ART-100"
        )
        print(f"  {label}  {rate:10.1f} images/s{ratio}")
    if not args.no_art:
        _objective_section(x, args.seed)


def _device_variants(x: torch.Tensor, args: argparse.Namespace) -> dict[str, Callable[[], object]]:
    """Ours as :class:`TVMPurifier` on images already on ``args.device`` (no host transfers timed)."""
    from wnll_art.tvm.module import TVMPurifier
    from wnll_art.tvm.settings import TVMSettings

    x_dev = x.to(args.device)
    out: dict[str, Callable[[], object]] = {}
    for preset, iterations in (("art-default", PRESETS["art-default"]), ("art-100", PRESETS["art-100"])):
        purifier = TVMPurifier(TVMSettings(iterations=iterations), seed=args.seed).to(args.device)
        label = f"ours {preset:<11s} tensors"
        out[label] = functools.partial(purifier, x_dev)
        out[label]()  # warm-up
    return out


if __name__ == "__main__":
    main()
