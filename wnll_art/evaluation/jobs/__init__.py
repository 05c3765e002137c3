"""The evaluation jobs: each runs cells through the engine and writes a results directory.

- :mod:`.main`: ``wnll-art evaluate`` (the main grid, :func:`~wnll_art.evaluation.jobs.main.evaluate`),
- :mod:`.defense_table`: the paper's Table 2 (paper vs adaptive protocol), :mod:`.transfer_table`: its Table 1,
- :mod:`.defence_comparison`: WNLL + TVM against ART's input-transformation defences,
- :mod:`.geometry`: the paper's Fig. 4 (feature geometry).

Jobs import only lower layers (:mod:`wnll_art.evaluation.setup`, ``.report``, ``.engine``, ...), never
each other. This package imports nothing at load time.
"""
