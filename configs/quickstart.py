"""Quickstart: a small B-cos CNN on the synthetic shapes dataset, on a laptop CPU.

    python train.py --config configs/quickstart.py --workdir runs/quickstart

Hardware: 2 CPU cores, no accelerator. Expected: >= 95 % validation accuracy in under
5 minutes, with explanations on the objects: summary.json's ``localisation`` (share of the
positive contribution inside the object mask) far above ``localisation_uniform`` (the mask
area, what a uniform map would score); explanations.png shows image | explanation |
contribution map.
Measured (2-core Xeon VM shared with other jobs, load ~5; ``time python train.py ...``):
97.9 % top-1, localisation 0.930 vs uniform 0.244, 1 min 23 s wall (55 s user CPU);
384 steps of 64 images (6 epochs of 4096), 1 device.
CI variant ``--config configs/quickstart.py:ci`` (4 epochs of 1024 images, 64 steps, about
30 s): >= 90 % expected (tests/test_training_quickstart.py), 95.3 % measured, localisation 0.91.
"""
from bcos_jax.training.defaults import default_config


def get_config(arg: str = ""):
    c = default_config("quickstart")
    c.seed = 0
    c.model_name = "bcos_small_cnn"
    c.model.widths = (16, 32, 64)
    c.model.depth = 1

    c.data.augment = "none"
    c.data.num_train = 4096
    c.data.num_eval = 512
    c.data.num_classes = 6

    c.batch_size = 64
    c.eval_batch_size = 256
    c.num_epochs = 6.0
    c.loss = "bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 3e-3
    c.optimizer.agc = False
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "step"
    c.schedule.warmup_steps = 20
    c.schedule.warmup_factor = 0.01

    c.log_every_steps = 20
    c.eval_every_epochs = 2.0
    c.checkpoint_every_epochs = 2.0
    c.keep_checkpoints = 2
    c.explain_every_epochs = 2.0
    c.explain_smooth = 3
    c.localisation = True
    if arg == "ci":
        c.data.num_train = 1024
        c.data.num_eval = 256
        c.num_epochs = 4.0
    elif arg:
        raise ValueError(f"quickstart takes no argument or 'ci', not {arg!r}")
    return c
