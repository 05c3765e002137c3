"""WNLLNet predict vs plain ResNet-56 predict on the same images, side by side (target ratio <= 1.05).

    python benchmarks/bench_wnll_predict.py --n 500 --repeats 7 [--data-root DIR] [--weights FILE] [--device cuda]

The template features are cached (eval mode), as in every ART predict after the first; the first call,
which encodes the template, is reported separately.
"""

from __future__ import annotations

import argparse

import torch
from _common import add_device_option, interleaved_medians, load_test_images, timed

from wnll_art import load_pretrained, resnet56
from wnll_art.wnll.model import WNLLNet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500, help="images per predict call")
    parser.add_argument("--template-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--weights", default=None, help="ResNet-56 checkpoint (default: hub cache, else random)"
    )
    parser.add_argument("--threads", type=int, default=None)
    add_device_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, _, source = load_test_images(args.n + args.template_size, args.data_root)
    inputs, template = x[: args.n], x[args.n :]
    labels = torch.arange(args.template_size) % 10  # timing only: labels do not change the cost
    try:
        backbone = load_pretrained("resnet56", weights=args.weights)
    except (FileNotFoundError, ValueError) as exc:
        print(f"(no pretrained weights: {exc}; random weights, same cost)")
        backbone = resnet56().eval()
    model = WNLLNet(backbone, template, labels, wnll_batch_size=args.n).to(args.device).eval()
    inputs = inputs.to(args.device)
    with torch.inference_mode():
        first = timed(lambda: model(inputs), args.device)
        med = interleaved_medians(
            {"resnet56": lambda: backbone(inputs), "wnll": lambda: model(inputs)}, args.repeats, device=args.device
        )
    print(
        f"{source} images, n={args.n}, template={args.template_size}, threads={torch.get_num_threads()}, "
        f"repeats={args.repeats}, device={args.device}"
    )
    print(f"{'model':<12}{'median s':>10}{'images/s':>10}")
    for name, t in med.items():
        print(f"{name:<12}{t:>10.3f}{args.n / t:>10.0f}")
    print(f"first WNLL call (encodes the template): {first:.3f} s")
    print(f"ratio wnll / resnet56 = {med['wnll'] / med['resnet56']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
