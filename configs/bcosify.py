"""B-cosification recipes: fine-tune a B-cosified pretrained model (Arya et al., NeurIPS 2024).

First B-cosify the pretrained standard model into a ``save_model`` directory, then train
from it (``config.init_from``; docs/bcosification.md):

    bcos-jax bcosify --model standard_resnet50 --weights resnet50-11ad3fa6.pth \\
        --out runs/bcosified_resnet50_init
    python train.py --config configs/bcosify.py:resnet50 --workdir runs/bcosify_r50 \\
        --config.data.data_dir=$TFDS_DATA_DIR

(``--pretrained`` instead of ``--weights FILE``: the standard model's official weights through
``bcos_jax.pretrained``.)
``init_from`` defaults to ``runs/bcosified_<arch>_init``, where the first command writes.

Reference (shrebox/B-cosification, bcos/experiments/ImageNet/bcosification and
vit_bcosification/experiment_parameters.py):

* CNNs (resnet18, resnet50 from torchvision's DEFAULT (V2) weights, resnet50_v1 from
  IMAGENET1K_V1, densenet121): Adam lr 1e-4 (a tenth of the B-cos from-scratch rate), no
  weight decay, global batch 256 (64 × 4 GPUs), 90 epochs, cosine annealing per epoch to 0
  without warm-up; UniformOffLabels BCE (off targets 1/1000); AGC (0.01); RandomResizedCrop
  (224) + flip; eval resize 256, centre crop 224; [x, 1-x] input.
* ViTs (``bcosifyv2_<vit>_0.001[_lrWarmup]_gapReorder``): Adam lr 1e-3, no weight decay,
  batch 128 per GPU (global 1024 on 8; 64 per GPU for the reference's "big" models: ``_l_``
  and simple_vit_b), 90 epochs, cosine per step to 0; linear warm-up from 0.01·lr for the
  b and l models only (README: "Only b and l models use lrWarmup in the final models"),
  over 50 000 steps for the big models and 10 000 for vitc_b; RandAugment (magnitude 10),
  mixup 0.2; UniformOffLabels BCE; AGC.
* ``small_cnn``: the offline quickstart (examples/bcosify_quickstart.py) through train.py:
  B-cosified ``standard_small_cnn``, BCE, Adam 3e-4 (a tenth of the quickstart's rate),
  cosine without warm-up, 6 epochs of 4096 synthetic images.

Published top-1 of the released B-cosified models (paper, Table 1/2; not re-measured here):
see docs/bcosification.md.
"""

from bcos_jax.training.defaults import default_config

CNNS = ("resnet18", "resnet50", "resnet50_v1", "densenet121")
VITS = (
    "simple_vit_ti_patch16_224",
    "simple_vit_s_patch16_224",
    "simple_vit_b_patch16_224",
    "simple_vit_l_patch16_224",
    "vitc_ti_patch1_14",
    "vitc_s_patch1_14",
    "vitc_b_patch1_14",
    "vitc_l_patch1_14",
)
ARGS = CNNS + VITS + ("small_cnn",)


def _big(arch: str) -> bool:
    # The reference's is_big_model: half the batch, 50 000 warm-up steps (vitc_b is not big).
    return "_l_" in arch or "simple_vit_b" in arch


def get_config(arg: str = "resnet50"):
    arch = arg or "resnet50"
    if arch not in ARGS:
        raise ValueError(f"configs/bcosify.py recipes: {', '.join(ARGS)}; not {arch!r}")
    if arch == "small_cnn":
        c = default_config("quickstart")
        c.data.augment = "none"
        c.data.num_train = 4096
        c.data.num_eval = 512
        c.data.num_classes = 6
        c.batch_size = 64
        c.eval_batch_size = 256
        c.num_epochs = 6.0
        c.loss = "bce"
        c.optimizer.lr = 3e-4
        c.optimizer.agc = False
        c.schedule.interval = "step"
        c.localisation = True
        c.explain_smooth = 3
    elif arch in CNNS:
        c = default_config("v2")
        # RandomResizedCrop(224) + flip; eval resize 256, crop 224 (the 'v2' data preset).
        assert (c.data.image_size, c.data.eval_resize, c.data.eval_crop, c.data.augment) == (
            224,
            256,
            224,
            "v2",
        )
        c.batch_size = 256
        c.eval_batch_size = 1024
        c.num_epochs = 90.0
        c.loss = "uniform_off_labels_bce"
        c.optimizer.lr = 1e-4
        c.optimizer.agc = True
        c.schedule.interval = "epoch"
    else:
        c = default_config("vit")
        # RRC(224) + flip + RandAugment(magnitude 10), mixup 0.2 (the 'vit' data preset).
        assert (c.data.randaugment_magnitude, c.data.mixup_alpha) == (10, 0.2)
        big = _big(arch)
        c.batch_size = 512 if big else 1024
        c.eval_batch_size = 1024
        c.num_epochs = 90.0
        c.loss = "uniform_off_labels_bce"
        c.optimizer.lr = 1e-3
        c.optimizer.agc = True
        c.schedule.interval = "step"
        # Warm-up for the b and l models only (README); its length by is_big_model.
        warm = "_b_" in arch or "_l_" in arch
        c.schedule.warmup_steps = (50_000 if big else 10_000) if warm else 0
    c.model_name = f"bcosified_{arch}"
    c.init_from = f"runs/bcosified_{arch}_init"
    c.data.add_inverse = True
    c.optimizer.name = "adam"
    c.optimizer.weight_decay = 0.0
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_factor = 0.01
    c.schedule.warmup_epochs = 0  # warm-up, where any, is counted in steps
    c.ema_decay = 0.0
    return c
