"""bcos_jax: B-cos networks (inherently interpretable CNNs and ViTs) in JAX/Flax.

Public API:
  layers: BcosConv, BcosDense, LogitLayer, add_inverse
  norms: the uncentred and detachable norms of B-cos networks
  explain(model, variables, x, targets=None) -> Explanation   (pure, jittable)
  visualize: host-side colour explanations and contribution maps
  load_checkpoint(dir) -> (model, variables), save_model(dir, name, overrides, variables):
    models on disk (bcos_jax.hub)
  bcosify(name, variables) -> (model, variables): a pretrained standard model turned into a
    B-cos model (Arya et al. 2024; bcos_jax.bcosify)
  pretrained(name) -> (model, variables): a zoo model with its official weights, downloaded
    and converted once (bcos_jax.released)
"""
from bcos_jax.platform import skip_absent_tpu

skip_absent_tpu()  # before any backend starts: see bcos_jax/platform.py
# The imports below must follow that call, hence their `noqa: E402`.

from bcos_jax import layers, norms  # noqa: E402
from bcos_jax.bcosify import bcosify  # noqa: E402 (imports the model zoo only when called)
from bcos_jax.explain import Explanation, explain, explain_fn, logits_of  # noqa: E402
from bcos_jax.hub import load_checkpoint, save_model  # noqa: E402 (orbax: imported on first use)
from bcos_jax.layers import BcosConv, BcosDense, LogitLayer, add_inverse  # noqa: E402
from bcos_jax.released import pretrained  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BcosConv",
    "BcosDense",
    "Explanation",
    "LogitLayer",
    "add_inverse",
    "bcosify",
    "explain",
    "explain_fn",
    "layers",
    "load_checkpoint",
    "logits_of",
    "norms",
    "pretrained",
    "save_model",
]
