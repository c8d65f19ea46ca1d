"""Fine-tuning recipes: a pretrained B-cos model on your own images, or the offline demo.

    # A zoo model's official weights, fine-tuned on PATH/train/<class>/*.jpg (val/ beside):
    python train.py --config configs/finetune.py:resnet50 --workdir runs/ft \\
        --config.data.name=folder:PATH
    # Its linear probe (only the logit layer trains; the backbone, norms included, is frozen):
    python train.py --config configs/finetune.py:resnet50,probe --workdir runs/probe \\
        --config.data.name=folder:PATH
    # Offline: the quickstart model (runs/quickstart) fine-tuned on the second synthetic task:
    python train.py --config configs/quickstart.py --workdir runs/quickstart
    python train.py --config configs/finetune.py:quickstart2 --workdir runs/ft_quickstart2
    # ... its linear probe (',probe'), or the same task from scratch (',scratch').

Arg: ``MODEL[,probe|,scratch]``. MODEL is a zoo name (``init_from`` defaults to its
official weights through ``bcos_jax.pretrained``; ``--config.init_from=DIR_OR_FILE``
starts from a workdir, a ``save_model`` directory or a ``.pth``/``.safetensors`` file
instead) or ``quickstart2``. ``probe`` freezes everything but the logit layer
(``transfer.probe_pattern``); ``scratch`` trains without ``init_from`` (the baseline).

Where the hyper-parameters come from
------------------------------------
B-cos-v2 (B-cos/B-cos-v2) publishes no fine-tuning recipe (its README points to the
models' ``get_classifier``/``get_feature_extractor`` for fine-tuning; TRAINING.md leaves a
fine-tuning notebook as a TODO). The B-cosification authors fine-tune pretrained ImageNet
networks into B-cos networks and publish their recipes:

* CNNs (shrebox/B-cosification: bcos/experiments/ImageNet/bcosification/
  experiment_parameters.py): Adam, lr 1e-4, cosine annealing without warm-up, batch 256
  (64 x 4 GPUs), unit-wise AGC, UniformOffLabels BCE, the v2 ImageNet transforms
  (RandomResizedCrop 224 + flip; eval resize 256, crop 224), 90 epochs.
* ViTs (shrebox/B-cosification: bcos/experiments/ImageNet/vit_bcosification/
  experiment_parameters.py): Adam, lr 1e-3, linear warm-up over 10,000 steps from 0.01 lr
  then cosine, mixup 0.2, AGC, 90 epochs. Their 10,000 warm-up steps are 18 % of the run
  (90 epochs at 625 steps): here ``warmup_epochs = 0.18 * num_epochs``.
* Linear probes (shrebox/B-cosification: README and CLIP_benchmark/clip_benchmark/metrics/
  linear_probe.py): AdamW, lr 0.1, cosine, 20 epochs, batch 512, on precomputed features
  with a standard linear layer.

Our choices where they published none: 30 epochs instead of ImageNet's 90 (a fine-tuning
set is usually much smaller; raise it for large ones); the probe keeps the authors' 20
epochs, cosine and batch 512, but trains a *B-cos* logit layer (a normalised weight: only
its direction counts) with Adam at lr 1e-3 rather than lr 0.1 on precomputed features.
The ``quickstart2`` recipes use the quickstart's settings (Adam 3e-3, cosine, batch 64)
for training from scratch and for fine-tuning (3e-3 ended 2 points above 1e-3 in
docs/finetuning.md, examples/finetune_synthetic.py), and lr 1e-2 for the probe. Batch
size and lr of the ImageNet recipes are global: scale lr with the batch if you change it.
"""
from bcos_jax.training.defaults import default_config

VIT_PREFIXES = ("simple_vit", "vitc", "bcosified_simple_vit", "bcosified_vitc")


def _zoo_recipe(model_name: str, mode: str):
    from bcos_jax import models

    spec = models.get_spec(model_name)  # a ValueError suggesting close names
    c = default_config("v2" if spec.in_channels == 6 else "baseline")
    c.model_name = model_name
    c.init_from = "" if mode == "scratch" else model_name
    c.data.name = "folder:data"  # PATH/train/<class>/..., PATH/val/<class>/...: set it
    c.data.image_size = spec.input_size
    c.data.eval_crop = spec.input_size
    c.data.eval_resize = spec.resize
    c.loss = "uniform_off_labels_bce"
    c.optimizer.name = "adam"
    c.optimizer.agc = True
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "step"
    c.schedule.warmup_factor = 0.01
    c.num_epochs = 30.0
    c.batch_size = 256
    c.eval_batch_size = 256
    vit = model_name.startswith(VIT_PREFIXES)
    if vit:
        c.optimizer.lr = 1e-3
        c.schedule.warmup_epochs = int(round(0.18 * c.num_epochs))
        c.data.mixup_alpha = 0.2
    else:
        c.optimizer.lr = 1e-4
        c.schedule.warmup_epochs = 0
    if mode == "probe":
        from bcos_jax.training import transfer

        c.freeze = transfer.probe_pattern(model_name)
        c.num_epochs = 20.0
        c.batch_size = 512
        c.optimizer.lr = 1e-3
        c.schedule.warmup_epochs = 0
        c.data.mixup_alpha = 0.0
    return c


def _quickstart2_recipe(mode: str):
    c = default_config("quickstart2")
    c.seed = 0
    c.model_name = "bcos_small_cnn"
    c.model.widths = (16, 32, 64)  # the quickstart model's (configs/quickstart.py)
    c.model.depth = 1
    c.init_from = "" if mode == "scratch" else "runs/quickstart"
    c.data.augment = "none"
    c.data.num_train = 4096
    c.data.num_eval = 512
    c.batch_size = 64
    c.eval_batch_size = 256
    c.num_epochs = 6.0
    c.loss = "bce"
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-2 if mode == "probe" else 3e-3  # fine-tuning: 3e-3 beat 1e-3 (docs)
    c.optimizer.agc = False
    c.schedule.name = "warmup_cosine"
    c.schedule.interval = "step"
    c.schedule.warmup_steps = 20
    c.schedule.warmup_factor = 0.01
    if mode == "probe":
        from bcos_jax.training import transfer

        c.freeze = transfer.probe_pattern(c.model_name, c.model.to_dict(), c.data.image_size)
    c.log_every_steps = 20
    c.eval_every_epochs = 1.0
    c.checkpoint_every_epochs = 2.0
    c.keep_checkpoints = 2
    c.explain_every_epochs = 2.0
    c.explain_smooth = 3
    c.localisation = True
    return c


def get_config(arg: str = "resnet50"):
    name, _, mode = (arg or "resnet50").partition(",")
    if mode not in ("", "probe", "scratch"):
        raise ValueError(f"finetune.py:{arg}: the mode after the comma is 'probe' or 'scratch', "
                         f"not {mode!r}")
    if name == "quickstart2":
        return _quickstart2_recipe(mode)
    return _zoo_recipe(name, mode)
