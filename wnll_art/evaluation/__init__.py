"""Evaluation harnesses: attack plans, victims, resumable records, gradient-masking checks.

Import the pieces from their modules (``wnll_art.evaluation.harness``, ``.protocols``, ``.records``, ...);
this package imports nothing at load time so ``wnll_art`` stays light.
"""
