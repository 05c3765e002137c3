"""Writes the notebooks from the cell sources below, then executes them in place (stored with their outputs).

    python notebooks/_build.py                  # all notebooks, executed (minutes on 2 CPU cores)
    python notebooks/_build.py 02_foolbox.ipynb # one notebook
    python notebooks/_build.py --no-execute     # sources only (outputs empty)

Edit the sources here, not the .ipynb files, so notebooks stay reviewable as code. Execution uses the ``python3``
kernel of the running environment, in a temporary working directory (the figures' folders the notebooks write do not
land in ``notebooks/``), with ``WNLL_ART_DATA`` and ``TORCH_HOME`` set as the notebook tests set them: taken from the
environment when they hold the data / the ResNet-56 checkpoint, else from ``../shared`` beside the checkout. Stored
outputs keep stdout, figures and results; stderr (warnings, progress) and timing metadata are dropped, so a re-run
changes only what the numbers change.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
SHARED = HERE.resolve().parents[1] / "shared"
CHECKPOINT_NAME = "resnet56-4bfd9763.th"
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

# shown under the ART and Foolbox results: white-box WNLL numbers on the pretrained model are masked gradients
MASKED_GRADIENTS_NOTE = (
    "md",
    """**Read these numbers with care.** The WNLL output saturates: for many images the label function of the
true class is 1 to float precision and the exact gradient through the solve vanishes (below 1e-8), so gradient
attacks on WNLL (C&W above all) stall. A high WNLL number here is *masked gradients*, not robustness: the same
images transferred from the softmax model fool WNLL almost always. `wnll-art evaluate` flags this
(`vanishing_gradients`, `black_box_stronger`) and reports a per-image worst case; notebook 03 shows the adaptive
protocol.""",
)

NOTEBOOKS["01_quickstart_art.ipynb"] = [
    (
        "md",
        """# Quickstart: the WNLL + TVM defence in ART

ResNet-56 with the WNLL output activation (Wang et al. 2018) wrapped as an ART `PyTorchClassifier`, attacked by FGSM,
BIM and Carlini-L2, with and without the TVM input purifier (an ART `Preprocessor`). Gradients are exact through the
WNLL solve and BPDA (straight-through) through TVM. Data come from `$WNLL_ART_DATA`, weights from the torch hub cache.
`N` sets the size (small by default: a few minutes on 2 CPU cores).""",
    ),
    ("code", "N = 16  # test images\nEPS = 8 / 255"),
    (
        "code",
        """%matplotlib inline
import wnll_art
from art.attacks.evasion import BasicIterativeMethod, CarliniL2Method, FastGradientMethod
from wnll_art.plots import accuracy_bars""",
    ),
    (
        "code",
        """wnll = wnll_art.WNLLNet.from_pretrained("resnet56", template_size=500)  # transductive batches of 500
x, y = wnll_art.load_cifar10(split="test")
x, y = (x[:N].float() / 255).numpy(), y[:N].numpy()
classifiers = {  # the defence module with TVM (Guo et al.'s settings) attacks with BPDA + EOT over 2 draws
    "softmax": wnll_art.WNLLClassifier(wnll.backbone),
    "WNLL": wnll_art.WNLLClassifier(wnll),
    "WNLL + TVM": wnll_art.WNLLClassifier(wnll_art.Defence(wnll, tvm=wnll_art.TVMSettings(), seed=0).eval()),
}
attacks = {
    "FGSM": lambda c: FastGradientMethod(c, eps=EPS, batch_size=500),
    "BIM": lambda c: BasicIterativeMethod(c, eps=EPS, eps_step=EPS / 4, max_iter=10, batch_size=500, verbose=False),
    # max_halving / max_doubling: ART's line search cut to its minimum (its default 5 + 5 costs ~10x the time)
    "CW-L2": lambda c: CarliniL2Method(c, initial_const=10.0, max_iter=10, binary_search_steps=1, max_halving=1,
                                       max_doubling=1, batch_size=500, verbose=False),
}""",
    ),
    (
        "code",
        """def accuracy(clf, images):
    return float((clf.predict(images).argmax(1) == y).mean())

table = {}
for name, clf in classifiers.items():
    table[name] = {"clean": accuracy(clf, x)}
    table[name].update({a: accuracy(clf, make(clf).generate(x, y=y)) for a, make in attacks.items()})
    print(f"{name:>11} accuracy: " + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in table[name].items()))""",
    ),
    ("code", """accuracy_bars(table, title=f"ART attacks, eps={EPS:.3f} (n={N})")"""),
    MASKED_GRADIENTS_NOTE,
]

NOTEBOOKS["02_foolbox.ipynb"] = [
    (
        "md",
        """# The WNLL + TVM defence in Foolbox, with EOT over TVM

`to_foolbox` wraps any `nn.Module` taking [0, 1] images as a Foolbox `PyTorchModel` (bounds (0, 1)). When the module
contains the randomised TVM purifier, it is wrapped in Foolbox's `ExpectationOverTransformationWrapper`, so gradient
attacks average over TVM's random masks (EOT, Athalye et al. 2018). Accuracy is always measured on one draw, as the
defence is deployed. `N` sets the size.""",
    ),
    ("code", "N = 16  # test images\nEPS = 8 / 255\nEOT_SAMPLES = 4"),
    (
        "code",
        """%matplotlib inline
import foolbox as fb
import torch
import wnll_art
from wnll_art.adapters.foolbox_model import foolbox_accuracy
from wnll_art.plots import accuracy_bars

_ = torch.manual_seed(0)  # Foolbox's PGD starts from a random point drawn from torch's global generator""",
    ),
    (
        "code",
        """wnll = wnll_art.WNLLNet.from_pretrained("resnet56", template_size=500)
x, y = wnll_art.load_cifar10(split="test")
x, y = x[:N].float() / 255, y[:N]
models = {
    "softmax": wnll.backbone,
    "WNLL": wnll,
    "WNLL + TVM": wnll_art.Defence(wnll, tvm=wnll_art.TVMSettings(eot_samples=EOT_SAMPLES), seed=0).eval(),
}
attacks = {
    "FGSM": (fb.attacks.FGSM(), EPS),
    "LinfPGD": (fb.attacks.LinfPGD(steps=10, rel_stepsize=0.1), EPS),
    "L2 CW (L2 <= 0.5)": (fb.attacks.L2CarliniWagnerAttack(binary_search_steps=1, steps=20, initial_const=10.0), 0.5),
}""",
    ),
    (
        "code",
        """table = {}
for name, model in models.items():
    fmodel = wnll_art.to_foolbox(model)  # the defence averages EOT_SAMPLES TVM draws per gradient itself
    table[name] = {"clean": foolbox_accuracy(fmodel, x, y)}
    for attack_name, (attack, eps) in attacks.items():
        _, adversarial, _ = attack(fmodel, x, y, epsilons=eps)
        table[name][attack_name] = foolbox_accuracy(fmodel, adversarial, y)
    print(f"{name:>11} accuracy: " + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in table[name].items()))""",
    ),
    ("code", """accuracy_bars(table, title=f"Foolbox attacks (EOT {EOT_SAMPLES} through TVM), n={N}")"""),
    MASKED_GRADIENTS_NOTE,
]


NOTEBOOKS["03_paper_figures.ipynb"] = [
    (
        "md",
        """# The paper's figures, from the package and the evaluation harness's JSON records

Fig. 2 (original / adversarial / TVM images), Fig. 4 (feature geometry), Fig. 5 (accuracy vs eps) and the
**paper protocol vs the adaptive protocol**. `N` sets the size (tiny by default; `--n 500` runs of the scripts in
`evaluations/` give the numbers worth quoting).""",
    ),
    ("code", "N = 8  # test images per experiment\nEPS = 0.04"),
    (
        "code",
        """%matplotlib inline
from IPython.display import Image, display
import wnll_art
from wnll_art.data import CIFAR10_CLASSES
from wnll_art.adapters.attacks import ArtBIM
from wnll_art.evaluation.config import EvalConfig
from wnll_art.evaluation.jobs.main import evaluate
from wnll_art.evaluation.jobs.defence_table import Convergence, defence_table
from wnll_art.evaluation.protocols import PlanOptions
from wnll_art.evaluation.records import read_records
from wnll_art.plots import accuracy_vs_eps, image_grid, protocol_comparison
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings""",
    ),
    (
        "md",
        "## Fig. 2: an image, its IFGSM adversarial (exact gradient through WNLL) and TVM of the adversarial",
    ),
    (
        "code",
        """wnll = wnll_art.WNLLNet.from_pretrained("resnet56", template_size=500)
x, y = wnll_art.load_cifar10(split="test")
x, y = x[:N].float() / 255, y[:N]
x_adv = ArtBIM(steps=10, step_fraction=0.25)(wnll, x, y, eps=EPS, seed=0)
x_tvm = TVMPurifier(wnll_art.TVMSettings(), seed=0)(x_adv)
rows = {"original": x, f"IFGSM eps={EPS}": x_adv, "TVM(IFGSM)": x_tvm}
for name, images in rows.items():
    print(f"{name:>16}: WNLL accuracy {100 * float((wnll(images).argmax(1) == y).float().mean()):.1f}%")
image_grid(rows, labels=[CIFAR10_CLASSES[int(c)] for c in y], title="Fig. 2: original, adversarial, TVM")""",
    ),
    ("md", "## Fig. 4: the first two principal components of the 64-D features"),
    (
        "code",
        """import sys
from pathlib import Path
sys.path.insert(0, str(Path(wnll_art.__file__).resolve().parents[1]))  # the repository's evaluations/ scripts
from evaluations.feature_geometry import feature_geometry

summary = feature_geometry(EvalConfig(n=N, eps=(EPS,), defences=("none", "tvm")), out_dir="fig4")
display(Image("fig4/feature_geometry.png"))""",
    ),
    ("md", "## Fig. 5: accuracy vs eps, read back from the harness's JSON records"),
    (
        "code",
        """evaluate(EvalConfig(n=N, eps=(0.02, 0.04, 0.08), defences=("none",)), out_dir="fig5", attacks=("fgsm", "bim"))
records = read_records("fig5")
print(f"{len(records)} records; e.g. {records[0].key}: accuracy {100 * records[0].accuracy:.1f}%")
accuracy_vs_eps(records, attack="bim")""",
    ),
    (
        "md",
        """## Paper protocol vs adaptive protocol

The **paper protocol** attacks as the paper states: WNLL through the straight-through *surrogate* gradient (the
linear head), TVM applied after the attack (the attacker never sees it), IFGSM with 10 steps of size eps. The
**adaptive protocol** attacks the deployed defence: exact gradients through the WNLL solve, BPDA through TVM with
expectation over its random masks (EOT), the surrogate gradient with EOT, and adversarials transferred from the
softmax model; each image counts as robust only if it survives *all* of them. An honest robustness number is the
adaptive one; the gap between the two bars is what a weak evaluation would have overstated.""",
    ),
    (
        "code",
        """defence_table(EvalConfig(n=N, eps=(EPS,), tvm=TVMSettings(eot_samples=2)), out_dir="table2",
              options=PlanOptions(eot_samples=2, steps=5, cw_steps=5), adaptive_attacks=["fgsm_exact_eot", "ifgsm_exact_eot", "ifgsm_surrogate_eot", "transfer_ifgsm"],
              convergence=Convergence(steps=(2, 4), eot=(1, 2), images=4))  # a demo ladder: full runs use 10..100
table = read_records("table2/original")
for r in sorted(table, key=lambda r: r.key):
    if r.attack in ("fgsm", "ifgsm", "cw_l2"):
        print(f"{r.protocol:>8} {r.model:>7} {r.defence:>4} {r.attack:>6}: accuracy {100 * r.accuracy:5.1f}%")
protocol_comparison(table, eps=EPS, attacks=["fgsm", "ifgsm", "cw_l2"])""",
    ),
]

NOTEBOOKS["04_compare_defences.ipynb"] = [
    (
        "md",
        """# WNLL + TVM beside ART's defences and adversarial training, from the committed records

The comparison of defences under the **adaptive protocol** (PGD, APGD-CE and APGD-DLR on the smooth and the
straight-through WNLL views with BPDA through every non-differentiable preprocessor and EOT over every randomised one,
PGD transferred from the softmax model, Square): no defence, our TVM, ART's `TotalVarMin` (ART's and Guo's settings),
`JpegCompression`, `SpatialSmoothing`, `FeatureSqueezing`, Gaussian noise at test time, each in front of the public
softmax ResNet-56 and our strongest WNLL model, and FGSM-RS adversarial training alone, with a WNLL head and with WNLL
+ TVM, on the first 500 test images. No attack runs here: the records are read back from
`evaluations/results/compare_defences_n500_records.tgz` (made by `python evaluations/compare_defences.py report`,
beside `compare_defences_n500.md`; rows and eps not yet run are listed as such, and
`compare_defences_records.tgz` holds the complete 100-image run at all three eps). Each number is a per-image worst
case over clean and every attack; a randomised victim's image counts only if all K draws classify it correctly.""",
    ),
    (
        "code",
        """%matplotlib inline
import sys
import tempfile
from pathlib import Path

import wnll_art
sys.path.insert(0, str(Path(wnll_art.__file__).resolve().parents[1]))  # the repository's evaluations/ modules
from evaluations.compare_defences_records import extract_archive
from evaluations.compare_defences_report import ARCHIVE_N500, chart, headline
from wnll_art.evaluation.comparison import build_rows, load_folder, selected_for_checks""",
    ),
    (
        "code",
        """folders = [load_folder(p) for p in extract_archive(ARCHIVE_N500, tempfile.mkdtemp(prefix="compare-defences-"))]
rows = build_rows([f for f in folders if f is not None])
print(f"{len(folders)} runs ({', '.join(sorted({f.protocol for f in folders}))} protocol), {len(rows)} victims x eps")
print(headline(rows))""",
    ),
    (
        "code",
        """for r in sorted(rows, key=lambda r: (r.eps, -(r.robust or 0.0))):
    if r.robust is None:
        print(f"eps={r.eps:g} {r.victim:>42}: not run yet")
        continue
    paper = "-" if r.paper is None else f"{100 * r.paper:.1f}%"
    note = f", still missing: {', '.join(r.missing)}" if r.missing else ""
    print(f"eps={r.eps:g} {r.victim:>42}: clean {100 * (r.clean or 0):5.1f}%, adaptive robust accuracy "
          f"{100 * r.robust:5.1f}% ({r.strongest}{note}); paper protocol {paper}")""",
    ),
    ("md", "Clean accuracy (light) and adaptive robust accuracy (solid) per victim, grouped by defence:"),
    ("code", "chart(rows)"),
    (
        "md",
        """A defence that beats no defence (its own model undefended, or the undefended softmax ResNet-56: so the WNLL head
and adversarial training count) by more than 5 points at 8/255 must show that the gain is not
masked gradients: a transfer attack and a gradient-free one (Square) must not do better, and the strongest gradient
attack must have converged (steps and EOT ladders, Carlini et al. 2019).""",
    ),
    (
        "code",
        """chosen = selected_for_checks(rows)
for r, gain in chosen:
    checks = {a: f"{100 * r.attacks[a]:.1f}%" if a in r.attacks else "not recorded" for a in ("transfer_pgd", "square")}
    conv = "convergence check not run" if r.convergence is None else "; ".join(r.convergence.flags) or "converged"
    reruns = "".join(f", re-run {a}: {100 * acc:.1f}%" for a, acc in r.reruns.items())  # the ladder's top, all images
    print(f"{r.victim}: {100 * gain:+.1f} points, adaptive accuracy {100 * (r.robust or 0):.1f}%, {checks}, {conv}{reruns}")
if not chosen:
    print("no defence beats no defence by more than 5 points at 8/255")""",
    ),
]


def _environment(tmp: Path) -> dict[str, str]:
    """``WNLL_ART_DATA``, ``TORCH_HOME`` and the inline matplotlib backend, as the notebook tests set them."""
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    data = os.environ.get("WNLL_ART_DATA")
    if not data or not (Path(data) / "cifar-10-batches-py" / "test_batch").is_file():
        data = str(SHARED / "data")
    env["WNLL_ART_DATA"] = str(Path(data).expanduser().absolute())
    home = os.environ.get("TORCH_HOME")
    if not home or not (Path(home) / "hub" / "checkpoints" / CHECKPOINT_NAME).is_file():
        home = str(tmp / "torch_home")
        (tmp / "torch_home" / "hub" / "checkpoints").mkdir(parents=True)
        (tmp / "torch_home" / "hub" / "checkpoints" / CHECKPOINT_NAME).symlink_to(
            SHARED / "weights" / CHECKPOINT_NAME
        )
    env["TORCH_HOME"] = str(Path(home).expanduser().absolute())
    return env


def clean_outputs(nb: nbformat.NotebookNode) -> None:
    """Drops what changes from run to run without the results changing: stderr streams (warnings with
    temporary paths, progress bars), execution timing metadata and the kernel's ``language_info``."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    nb.metadata.pop("language_info", None)


def execute(nb: nbformat.NotebookNode, *, timeout: int = 1800) -> None:
    """Runs ``nb`` top to bottom in place (``python3`` kernel, a temporary working directory), then cleans it."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="wnll-art-nb-") as tmp:
        saved = {k: os.environ.get(k) for k in ("WNLL_ART_DATA", "TORCH_HOME", "MPLBACKEND")}
        os.environ.update(_environment(Path(tmp)))  # the kernel inherits this process's environment
        try:
            NotebookClient(
                nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}
            ).execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    clean_outputs(nb)


def build(names: list[str] | None = None, *, run: bool = True) -> None:
    """Writes the notebooks ``names`` (all when empty) and, when ``run``, executes them in place."""
    unknown = sorted(set(names or ()) - set(NOTEBOOKS))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; expected some of {sorted(NOTEBOOKS)}")
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(
            cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
        )
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:02d}"  # stable ids: rebuilding an unchanged notebook changes nothing
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        if run:
            print("executing", HERE / name, flush=True)
            execute(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the sources only, without outputs")
    args = parser.parse_args()
    build(args.names, run=not args.no_execute)
