"""Evaluation: run configuration, victims, records, engine, report and the jobs, in layers.

``config`` < ``victims`` / ``records`` / ``parser`` < ``engine`` / ``protocols`` / ``checks`` <
``setup`` / ``report`` < ``jobs`` (``jobs.main`` is ``wnll-art evaluate``). The attacks are
:mod:`wnll_art.attacks` (interface) and :mod:`wnll_art.adapters.attacks` (ART / Foolbox); ART's preprocessors as
purifiers are :mod:`wnll_art.adapters.art_preprocessors`. Import the pieces from their modules; this package
imports nothing at load time so ``wnll_art`` stays light.
"""
