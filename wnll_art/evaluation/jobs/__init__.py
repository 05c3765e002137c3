"""The evaluation jobs: each runs cells through the engine and writes a results directory.

- :mod:`.main`: ``wnll-art evaluate``: any registered protocol on any registered models and defences (with ART's
  defences, the comparison of defences); :mod:`.defence_table`: the paper's Table 2 (paper vs adaptive
  protocol); :mod:`.transfer_table`: its Table 1. The paper's Fig. 4 is ``evaluations/feature_geometry.py``.

Jobs import only lower layers (:mod:`wnll_art.evaluation.setup`, ``.report``, ``.engine``, ...), never each other.
"""
