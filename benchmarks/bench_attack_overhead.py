"""One attack gradient step on WNLL + TVM with EOT k vs on the plain ResNet-56, side by side (target <= 1.15 x k).

    python benchmarks/bench_attack_overhead.py --n 100 --eot 2 --repeats 5 [--score smooth] [--data-root DIR]

A step is what PGD / APGD pay per iteration: forward and input gradient of the cross-entropy, through the
attacker's view (BPDA through TVM, EOT over ``k`` whole-batch draws, the exact WNLL view with ``--score``).
The ideal overhead is k (k forward/backward passes); the rest is TVM and the WNLL solve.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import interleaved_medians, load_test_images
from torch import nn

from wnll_art import load_defence


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xr = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return grad


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="images per attack batch (= WNLL batch)")
    parser.add_argument("--eot", type=int, default=2, help="EOT draws k")
    parser.add_argument(
        "--score", choices=("log", "log64", "smooth"), default="smooth", help="WNLL score of the view"
    )
    parser.add_argument("--template-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    x, y, source = load_test_images(args.n, args.data_root)
    plain = load_defence("resnet56", head="softmax", data_root=args.data_root)
    defended = load_defence("resnet56", tvm=True, template_size=args.template_size, data_root=args.data_root,
                            wnll_batch_size=args.n)  # fmt: skip
    view = defended.view(gradient="exact", tvm="bpda", eot_samples=args.eot, score=args.score)
    medians = interleaved_medians({"resnet56": lambda: _step(plain, x, y), "wnll+tvm": lambda: _step(view, x, y)},
                                  args.repeats)  # fmt: skip
    ratio = medians["wnll+tvm"] / medians["resnet56"]
    print(
        f"{source}, batch {args.n}, threads {torch.get_num_threads()}, EOT k={args.eot}, score {args.score}"
    )
    print(f"ResNet-56 step:        {1000 * medians['resnet56']:.1f} ms")
    print(f"WNLL + TVM step:       {1000 * medians['wnll+tvm']:.1f} ms")
    print(f"ratio: {ratio:.2f} = {ratio / args.eot:.2f} x k (target <= 1.15 x k)")


if __name__ == "__main__":
    main()
