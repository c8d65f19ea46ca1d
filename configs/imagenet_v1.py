"""v1 (CVPR 2022) ImageNet recipes: B-cos ResNet-34, DenseNet-121, VGG-11, Inception-v3.

    python train.py --config configs/imagenet_v1.py:resnet34 --workdir runs/v1_r34

Reference (docs/recipes.md §1, moboehle/B-cos experiments/Imagenet/bcos): Adam (no weight
decay), lr 2.5e-4 (Inception 5e-4) × 0.1 every 60 epochs, 100 epochs, lr set per epoch;
global batch 256 (VGG-11: 2 accumulated micro-batches of 128); BCE on one-hot targets
(Inception + aux loss, weight 1); RandAugment(2, 9) → RandomResizedCrop(224; Inception 299)
→ flip → ColorJitter(0.4) → PCA lighting; eval resize 256 / crop 224 (Inception 320 / 299).
``densenet121_cossched``: batch 128, 200 epochs, v1 cosine schedule 1e-3 → 1e-4 with 10
linspace warm-up epochs from 1e-5 — where epoch 0 runs at the construction lr 2.5e-4 (the
reference's quirk, reproduced). Logit temperatures and biases are in the v1 zoo models.
Not reproduced: the reference's first VGG update uses one micro-batch (its virtual-batch
counter), every later update two.
Arg: resnet34, densenet121, densenet121_cossched, vgg11, inception_v3.
Expected: the v1 ImageNet top-1 numbers could not be retrieved (docs/recipes.md §9).
"""
from bcos_jax.training.defaults import default_config

ARGS = ("resnet34", "densenet121", "densenet121_cossched", "vgg11", "inception_v3")


def get_config(arg: str = "resnet34"):
    arg = arg or "resnet34"
    if arg not in ARGS:
        raise ValueError(f"imagenet_v1 trains {ARGS}, not {arg!r}")
    inception = arg == "inception_v3"
    c = default_config("v1_inception" if inception else "v1")
    c.model_name = "v1_" + arg.replace("_cossched", "")
    # RandAugment_v1(2, 9) -> RRC -> flip -> ColorJitter(0.4) -> Lighting(0.1) (data preset 'v1').
    assert c.data.image_size == (299 if inception else 224) and c.data.augment == "v1"

    c.loss = "bce"
    c.aux_loss_weight = 1.0
    c.optimizer.name = "adam"
    c.optimizer.agc = False
    c.batch_size = 256
    c.eval_batch_size = 1024
    c.num_epochs = 100.0
    c.optimizer.lr = 5e-4 if inception else 2.5e-4
    c.schedule.name = "step"
    c.schedule.interval = "epoch"
    c.schedule.step_epochs = 60
    c.schedule.gamma = 0.1
    c.schedule.epoch0_lr = c.optimizer.lr
    if arg == "vgg11":
        c.grad_accum_steps = 2
    if arg == "densenet121_cossched":
        c.batch_size = 128
        c.num_epochs = 200.0
        base_lr = c.optimizer.lr  # 2.5e-4: the optimiser's construction lr, used in epoch 0
        c.optimizer.lr = 1e-3
        c.schedule.name = "v1_cosine"
        c.schedule.warmup_epochs = 10
        c.schedule.start_warmup_lr = 1e-5
        c.schedule.final_lr = 1e-4
        c.schedule.epoch0_lr = base_lr
    return c
