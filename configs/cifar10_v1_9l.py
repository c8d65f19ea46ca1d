"""v1 (CVPR 2022) CIFAR-10 recipe: the 9-layer B-cos network with MaxOut 2, exponent B.

    python train.py --config configs/cifar10_v1_9l.py:2 --workdir runs/cifar_9l_b2

Reference (docs/recipes.md §2, moboehle/B-cos experiments/CIFAR10/bcos): Adam, batch 64, 100
epochs, lr per epoch ``1e-3·cos(π·e/200) + 1e-5`` with epoch 0 at the construction lr 5e-4;
BCE on one-hot targets; flip + RandomCrop(32, padding 4); [x, 1-x] input. The per-B layer
scale and logit temperature are in the zoo models ``v1_cifar10_9l_b{100,...,250}``.
Arg: B in 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5. Hardware: one GPU or TPU chip. Estimated for B=2,
not measured (benchmarks/tpu_estimates.py: XLA's cost analysis of the compiled step, published
peaks, 40 % of them assumed; per-step overheads not modelled, so a floor): 7 min on one H100,
28 min on one TPU v5e chip (docs/training.md). CPU: not measured.
Expected top-1 (docs/recipes.md §9): B=1 93.53, 1.25 93.81, 1.5 93.69, 1.75 93.69, 2 93.19,
2.25 92.60, 2.5 92.37.
"""
from bcos_jax.training.defaults import default_config

BS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5)


def get_config(arg: str = "2"):
    b = float(arg or 2)
    if b not in BS:
        raise ValueError(f"the v1 CIFAR-10 configs use B in {BS}, not {b}")
    c = default_config("cifar")
    c.model_name = f"v1_cifar10_9l_b{int(round(b * 100))}"
    # cifar10 train / test; flip + RandomCrop(32, padding 4) (the data preset 'cifar').
    assert (c.data.name, c.data.augment) == ("cifar10", "cifar")

    c.batch_size = 64
    c.eval_batch_size = 1024
    c.num_epochs = 100.0
    c.loss = "bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 5e-4
    c.optimizer.agc = False
    c.schedule.name = "v1_cifar"
    c.schedule.interval = "epoch"
    c.schedule.epoch0_lr = 5e-4
    c.log_every_steps = 100
    c.explain_smooth = 3
    return c
