"""Evaluation: run configuration, victims, attacks, records, engine, report and the jobs, in layers.

``config`` < ``victims`` / ``attacks`` / ``records`` / ``parser`` < ``engine`` / ``protocols`` / ``checks`` <
``setup`` / ``report`` < ``jobs`` (``jobs.main`` is ``wnll-art evaluate``). Import the pieces from their modules;
this package imports nothing at load time so ``wnll_art`` stays light.
"""
