"""Determinism switch and device facts (CPU here; CUDA facts when WNLL_ART_TEST_DEVICE=cuda has one)."""

from __future__ import annotations

import os

import pytest
import torch

from wnll_art._device import device_facts, rank_device, set_deterministic


def test_deterministic_switch_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert device_facts("cpu")["deterministic"] is True
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.allow_tf32


def test_device_facts_cpu_and_cuda() -> None:
    facts = device_facts("cpu")
    assert facts["device"] == "cpu" and facts["torch"] == torch.__version__ and "gpu" not in facts
    if torch.cuda.is_available():
        cuda = device_facts("cuda")
        assert cuda["gpu"] and cuda["cuda"] and "tf32_matmul" in cuda


@pytest.mark.parametrize(
    ("device", "local_rank", "count", "expected"),
    [("cuda", 0, 2, "cuda:0"), ("cuda", 1, 2, "cuda:1"), ("cuda", 1, 1, "cuda:0"), ("cuda", 3, 2, "cuda:1"),
     ("cuda:1", 0, 2, "cuda:1"), ("cpu", 1, 2, "cpu"), ("cuda", None, 2, "cuda")],
)  # fmt: skip
def test_rank_device(
    monkeypatch: pytest.MonkeyPatch, device: str, local_rank: int | None, count: int, expected: str
) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert rank_device(device, local_rank=local_rank, device_count=count) == expected
    if local_rank is not None:  # the same through torchrun's environment
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        assert rank_device(device) == expected


def test_rank_device_without_gpus() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        rank_device("cuda", local_rank=0, device_count=0)


def test_dist_from_env_torchrun_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun each rank takes cuda:{LOCAL_RANK % count}, makes it current, and joins over gloo."""
    import torch.distributed as tdist

    from wnll_art.evaluation.engine import Dist

    calls: dict[str, object] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # two processes sharing one GPU
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group", lambda backend: calls.setdefault("backend", backend))
    monkeypatch.setattr(tdist, "get_rank", lambda: 1)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    dist = Dist.from_env("cuda")
    assert (dist.rank, dist.world, dist.device) == (1, 2, "cuda:0")
    assert calls == {"set_device": torch.device("cuda:0"), "backend": "gloo"}
    calls.clear()
    assert Dist.from_env("cpu").device == "cpu" and calls == {"backend": "gloo"}


def test_run_settings_record_rank_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from wnll_art.evaluation import setup
    from wnll_art.evaluation.config import EvalConfig
    from wnll_art.evaluation.engine import Dist

    cfg = EvalConfig(n=4)
    assert "rank_devices" not in setup.run_settings(cfg, Dist(), protocol="t")["device_facts"]
    facts = [(device_facts("cpu"), "cuda:0"), (device_facts("cpu"), "cuda:1")]
    monkeypatch.setattr(Dist, "gather", lambda self, obj: facts)
    out = setup.run_settings(cfg, Dist(0, 2, "cuda:0"), protocol="t")["device_facts"]
    assert out["rank_devices"] == ["cuda:0", "cuda:1"] and out["device"] == "cpu"
