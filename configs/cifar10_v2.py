"""v2 CIFAR-10 recipe "norm_ablations_final": B-cos CIFAR ResNets with any normalisation.

    python train.py --config configs/cifar10_v2.py:resnet20 --workdir runs/cifar_r20
    python train.py --config configs/cifar10_v2.py:resnet56/bnu-linear --workdir runs/cifar_r56_bnu

Reference (docs/recipes.md §6, bcos/experiments/CIFAR10/norm_ablations_final): Adam lr 1e-3,
batch 64, 100 epochs, per-epoch cosine to 0 without warm-up, BCE on one-hot targets, no AGC;
flip + RandomCrop(32, padding 4); B=2, MaxOut 2 (``-nomaxout``: 1), logit bias −log 9.
Arg: ``resnet{20,32,44,56}[/NORM][-nomaxout]``; NORM is one of the reference's ablation
norms (``none`` — the default, as the plain ``resnet_20`` config — or an, bn, gn, in, ln, pn,
anu, bnu, gnu, inu, lnu, pnu, each optionally ``-linear`` or ``-unaffine``).
Hardware: one GPU or TPU chip. Estimated for resnet20, not measured (benchmarks/tpu_estimates.py:
XLA's cost analysis of the compiled step, published peaks, 40 % of them assumed; per-step
overheads not modelled, so a floor): 6 min on one H100, 24 min on one TPU v5e chip
(docs/training.md). Expected: no published per-norm table was
retrievable (docs/recipes.md §6); ~90 % top-1 is typical for ResNet-20.
"""
from bcos_jax.training.defaults import default_config


def get_config(arg: str = "resnet20"):
    arg = arg or "resnet20"
    maxout = 2
    if arg.endswith("-nomaxout"):
        arg, maxout = arg[: -len("-nomaxout")], 1
    name, _, norm = arg.partition("/")
    if name not in ("resnet20", "resnet32", "resnet44", "resnet56"):
        raise ValueError(f"cifar10_v2 trains resnet20/32/44/56, not {name!r}")
    c = default_config("cifar")
    c.model_name = "cifar10_" + name
    c.model.norm = norm or "none"
    c.model.max_out = maxout
    # cifar10 train / test; flip + RandomCrop(32, padding 4) (the data preset 'cifar').
    assert (c.data.name, c.data.augment) == ("cifar10", "cifar")

    c.batch_size = 64
    c.eval_batch_size = 1024
    c.num_epochs = 100.0
    c.loss = "bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.agc = False
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "epoch"
    c.schedule.warmup_epochs = 0
    c.explain_smooth = 3
    return c
