"""`import wnll_art` stays light and works where torchvision cannot be imported."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
sys.modules["torchvision"] = None  # any `import torchvision` raises ImportError, as on CPU-only machines
import wnll_art
assert not any(m == n or m.startswith(n + ".") for m in sys.modules for n in ("art", "foolbox")), "heavy import"
model = wnll_art.resnet56()
assert wnll_art.WNLLNet.__name__ == "WNLLNet" and callable(wnll_art.wnll_interpolate)
assert "art" not in sys.modules  # the core WNLL model does not need ART
assert callable(wnll_art.WNLLClassifier) and "art" in sys.modules  # adapters load lazily, on first use
print("ok")
"""


def test_core_import_is_light_and_needs_no_torchvision() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
