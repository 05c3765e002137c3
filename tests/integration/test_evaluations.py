"""The scripts in ``evaluations/`` on tiny real slices: records, tables, figures (integration tier).

The defence table runs both protocols on 8 images (2 WNLL batches of 4, template 100) and recomputes each
adaptive number independently from the component records on disk (clean, the family's paper attack and every
adaptive attack run on that victim). The other scripts are smoke-run on 4 to 20 images.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from wnll_art.evaluation import engine
from wnll_art.evaluation.records import SCHEMA, CellRecord

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TVM = True  # wnll_art.tvm needs nothing beyond torch
DEFENCES = "none,tvm"
FAMILIES = ("fgsm", "ifgsm", "cw_l2")
ADAPTIVE = "pgd_smooth_eot,pgd_surrogate_eot,transfer_pgd,square"


def _script(name: str):  # type: ignore[no-untyped-def]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"evaluations.{name}")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # on a shared, loaded 2-core machine two OpenMP threads per process spin against each other (10x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def common(cifar_root: Path, hub_dir: Path) -> list[str]:
    weights = hub_dir / "hub" / "checkpoints" / "resnet56-4bfd9763.th"
    return [
        "--data-root",
        str(cifar_root),
        "--weights",
        str(weights),
        "--template-size",
        "100",
        "--eot-samples",
        "2",
    ]


def _table_args(out: Path, common: list[str]) -> list[str]:
    return ["--n", "8", "--wnll-batch-size", "4", "--eps", "0.02,0.08", "--defences", DEFENCES, "--steps", "3",
            "--cw-steps", "3", "--adaptive-attacks", ADAPTIVE, "--square-queries", "3",
            "--convergence-steps", "1,2", "--convergence-eot", "1,2", "--convergence-images", "4", "--tvm-draws", "2",
            "--out", str(out), *common]  # fmt: skip


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory: pytest.TempPathFactory, common: list[str]) -> Path:
    out = tmp_path_factory.mktemp("defence_table")
    assert _script("defence_table").main(_table_args(out, common)) == 0
    return out


def _records(root: Path) -> dict[str, CellRecord]:
    return {
        p.stem: CellRecord.from_dict(json.loads(p.read_text()))
        for p in sorted((root / "cells").glob("*.json"))
    }


def test_defence_table_records_schema(table_dir: Path) -> None:
    recs = _records(table_dir / "original")
    victims = [(m, d) for m in ("softmax", "wnll") for d in DEFENCES.split(",")]
    paper = [r for r in recs.values() if r.protocol == "paper"]
    assert len(paper) == len(victims) * (1 + len(FAMILIES) * 2)
    minima = [r for r in recs.values() if r.protocol == "adaptive" and r.attack in FAMILIES]
    assert len(minima) == len(victims) * len(FAMILIES) * 2
    for key, r in recs.items():
        assert key == r.key and r.schema == SCHEMA and r.n == 8 and r.image_indices == list(range(8))
        assert set(r.per_image_correct) <= {0, 1} and r.accuracy == sum(r.per_image_correct) / 8
        assert r.protocol in ("paper", "adaptive") and (r.eps == 0.0) == (r.attack == "clean")
        assert r.settings["run"]["wnll_batch_size"] == 4 and r.settings["run"]["template_size"] == 100
        if r.attack not in FAMILIES or r.protocol == "paper":
            assert r.settings["training_data"] == "original" and r.settings["victim"]["model"] == r.model
    # the surrogate gradient is the exact one on softmax: not run there
    assert not any(r.model == "softmax" and r.attack == "ifgsm_surrogate_eot" for r in recs.values())
    run = json.loads((table_dir / "original" / "run.json").read_text())
    assert run["protocol"] == "defence_table" and run["weights"] == "zoo:resnet56"
    assert list((table_dir / "original").glob("accuracy_vs_eps__*.png"))


def test_adaptive_is_the_per_image_minimum_of_the_records_on_disk(table_dir: Path) -> None:
    recs = _records(table_dir / "original")
    index = {(r.protocol, r.model, r.defence, r.attack, r.eps): r for r in recs.values()}
    adaptive_attacks = set(ADAPTIVE.split(","))
    changed = False
    for (protocol, model, defence, attack, eps), p in index.items():
        if protocol != "paper" or attack not in FAMILIES:
            continue
        a = index["adaptive", model, defence, attack, eps]
        # the components are found on disk, not read from the record under test
        parts = [index["paper", model, defence, "clean", 0.0], p]
        parts += [r for (pr, m, d, at, e), r in index.items()
                  if (pr, m, d, e) == ("adaptive", model, defence, eps) and at in adaptive_attacks]  # fmt: skip
        expected_attacks = adaptive_attacks - ({"pgd_surrogate_eot"} if model == "softmax" else set())
        if (model, defence) == ("softmax", "none"):
            expected_attacks -= {"transfer_pgd"}  # transfer from itself is white box: not run
        assert {r.attack for r in parts[2:]} == expected_attacks, (model, defence, eps)
        expected = [int(all(v)) for v in zip(*(r.per_image_correct for r in parts), strict=True)]
        assert a.per_image_correct == expected, (model, defence, attack, eps)
        for i in range(8):  # an image any component fooled (or clean got wrong) counts as fooled
            if any(r.per_image_correct[i] == 0 for r in parts):
                assert a.per_image_correct[i] == 0
        assert sorted(a.settings["components"]) == sorted(f"{r.protocol}:{r.attack}" for r in parts)
        changed |= p.accuracy < index["paper", model, defence, "clean", 0.0].accuracy
        # the headline "all": at most each component per image, recomputed from every paper + adaptive record
        everything = [index["paper", model, defence, "clean", 0.0]] + [
            r for (pr, m, d, at, e), r in index.items()
            if (m, d, e) == (model, defence, eps) and (pr == "paper" or at in adaptive_attacks)
        ]  # fmt: skip
        worst = index["adaptive", model, defence, "all", eps]
        assert worst.per_image_correct == [
            int(all(v)) for v in zip(*(r.per_image_correct for r in everything), strict=True)
        ]
        assert all(
            w <= c
            for r in everything
            for w, c in zip(worst.per_image_correct, r.per_image_correct, strict=True)
        )
        conv = worst.extra["convergence"]
        assert conv["steps"].keys() == {"1", "2"}  # recorded with every adaptive number
        # a 1 -> 2 step ladder is under-run: flagged exactly when the last doubling still gained > 1 point
        flagged = any(f.startswith("not_converged") and " steps at eps" in f for f in worst.flags)
        assert flagged == (conv["steps"]["1"] - conv["steps"]["2"] > 0.01), (conv, worst.flags)
    assert changed, "no attack changed any prediction: the evaluation did nothing"
    clean = index["paper", "softmax", "none", "clean", 0.0]
    assert clean.accuracy >= 0.75  # the pretrained ResNet-56 (93% on CIFAR-10)
    assert index["adaptive", "softmax", "none", "ifgsm", 0.08].accuracy < clean.accuracy


def test_defence_table_markdown_and_resume(
    table_dir: Path, common: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (table_dir / "defence_table.md").read_text()
    assert (
        text.splitlines()[2].startswith("**Robust accuracy (%)**") and "| victim | clean |" in text
    )  # headline first
    assert "## Convergence checks" in text
    assert "paper / adaptive" in text and "| original | wnll | none | ifgsm |" in text
    assert "- original: the public ResNet-56 (softmax) with a post-hoc WNLL head" in text and "## Flags" in text
    calls: list[str] = []
    original = engine._cell

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("run")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_cell", counting)
    before = {k: r.per_image_correct for k, r in _records(table_dir / "original").items()}
    assert _script("defence_table").main(_table_args(table_dir, common)) == 0
    assert calls == []  # everything read back
    assert {k: r.per_image_correct for k, r in _records(table_dir / "original").items()} == before


def test_defence_table_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = _script("defence_table").main
    assert main(["--adaptive-attacks", "nope", "--n", "4", "--out", str(tmp_path / "x")]) == 2
    assert "adaptive attacks: unknown ['nope']" in capsys.readouterr().err
    assert main(["--defences", "none,nope", "--n", "4", "--out", str(tmp_path / "y")]) == 2
    assert "unknown defences ['nope']" in capsys.readouterr().err


def test_transfer_table(tmp_path: Path, common: list[str]) -> None:
    out = tmp_path / "transfer"
    args = [
        "--n",
        "8",
        "--wnll-batch-size",
        "4",
        "--eps",
        "0.08",
        "--attacks",
        "fgsm,ifgsm",
        "--out",
        str(out),
    ]
    assert _script("transfer_table").main([*args, *common]) == 0
    recs = _records(out)
    assert len(recs) == 2 + 2 * 2 * 2  # clean per target + (source x attack) per target
    for r in recs.values():
        assert r.protocol == "transfer" and 0.0 <= r.accuracy <= 1.0 and len(r.per_image_correct) == 8
    white_box = recs["transfer__softmax__none__ifgsm_from_softmax__eps0.0800"]  # source = target
    assert white_box.settings["spec"]["source"] == "softmax"
    assert white_box.accuracy < recs["transfer__softmax__none__clean__eps0.0000"].accuracy
    transferred = recs["transfer__softmax__none__ifgsm_from_wnll__eps0.0800"]
    assert transferred.settings["spec"]["source"] == "wnll" and transferred.settings["spec"]["gradient"] == "surrogate"
    assert transferred.extra["tvm_draws"] == 1  # a deterministic victim is asked once (the K-draw rule is for TVM)
    text = (out / "transfer_table.md").read_text()
    assert "| ifgsm | wnll | 0.08 |" in text and "| clean | - | 0 |" in text


def test_transfer_table_on_the_shipped_training_rows(tmp_path: Path, common: list[str]) -> None:
    from wnll_art.zoo_trained import trained_models, training_rows

    rows, shipped = training_rows(), trained_models()
    if len(rows) < 2:
        pytest.skip("no trained models shipped in this checkout")
    out = tmp_path / "transfer_trained"
    args = ["--trained", "--n", "2", "--wnll-batch-size", "2", "--eps", "0.08", "--attacks", "fgsm", "--out", str(out)]
    assert _script("transfer_table").main([*args, *common]) == 0
    text = (out / "transfer_table.md").read_text()
    for data, row in rows.items():  # one run per row, on that row's models, and one section per row
        recs = _records(out / data)
        assert len(recs) == 2 + 2 * 2 and all(r.settings["zoo"] == row for r in recs.values())
        run = json.loads((out / data / "run.json").read_text())  # the shipped files, as the defence table records them
        assert run["zoo_sha256"] == {n: shipped[n].sha256 for n in row.values() if n in shipped} != {}
        wnll = recs["transfer__wnll__none__clean__eps0.0000"].settings["victim"]
        assert wnll["model"] == "wnll" and wnll["wnll"]["template_size"] == 500  # the shipped template, not 100
        assert f"trained on {data} (softmax `{row['softmax']}`, WNLL `{row['wnll']}`)" in text


@pytest.mark.skipif(not TVM, reason="wnll_art.tvm (TVMPurifier, EOT) is not importable")
def test_compare_defences(tmp_path: Path, common: list[str]) -> None:
    out = tmp_path / "compare"
    args = ["--n", "4", "--wnll-batch-size", "4", "--eps", "0.08", "--steps", "2", "--attacks",
            "fgsm_exact_eot,transfer_ifgsm", "--defence-options", '{"art_tvm": {"max_iter": 3}, "art_tvm_guo": {"max_iter": 3}}', "--out", str(out)]  # fmt: skip
    assert _script("compare_defences").main([*args, *common]) == 0
    recs = _records(out)
    from wnll_art.evaluation.victims import PURIFIERS

    defences = set(PURIFIERS)  # every registered defence (the script's default)
    assert {"none", "tvm", "art_tvm", "jpeg", "spatial_smoothing", "feature_squeezing", "gaussian_noise"} <= defences
    assert {(r.model, r.defence) for r in recs.values()} == {
        (m, d) for m in ("softmax", "wnll") for d in defences
    }
    for r in recs.values():
        assert 0.0 <= r.accuracy <= 1.0 and r.n == 4
        if r.attack == "worst_case":
            keys = [f"adaptive__{r.model}__{r.defence}__clean__eps0.0000"] + [
                f"adaptive__{r.model}__{r.defence}__{a}__eps0.0800"
                for a in ("fgsm_exact_eot", "transfer_ifgsm")
            ]
            parts = [recs[k] for k in keys if k in recs]  # no transfer from softmax onto itself
            assert len(parts) == 2 + ((r.model, r.defence) != ("softmax", "none"))
            assert r.per_image_correct == [
                int(all(v)) for v in zip(*(p.per_image_correct for p in parts), strict=True)
            ]
    jpeg = recs["adaptive__wnll__jpeg__clean__eps0.0000"].settings["victim"]["purifier"]
    assert jpeg["art_class"] == "JpegCompression" and "BPDA" in jpeg["gradient"] and jpeg["params"]["quality"] == 75
    art_tvm = recs["adaptive__wnll__art_tvm__clean__eps0.0000"].settings["victim"]["purifier"]
    assert art_tvm["params"]["max_iter"] == 3  # --defence-options reached the ART class
    text = (out / "results.md").read_text()
    assert "| adaptive | wnll | art_tvm | transfer_ifgsm |" in text and "**Robust accuracy (%)**" in text


def test_compare_defences_report_and_convergence(tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The comparison's path end to end on 4 images: a run (the adaptive default plan, two of its attacks), its
    convergence ladders into ``FOLDER/convergence/``, the document, its chart and the records archive."""
    out = tmp_path / "evaluations" / "results" / "cmp"
    script = _script("compare_defences")
    run = ["--n", "4", "--wnll-batch-size", "4", "--eps", "0.0313725", "--steps", "2", "--square-queries", "2",
           "--models", "softmax", "--defences", "none,jpeg", "--attacks", "pgd_smooth_eot,square", "--out", str(out)]  # fmt: skip
    assert script.main(["run", *run, *common]) == 0
    paths = common[common.index("--data-root"):common.index("--data-root") + 4]  # --data-root ... --weights ...
    assert script.main(["convergence", "--records", str(out), "--victims", "softmax+jpeg", "--convergence-steps", "1,2",
                        "--convergence-eot", "1", "--convergence-images", "2", *paths]) == 0  # fmt: skip
    ladder = sorted(p.name for p in (out / "convergence" / "cells").glob("*.json"))
    assert [n.split("__")[3:5] for n in ladder] == [["pgd_smooth_eot", "steps1"], ["pgd_smooth_eot", "steps2"],
                                                    ["pgd_smooth_eot", "unbounded"]]  # fmt: skip
    # the full-budget re-run: the ladder's attack at 3 steps on all 4 images (a victim without ladders is refused)
    assert script.main(["budget", "--records", str(out), "--victims", "softmax+none", *paths]) == 2
    assert "run `convergence` first" in capsys.readouterr().err
    assert script.main(["budget", "--records", str(out), "--victims", "softmax+jpeg", "--steps", "3", *paths]) == 0
    (budget,) = (out / "budget" / "cells").glob("*.json")
    record = json.loads(budget.read_text())
    assert (record["attack"], record["protocol"], record["n"]) == ("pgd_smooth_eot__steps3", "budget", 4)
    assert record["settings"]["spec"]["attack"]["steps"] == 3
    assert "softmax+jpeg: pgd_smooth_eot__steps3 at eps=0.0313725 on 4 images" in capsys.readouterr().out
    archive = tmp_path / "records.tgz"
    assert script.main(["report", "--records", str(out), str(tmp_path / "absent"), "--out-dir", str(tmp_path),
                        "--archive", str(archive)]) == 0  # fmt: skip
    text = (tmp_path / "compare_defences_n4.md").read_text()
    assert text in capsys.readouterr().out and (tmp_path / "compare_defences_n4.png").is_file()  # printed whole
    assert "--models softmax --defences none,jpeg --eps 0.0313725 --attacks pgd_smooth_eot,square --n 4" in text
    assert "absent (no run.json)" in text and "- art_tvm: not run (no record of it in any folder)" in text
    from evaluations.compare_defences_records import extract_archive

    (folder,) = extract_archive(archive, tmp_path / "unpacked")
    assert sorted(p.name for p in (folder / "convergence" / "cells").glob("*.json")) == ladder
    assert [p.name for p in (folder / "budget" / "cells").glob("*.json")] == [budget.name]
    from wnll_art.evaluation.comparison import build_rows, load_folder

    unpacked = load_folder(folder)
    assert unpacked is not None
    (jpeg,) = [r for r in build_rows([unpacked]) if r.defence == "jpeg"]
    assert jpeg.reruns == {"pgd_smooth_eot__steps3": record["accuracy"]}  # in the jpeg row's worst case


def test_art_preprocessor_gradient_is_arts_own(pretrained_resnet56: torch.nn.Module) -> None:
    """The nn.Module wrapper back-propagates exactly as ART's PyTorchClassifier(preprocessing_defences=...)."""
    from art.defences.preprocessor import JpegCompression

    from wnll_art.adapters.art_estimator import WNLLClassifier
    from wnll_art.adapters.art_preprocessors import art_defence

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    y = torch.eye(10)[[1, 2, 3]].numpy()  # ART takes one-hot labels here
    wrapped = WNLLClassifier(torch.nn.Sequential(art_defence("jpeg"), pretrained_resnet56), nb_classes=10)
    jpeg = JpegCompression(clip_values=(0.0, 1.0), channels_first=True, quality=75)
    art = WNLLClassifier(pretrained_resnet56, preprocessing_defences=[jpeg], nb_classes=10)
    assert torch.allclose(torch.from_numpy(wrapped.predict(x)), torch.from_numpy(art.predict(x)), atol=1e-5)
    g_ours = torch.as_tensor(wrapped.loss_gradient(x, y))
    g_art = torch.as_tensor(art.loss_gradient(x, y))
    assert torch.allclose(g_ours, g_art, atol=1e-6) and float(g_ours.abs().max()) > 0


def test_attacking_through_a_purifier_keeps_the_backbone_in_eval_mode(
    cifar_root: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a BPDA/EOT view is a fresh module in train mode; the attack restored that mode onto the
    shared backbone, so every later cell ran BatchNorm on batch statistics."""
    if not TVM:
        pytest.skip("wnll_art.tvm is not importable")
    from wnll_art.adapters.attacks import ArtFGSM
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.protocols import AttackSpec
    from wnll_art.evaluation.setup import load_batches, rows, victims_of

    monkeypatch.setenv("TORCH_HOME", str(hub_dir))
    cfg = EvalConfig(n=4, wnll_batch_size=4, template_size=100, defences=("tvm",), models=("softmax",))
    victims, _ = victims_of(rows(cfg)[0], cfg, data_root=cifar_root)
    x, y = load_batches(cfg, cifar_root, engine.Dist()).get(0)
    engine.adversarial(AttackSpec("fgsm", ArtFGSM(), eot_samples=2), victims[0], x, y, eps=0.08, seed=0, raw_cache={})
    assert not any(m.training for m in victims[0].module.classifier.modules())


def test_feature_geometry(tmp_path: Path, common: list[str]) -> None:
    out = tmp_path / "geometry"
    args = ["--n", "20", "--wnll-batch-size", "10", "--eps", "0.02", "--steps", "2", "--defences", DEFENCES,
            "--out", str(out)]  # fmt: skip
    assert _script("feature_geometry").main([*args, *common]) == 0
    assert (out / "feature_geometry.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "feature_geometry.json").read_text())
    conditions = ["clean", "ifgsm", "tvm_clean", "tvm_ifgsm"] if TVM else ["clean", "ifgsm"]
    assert summary["conditions"] == conditions and summary["same_features"] is True
    for model in ("softmax", "wnll"):
        ms = summary["models"][model]
        assert ms["feature_dim"] == 64 and len(ms["explained_variance_ratio"]) == 2
        assert all(0.0 <= v <= 1.0 for v in ms["explained_variance_ratio"])
        for c in conditions:
            s = ms["conditions"][c]
            assert 0.0 <= s["accuracy"] <= 1.0 and s["centroid_distance_mean"] > 0
            assert len(s["centroid_distances"]) == len(s["classes"])
        assert ms["conditions"]["clean"]["mean_shift_from_clean"] == 0.0
        assert ms["conditions"]["ifgsm"]["accuracy"] < ms["conditions"]["clean"]["accuracy"]
    assert len(list((out / "cells").glob("geometry__*.json"))) == 2 * len(conditions)
    assert "| wnll | ifgsm |" in (out / "feature_geometry.md").read_text()


def test_victim_and_row_options_are_checked_before_any_work(tmp_path: Path) -> None:
    import argparse

    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.jobs.defence_table import defence_table

    victim_list = _script("defence_table").victim_list
    assert victim_list("wnll+tvm, softmax+none,") == (("wnll", "tvm"), ("softmax", "none"))
    for bad in ("wnll", "+tvm", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            victim_list(bad)
    cfg = EvalConfig(n=2, eps=(0.02,), defences=("none",))
    with pytest.raises(ValueError, match="victims must be a non-empty subset"):
        defence_table(cfg, out_dir=tmp_path / "a", victims=[("wnll", "tvm")])  # tvm is not among the defences
    with pytest.raises(ValueError, match="trained rows must be a non-empty subset"):
        defence_table(cfg, out_dir=tmp_path / "b", trained=["nope"])
    for text in ("tvm", ""):  # an empty string too: it must not quietly mean "the public model"
        with pytest.raises(TypeError, match="string"):
            defence_table(cfg, out_dir=tmp_path / "c", trained=text)  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
