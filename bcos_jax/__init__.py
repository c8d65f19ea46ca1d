"""bcos_jax: B-cos networks (inherently interpretable CNNs and ViTs) in JAX/Flax.

Public API:
  layers: BcosConv, BcosDense, LogitLayer, add_inverse
  norms: the uncentred and detachable norms of B-cos networks
  explain(model, variables, x, targets=None) -> Explanation   (pure, jittable)
  visualize: host-side colour explanations and contribution maps
"""
from bcos_jax import layers, norms
from bcos_jax.explain import Explanation, explain, explain_fn, logits_of
from bcos_jax.layers import BcosConv, BcosDense, LogitLayer, add_inverse


def __getattr__(name):
    # Imported on first use: checkpoints need orbax, which ``import bcos_jax`` should not pay for.
    if name == "load_checkpoint":
        from bcos_jax.training.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'bcos_jax' has no attribute {name!r}")

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
]
