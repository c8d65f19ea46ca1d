"""Interpretability evaluation: localisation, faithfulness and reports (a library; the
``bcos-jax evaluate`` command is ``bcos_jax.commands.evaluate``).

* ``localisation``: the reference's grid pointing game (image sequence, grids, scores) and
  mask localisation.
* ``faithfulness``: pixel deletion / insertion curves and their areas.
* ``evaluate``: runs every metric for a list of attribution methods (``EvalConfig``) and
  writes ``summary.json`` and the pictures (``report``).
"""
from bcos_jax.evaluation.data import EvalData
from bcos_jax.evaluation.evaluate import DEFAULT_METHODS, EvalConfig, evaluate
from bcos_jax.evaluation.faithfulness import area_under_curve, faithfulness_curves
from bcos_jax.evaluation.localisation import (
    grid_index_sequence,
    grid_pointing_scores,
    make_grid,
    mask_localisation,
    plan_grids,
    sorted_confidences,
)

__all__ = [
    "DEFAULT_METHODS",
    "EvalConfig",
    "EvalData",
    "area_under_curve",
    "evaluate",
    "faithfulness_curves",
    "grid_index_sequence",
    "grid_pointing_scores",
    "make_grid",
    "mask_localisation",
    "plan_grids",
    "sorted_confidences",
]
