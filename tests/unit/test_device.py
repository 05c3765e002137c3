"""Determinism switch and device facts (CPU here; CUDA facts when WNLL_ART_TEST_DEVICE=cuda has one)."""

from __future__ import annotations

import os

import pytest
import torch

from wnll_art._device import device_facts, set_deterministic


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
