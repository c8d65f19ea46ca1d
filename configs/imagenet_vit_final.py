"""v2 ImageNet recipe "vit_final": B-cos ViTs (and their standard baselines).

    python train.py --config configs/imagenet_vit_final.py:vitc_s_patch1_14 --workdir runs/vitc_s

Reference (docs/recipes.md §5, bcos/experiments/ImageNet/vit_final): 90 epochs, lr stepped
per *step*: linear warm-up over 10 000 steps (50 000 for the big models: ``_l_`` and
simple_vit_b) from 0.01·lr, then cosine to 0; RandAugment (magnitude 10), mixup 0.2; global
batch 1024 (128 × 8 GPUs; 512 = 64 × 8 for the big models). B-cos: Adam 1e-3, no weight
decay, AGC, UniformOffLabels BCE, [x, 1-x] input. Standard (``standard_*``): AdamW 1e-3,
weight decay 1e-4 on every parameter, global-norm clipping 1.0, softmax CE, ImageNet
mean/std input.
Arg: simple_vit_{ti,s,b,l}_patch16_224, vitc_{ti,s,b,l}_patch1_14, or standard_ + one of them.
Expected top-1 (docs/recipes.md §8): B-cos simple_vit ti/s/b/l 60.0/69.2/74.4/75.1, vitc ti/s/b/l
67.3/74.5/77.2/77.8; standard simple_vit 70.2/74.5/75.3/75.7, vitc 72.6/75.8/76.8/77.9.
"""
from bcos_jax.training.defaults import default_config

ARCHS = ("simple_vit_ti_patch16_224", "simple_vit_s_patch16_224", "simple_vit_b_patch16_224",
         "simple_vit_l_patch16_224", "vitc_ti_patch1_14", "vitc_s_patch1_14", "vitc_b_patch1_14",
         "vitc_l_patch1_14")


def get_config(arg: str = "vitc_s_patch1_14"):
    standard = (arg or "").startswith("standard_")
    c = default_config("vit")
    c.model_name = arg or "vitc_s_patch1_14"
    arch = c.model_name[len("standard_"):] if standard else c.model_name
    if arch not in ARCHS:
        raise ValueError(f"vit_final trains {ARCHS} (optionally standard_*), not {c.model_name!r}")
    big = "_l_" in arch or arch.startswith("simple_vit_b")
    # RRC(224) + flip + RandAugment(magnitude 10), mixup 0.2 (the data preset 'vit').
    assert (c.data.randaugment_magnitude, c.data.mixup_alpha) == (10, 0.2)
    c.data.add_inverse = not standard  # standard ViTs: 3 channels, ImageNet mean/std

    c.batch_size = 512 if big else 1024
    c.eval_batch_size = 1024
    c.num_epochs = 90.0
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "step"
    c.schedule.warmup_steps = 50_000 if big else 10_000
    c.schedule.warmup_factor = 0.01
    c.optimizer.lr = 1e-3
    if standard:
        c.loss = "ce"
        c.optimizer.name = "adamw"
        c.optimizer.weight_decay = 1e-4
        c.optimizer.agc = False
        c.optimizer.grad_clip_norm = 1.0
    else:
        c.loss = "uniform_off_labels_bce"
        c.optimizer.name = "adam"
        c.optimizer.agc = True
    return c
