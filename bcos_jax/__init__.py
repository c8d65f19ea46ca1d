"""bcos_jax: B-cos networks (inherently interpretable CNNs and ViTs) in JAX/Flax.

Public API:
  layers: BcosConv, BcosDense, LogitLayer, add_inverse
  norms: the uncentred and detachable norms of B-cos networks
  explain(model, variables, x, targets=None) -> Explanation   (pure, jittable)
  visualize: host-side colour explanations and contribution maps
  load_checkpoint(dir) -> (model, variables), save_model(dir, name, overrides, variables):
    models on disk (bcos_jax.hub)
  pretrained(name) -> (model, variables): a zoo model with its official weights, downloaded
    and converted once (bcos_jax.released)
"""
from bcos_jax import layers, norms
from bcos_jax.explain import Explanation, explain, explain_fn, logits_of
from bcos_jax.hub import load_checkpoint, save_model  # orbax: imported when first used
from bcos_jax.layers import BcosConv, BcosDense, LogitLayer, add_inverse
from bcos_jax.released import pretrained

__version__ = "0.1.0"

__all__ = [
    "BcosConv",
    "BcosDense",
    "Explanation",
    "LogitLayer",
    "add_inverse",
    "explain",
    "explain_fn",
    "layers",
    "load_checkpoint",
    "logits_of",
    "norms",
    "pretrained",
    "save_model",
]
