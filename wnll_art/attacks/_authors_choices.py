"""The replicated choices of each authors' attack, as recorded by ``settings()`` (script lines in brackets).

Scripts: ``Fool_StandardDNN.py`` @ede8d50 and ``Fool_WNLLDNN.py`` @67fe264 of BaoWangMath/DNN-DataDependentActivation;
see :mod:`wnll_art.attacks.authors` (softmax), :mod:`wnll_art.attacks.authors_wnll` (WNLL) and
``evaluations/authors_scripts.md``.
"""

from __future__ import annotations

SOFTMAX = {
    "space": "normalised z = (x - mean) / std [404, 412]: eps, step, ball are eps * std[c] pixels",
    "batch": "1 image [416]",
    "labels": "true labels",
    "tvm": "none (no TVM step in the script)",
    "scoring": "all test images, clean misclassifications included [472]",
}
WNLL_COMMON = {
    "space": "pixels, no normalisation [356, 365]",
    "eps_to_pixels": "eps in every channel",
    "batch": "template 500 + test 1000 in one graph [369, 376]",
    "template": "first batch of a freshly shuffled loader over the augmented training set "
    "(RandomCrop(32, padding=4), RandomHorizontalFlip) per test batch [353-354, 421, 500]",
    "template_perturbed": "during the attack (the whole batch is attacked); not when scoring [455-458]",
    "loss": "mean cross-entropy over template + test rows of the raw WNLL values, gradient straight "
    "through the linear head [243, 313-314]",
    "tvm": "none (no TVM step in the script)",
    "scoring": "all test images against the clean template, misclassified ones included [497]",
}
_CW: dict[str, str] = {
    "target": "",
    "distance_term": "identically zero: w and the reference share storage",
    "adam": "torch 0.3: lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+1e-8)",
    "box": "none: no clamp at any step",
    "best": "the iterate after the step whose pre-step loss was the lowest so far",
}
CHOICES: dict[str, dict[str, str]] = {
    "StandardFGSM": {
        "lines": "440-465",
        "step": "x - eps * sign(grad CE) [463], eps * std[c] pixels",
        "clamp": "z to [0, 1] = pixels to [mean, mean + std] [464]",
    },
    "StandardIFGSM": {
        "lines": "494-523",
        "step": "+1.0 * sign(grad CE) in z [509, 517] = std[c] pixels",
        "projection": "eps around the clean z [518-519] = eps * std[c] pixels",
        "clamp": "z to [0, 1] after every step [520]",
    },
    "StandardCW": {
        **_CW,
        "lines": "552-599",
        "distance_term": "identically zero: w and input_var wrap one tensor [558, 560]",
        "best": "the iterate after the step whose pre-step loss was the lowest so far [592-597]",
        "target": "largest logit once Z[pred] := -1 (pred when all others are < -1) [568-574]",
        "eps": "unused [618: file name only]",
    },
    "WNLLFGSM": {"lines": "433-451", "step": "x + eps * sign(grad CE) [448]", "clamp": "[0, 1] [450]"},
    "WNLLIFGSM": {
        "lines": "545-573",
        "step": "+eps * sign(grad CE) [545, 567]",
        "projection": "fixed radius around the clean whole batch [546, 568-569]",
        "clamp": "[0, 1] [570]",
    },
    "WNLLCW": {
        **_CW,
        "lines": "660-758",
        "distance_term": "identically zero: w and input1_var wrap one tensor [679, 682]",
        "best": "the iterate after the step whose pre-step loss was the lowest so far [741-749]",
        "target": "arg-max of clean whole-batch row j for test image j [729]",
        "loss_sum": "one scalar for the batch: best_w kept per batch [727-749]",
        "noise": "x + eps * (x_cw - x) [757-758]",
    },
}
