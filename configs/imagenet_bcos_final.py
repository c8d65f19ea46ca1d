"""v2 ImageNet recipe "bcos_final" (B-cos ResNets, ResNeXt, DenseNets, VGG-11-BNU).

    python train.py --config configs/imagenet_bcos_final.py:resnet50 --workdir runs/r50 \\
        --config.data.data_dir=$TFDS_DATA_DIR

Reference (docs/recipes.md §3, bcos/experiments/ImageNet/bcos_final): Adam lr 1e-3, no
weight decay, global batch 256 (64 × 4 GPUs), 90 epochs (ResNeXt 100), lr per epoch:
5 linear warm-up epochs from 0.01·lr, then cosine to 0; unit-wise AGC (0.01);
UniformOffLabels BCE (off targets 1/1000); RandomResizedCrop(224) + flip; eval resize 256,
centre crop 224; [x, 1-x] input; fp32. Arg: a zoo name (resnet18/34/50/101/152,
resnext50_32x4d, densenet121/161/169/201, vgg11_bnu).
Hardware: one GPU or a TPU slice (--config.compute_dtype=bfloat16 halves activation bytes).
Estimated for ResNet-50, not measured (benchmarks/tpu_estimates.py: XLA's cost analysis of the
AOT-compiled step, the chips' published peak FLOP/s and HBM bandwidth, 40 % of them assumed):
10.6 h on a v5e-16 slice, 42 h on one H100; the table and the compiled memory are in
docs/training.md.
Expected top-1 (official weights, docs/recipes.md §8): resnet18 68.7, resnet34 72.3, resnet50 75.9,
resnet101 76.5, resnet152 76.5, resnext50_32x4d 75.8, densenet121 73.6, densenet161 76.6,
densenet169 75.2, densenet201 75.5, vgg11_bnu 69.3.
"""
from bcos_jax.training.defaults import default_config

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
          "densenet121", "densenet161", "densenet169", "densenet201", "vgg11_bnu")


def get_config(arg: str = "resnet50"):
    c = default_config("v2")
    c.model_name = arg or "resnet50"
    if c.model_name not in MODELS:
        raise ValueError(f"bcos_final trains {MODELS}, not {c.model_name!r}")
    # imagenet2012 train / validation; RandomResizedCrop(224) + flip; eval resize 256, crop 224.
    assert (c.data.image_size, c.data.eval_resize, c.data.eval_crop, c.data.augment) == (
        224,
        256,
        224,
        "v2",
    )

    c.batch_size = 256
    c.eval_batch_size = 1024
    c.num_epochs = 100.0 if c.model_name.startswith("resnext") else 90.0
    c.loss = "uniform_off_labels_bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.agc = True
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "epoch"
    c.schedule.warmup_epochs = 5
    c.schedule.warmup_factor = 0.01
    c.ema_decay = 0.0
    c.log_every_steps = 100
    return c
