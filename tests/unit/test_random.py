"""Explicit randomness: derived seeds, the scoped global RNGs, ``drawing`` blocks and fixed TVM masks (fast)."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from test_wnll_model import TinyBackbone  # the tiny backbone of the WNLLNet tests (same folder)
from torch import nn

from wnll_art._random import as_generator, derive_seed, seed_generator, seeded_globals
from wnll_art.adapters.art_preprocessors import ArtPreprocessor
from wnll_art.attacks import Attack
from wnll_art.defence import Defence, load_defence
from wnll_art.evaluation import engine
from wnll_art.tvm.module import TVMPurifier
from wnll_art.tvm.settings import TVMSettings

SETTINGS = TVMSettings(prob=0.5, lamb=0.1, iterations=3, eot_samples=2)


def _x(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _clf() -> nn.Module:
    clf = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    clf.num_classes = 3  # type: ignore[assignment]
    return clf


def _global_states() -> tuple[Any, Any, torch.Tensor]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _assert_same_states(a: tuple[Any, Any, torch.Tensor], b: tuple[Any, Any, torch.Tensor]) -> None:
    assert a[0] == b[0]
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:]
    assert torch.equal(a[2], b[2])


def _global_draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


# --- seeds and generators ------------------------------------------------------------------------------------------


def test_derive_seed_is_the_crc32_of_the_joined_parts_and_the_engine_reexports_it() -> None:
    parts = (0, "wnll", "tvm", "fgsm", 3)
    assert derive_seed(*parts) == zlib.crc32(b"0/wnll/tvm/fgsm/3") & 0x7FFFFFFF
    assert engine.derive_seed is derive_seed
    assert derive_seed(0, "predict", 0, "clean", 0.0) == zlib.crc32(b"0/predict/0/clean/0.0") & 0x7FFFFFFF


def test_seed_generator_and_as_generator() -> None:
    assert torch.equal(
        torch.rand(5, generator=seed_generator(7)), torch.rand(5, generator=torch.Generator().manual_seed(7))
    )
    gen = torch.Generator()
    assert as_generator(gen) is gen
    assert torch.equal(torch.rand(2, generator=as_generator(3)), torch.rand(2, generator=seed_generator(3)))
    for bad in (1.0, True, "1", None):
        with pytest.raises(TypeError, match="seed"):
            as_generator(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_generator(1.5)  # type: ignore[arg-type]


# --- the global RNGs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 12345, 2**31 - 1, 2**33 + 5])
def test_seeded_globals_draws_as_the_old_seeding_and_restores_every_state(seed: int) -> None:
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    before = _global_states()
    with seeded_globals(seed):
        inside = _global_draws()
    _assert_same_states(before, _global_states())
    random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)  # the old _seed_globals
    old = _global_draws()
    assert inside[:2] == old[:2] and torch.equal(inside[2], old[2])


def test_seeded_globals_restores_the_states_when_the_block_raises() -> None:
    before = _global_states()
    with pytest.raises(RuntimeError, match="boom"), seeded_globals(3):
        _global_draws()
        raise RuntimeError("boom")
    _assert_same_states(before, _global_states())
    with pytest.raises(TypeError, match="seed"), seeded_globals(1.0):  # type: ignore[arg-type]
        pass


@dataclass(frozen=True)
class _GlobalNoise(Attack):
    """Adds noise drawn from NumPy's and torch's global generators (as ART's / Foolbox's random starts)."""

    name: ClassVar[str] = "noise"
    library: ClassVar[str] = "test"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        noise = torch.from_numpy(np.random.uniform(-eps, eps, x.shape).astype(np.float32))
        return x + noise + 0.0 * torch.rand(x.shape)


def test_attack_seeds_the_globals_for_its_run_only() -> None:
    model = _clf().train()
    x, y = _x(), torch.arange(4) % 3
    before = _global_states()
    a = _GlobalNoise()(model, x, y, eps=0.1, seed=5)
    _assert_same_states(before, _global_states())
    assert model.training  # the mode it found
    torch.testing.assert_close(_GlobalNoise()(model, x, y, eps=0.1, seed=5), a, rtol=0, atol=0)
    assert not torch.equal(_GlobalNoise()(model, x, y, eps=0.1, seed=6), a)


# --- drawing blocks ---------------------------------------------------------------------------------------------------


def _purify(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = module(x)
    return out


def test_drawing_equals_a_fresh_purifier_and_gives_the_generator_back() -> None:
    tvm = TVMPurifier(SETTINGS, seed=0)
    generator, state = tvm.generator, tvm.generator.get_state()
    with tvm.drawing(11):
        first, second = _purify(tvm, _x()), _purify(tvm, _x())
    assert tvm.generator is generator and torch.equal(generator.get_state(), state) and tvm.seed == 0
    fresh = TVMPurifier(SETTINGS, seed=11)  # what reseed(11) did: a generator seeded with 11, then the calls
    torch.testing.assert_close(first, _purify(fresh, _x()), rtol=0, atol=0)
    torch.testing.assert_close(second, _purify(fresh, _x()), rtol=0, atol=0)
    assert not torch.equal(first, second)  # successive calls draw new masks
    with tvm.drawing(11):
        torch.testing.assert_close(_purify(tvm, _x()), first, rtol=0, atol=0)
    gen = seed_generator(11)
    with tvm.drawing(gen):  # a generator is drawn from (and advanced) in place
        torch.testing.assert_close(_purify(tvm, _x()), first, rtol=0, atol=0)
    assert not torch.equal(gen.get_state(), seed_generator(11).get_state())
    with pytest.raises(TypeError, match="seed_or_generator"), tvm.drawing(1.5):  # type: ignore[arg-type]
        pass
    assert tvm.generator is generator


@pytest.mark.parametrize("tvm_view", ["bpda", "unrolled"])  # the same purifier object / a with_gradient copy
def test_a_views_drawing_does_not_disturb_its_victim(tvm_view: str) -> None:
    victim = Defence(_clf(), tvm=SETTINGS, seed=3).eval()
    view = victim.view(tvm=tvm_view)  # type: ignore[arg-type]
    purifier = victim.purifier
    assert isinstance(purifier, TVMPurifier) and isinstance(view.purifier, TVMPurifier)
    assert (view.purifier is purifier) == (tvm_view == "bpda")
    generator, state = purifier.generator, purifier.generator.get_state()
    with view.drawing(8):
        from_view = _purify(view.purifier, _x())
    assert purifier.generator is generator and torch.equal(generator.get_state(), state)
    with victim.drawing(8):  # the same seed: the same masks on the victim
        torch.testing.assert_close(_purify(purifier, _x()), from_view, rtol=0, atol=0)
    with victim.drawing(8):
        with view.drawing(9):
            _purify(view.purifier, _x())
        torch.testing.assert_close(_purify(purifier, _x()), from_view, rtol=0, atol=0)


def test_defence_drawing_without_a_drawing_purifier_is_a_no_op() -> None:
    plain = Defence(TinyBackbone()).eval()
    with plain.drawing(1):
        pass
    with pytest.raises(TypeError, match="seed_or_generator"), plain.drawing("1"):  # type: ignore[arg-type]
        pass


def test_art_preprocessor_draws_a_seed_per_call_from_its_generator() -> None:
    class Noisy:
        """An ART-like numpy preprocessor drawing from NumPy's global generator (as TotalVarMin)."""

        def __call__(self, x: np.ndarray) -> tuple[np.ndarray, None]:
            return x + np.random.rand(*x.shape).astype(np.float32), None

    pre = ArtPreprocessor("noisy", Noisy(), randomised=True, seed=4)
    x = _x(2)
    before = _global_states()
    with pre.drawing(7):
        a, b = _purify(pre, x), _purify(pre, x)
    _assert_same_states(before, _global_states())
    assert not torch.equal(a, b)
    with pre.drawing(7):
        torch.testing.assert_close(_purify(pre, x), a, rtol=0, atol=0)
    fresh = ArtPreprocessor("noisy", Noisy(), randomised=True, seed=7)
    torch.testing.assert_close(_purify(fresh, x), a, rtol=0, atol=0)
    assert pre.settings()["seed"] == 4 and not hasattr(pre, "reseed")


# --- fixed masks -----------------------------------------------------------------------------------------------------


def test_fixed_masks_give_one_output_per_input() -> None:
    fixed, default = TVMPurifier(SETTINGS, seed=2, fixed_masks=True), TVMPurifier(SETTINGS, seed=2)
    x = _x(3)
    out = _purify(fixed, x)
    torch.testing.assert_close(_purify(fixed, x), out, rtol=0, atol=0)
    with fixed.drawing(5):  # no effect: the function is fixed
        torch.testing.assert_close(_purify(fixed, x), out, rtol=0, atol=0)
    torch.testing.assert_close(_purify(fixed, x[1:2]), out[1:2], rtol=0, atol=0)  # any batch position or size
    assert not torch.equal(_purify(default, x), _purify(default, x))
    assert not torch.equal(_purify(TVMPurifier(SETTINGS, seed=3, fixed_masks=True), x), out)
    assert fixed.randomised is False and default.randomised is True
    with pytest.raises(TypeError, match="fixed_masks"):
        TVMPurifier(SETTINGS, fixed_masks=1)  # type: ignore[arg-type]


def test_fixed_masks_are_recorded_only_when_set() -> None:
    assert "fixed_masks" not in TVMPurifier(SETTINGS, seed=2).settings()
    assert TVMPurifier(SETTINGS, seed=2).settings() == {**SETTINGS.to_dict(), "seed": 2}
    assert TVMPurifier(SETTINGS, seed=2, fixed_masks=True).settings() == {**SETTINGS.to_dict(), "seed": 2,
                                                                           "fixed_masks": True}  # fmt: skip
    clf = _clf()
    fixed = Defence(clf, tvm=SETTINGS, seed=2, fixed_masks=True)
    record = fixed.settings()
    assert (
        record["purifier"]["fixed_masks"] is True and record["purifier"]["seed"] == 2
    )  # the seed picks the function
    assert not fixed.randomised and record["eot_samples"] is None
    default = Defence(clf, tvm=SETTINGS, seed=2).settings()
    assert "fixed_masks" not in default["purifier"] and "seed" not in default["purifier"]
    with pytest.raises(ValueError, match="fixed_masks"):
        Defence(clf, tvm=TVMPurifier(SETTINGS), fixed_masks=True)
    with pytest.raises(ValueError, match="fixed_masks"):  # checked before anything is loaded
        load_defence("resnet56", fixed_masks=True)
    with pytest.raises(TypeError, match="fixed_masks"):
        load_defence("resnet56", tvm=True, fixed_masks="yes")  # type: ignore[arg-type]
