"""The training config schema: every key ``train.py`` reads, with its default.

Recipes (``configs/*.py``) start from ``default_config()`` and change what they need; every
value is a plain Python value (names, numbers, tuples), never an object, so any key can be
overridden on the command line (``--config.optimizer.lr=5e-4``).
"""
from __future__ import annotations

from typing import Optional

import ml_collections

__all__ = ["default_config"]


def default_config(data_recipe: Optional[str] = None) -> ml_collections.ConfigDict:
    """All keys with defaults; ``data_recipe`` picks a ``bcos_jax.data.PRESETS`` data config."""
    from bcos_jax import data

    c = ml_collections.ConfigDict()
    c.seed = 42  # model init, per-step rngs (fold_in(seed, step)) and the data order

    # ---- Model: a zoo name and overrides for models.create (num_classes defaults to the data's).
    c.model_name = "resnet50"
    c.model = ml_collections.ConfigDict()
    c.compute_dtype = "float32"  # 'bfloat16': mixed precision (params and norm statistics stay f32)

    # ---- Data: bcos_jax.data's config (name, splits, sizes, augmentation, mixup, ...).
    c.data = data.default_config(data_recipe)

    # ---- Duration and batch. batch_size is GLOBAL (all devices, all hosts) per optimiser
    # update; grad_accum_steps splits it into that many sequential micro-batches.
    c.batch_size = 256
    c.grad_accum_steps = 1
    c.eval_batch_size = 512
    c.num_epochs = 90.0
    c.num_steps = 0  # > 0 overrides num_epochs

    # ---- Objective and optimiser.
    c.loss = "uniform_off_labels_bce"  # 'bce' | 'uniform_off_labels_bce' | 'ce'
    c.aux_loss_weight = 1.0  # Inception-v3 auxiliary head (v1 AuxLoss(1))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
        agc=True, agc_clip_factor=0.01, agc_eps=1e-3, grad_clip_norm=0.0, momentum=0.9))
    c.schedule = ml_collections.ConfigDict(dict(
        name="warmup_cosine", interval="epoch", warmup_epochs=5, warmup_steps=0, warmup_factor=0.01,
        min_lr=0.0, step_epochs=60, gamma=0.1, final_lr=0.0, start_warmup_lr=0.0))
    c.schedule.epoch0_lr = ml_collections.FieldReference(None, field_type=float)  # v1 quirk

    # ---- EMA of the weights (torchvision recipe); 0 disables it.
    c.ema_decay = 0.0
    c.ema_every = 32
    c.ema_warmup_epochs = 5

    # ---- Mesh and sharding (see bcos_jax.training.sharding).
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # in-slice sizes, -1 = the rest
    c.dcn_mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1))  # across slices (multi-slice pods)
    c.sharding_rules = ((".*", "replicate"),)  # ((regex on param path, "fsdp" | "replicate"), ...)
    c.fsdp_min_size = 2**14

    # ---- Monitoring and checkpoints (intervals: *_steps wins over *_epochs when > 0).
    c.log_every_steps = 100
    c.eval_every_epochs = 1.0
    c.eval_every_steps = 0
    c.checkpoint_every_epochs = 1.0
    c.checkpoint_every_steps = 0
    c.keep_checkpoints = 3
    c.explain_every_epochs = 1.0
    c.explain_every_steps = 0
    c.num_explain_images = 8
    c.explain_smooth = 15
    c.localisation = False  # needs a dataset with object masks (the quickstart)
    return c
