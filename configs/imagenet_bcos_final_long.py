"""v2 ImageNet recipe "bcos_final_long" (600 epochs, torchvision's strong recipe).

    python train.py --config configs/imagenet_bcos_final_long.py:resnet50_long \\
        --workdir runs/r50_long

Reference (docs/recipes.md §4, bcos/experiments/ImageNet/bcos_final_long): Adam lr 1e-3,
global batch 1024 (128 × 8 GPUs; convnext_base* and resnet152 as 2 accumulated micro-batches
of 512), 600 epochs, per-epoch cosine after 5 linear warm-up epochs (factor 0.01), unit-wise
AGC, UniformOffLabels BCE; train crop 176 with TrivialAugmentWide, RandomErasing(0.1), mixup
0.2 / cutmix 1.0 (one per batch), repeated augmentation ×4 (not for DenseNet); eval resize
232, crop 224; EMA of the weights (decay 0.99998 adjusted, every 32 steps, reset during
warm-up); stochastic depth 0.1 (ResNets; ConvNeXt defaults).
Arg: resnet50_long, resnet152_long, densenet121_long, convnext_tiny, convnext_base (position
norm) or convnext_tiny_bnu, convnext_base_bnu.
Hardware: a v5e-64 / 8-GPU node class job (600 epochs). Expected top-1 (docs/recipes.md §8):
resnet50_long 79.5, resnet152_long 80.1, densenet121_long 77.3, convnext_tiny 77.5,
convnext_base 79.7, convnext_tiny_bnu 76.8, convnext_base_bnu 80.1.
"""
from bcos_jax.training.defaults import default_config

MODELS = ("resnet50_long", "resnet152_long", "densenet121_long", "convnext_tiny", "convnext_base",
          "convnext_tiny_bnu", "convnext_base_bnu")
ACCUMULATE_2 = ("resnet152_long", "convnext_base", "convnext_base_bnu")


def get_config(arg: str = "resnet50_long"):
    c = default_config("long")
    c.model_name = arg or "resnet50_long"
    if c.model_name not in MODELS:
        raise ValueError(f"bcos_final_long trains {MODELS}, not {c.model_name!r}")
    # RRC(176) + flip + TrivialAugmentWide + RandomErasing(0.1), mixup 0.2 / cutmix 1.0,
    # repeated augmentation x4; eval resize 232, crop 224 (the data preset 'long').
    assert (c.data.image_size, c.data.eval_resize, c.data.random_erasing, c.data.repeated_aug) == (
        176,
        232,
        0.1,
        4,
    )
    if c.model_name.startswith("densenet"):
        c.data.repeated_aug = 1  # the reference's DenseNet runs without the RASampler

    c.batch_size = 1024
    c.grad_accum_steps = 2 if c.model_name in ACCUMULATE_2 else 1
    c.eval_batch_size = 1024
    c.num_epochs = 600.0
    c.loss = "uniform_off_labels_bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.agc = True
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "epoch"
    c.schedule.warmup_epochs = 5
    c.schedule.warmup_factor = 0.01
    c.ema_decay = 0.99998
    c.ema_every = 32
    c.ema_warmup_epochs = 5
    c.eval_every_epochs = 5.0
    c.checkpoint_every_epochs = 1.0
    c.explain_every_epochs = 5.0
    return c
