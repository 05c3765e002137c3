"""Deprecated spelling, kept for one release: use :mod:`wnll_art.evaluation.jobs.defence_table`."""

from wnll_art.evaluation.jobs.defence_table import Convergence, ProtocolRecords, defence_table

defense_table = defence_table  # the old name
__all__ = ["Convergence", "ProtocolRecords", "defence_table", "defense_table"]
