"""The training step, the evaluation step and the initial state, as module-level functions.

A run has a static half, ``Setup`` (model, optimiser, schedule, loss and the constants the
step needs; ``Setup.from_config`` builds it from a training config), and a dynamic half,
``state.TrainState``. The functions are pure and take the setup first, so that
``jax.jit(functools.partial(train_step, setup))`` compiles them; ``jit_on_mesh`` does that
with the shardings ``train.py`` trains with (the state created sharded and donated to each
step, the batch split over every device).

    setup = Setup.from_config(config, num_classes=10, num_train=50000, mesh=mesh)
    steps = jit_on_mesh(setup, mesh, config.sharding_rules, config.fsdp_min_size)
    state = steps.init(jax.random.key(0))
    state, metrics = steps.train_step(state, batch, jax.random.key(1))
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bcos_jax import models
from bcos_jax.explain import logits_of
from bcos_jax.training import ema as ema_lib
from bcos_jax.training import losses, metrics, optim, sharding
from bcos_jax.training.state import TrainState

__all__ = [
    "Jitted",
    "Setup",
    "eval_step",
    "init",
    "jit_on_mesh",
    "model_input",
    "model_overrides",
    "schedule_lengths",
    "train_step",
]


def model_overrides(config: Any, num_classes: int) -> Dict[str, Any]:
    """Keyword arguments of ``models.create`` for a config: ``config.model``, the number of
    classes (unless the config sets it), ``remat`` and the compute dtype."""
    overrides = dict(config.model.to_dict() if hasattr(config.model, "to_dict") else config.model)
    overrides.setdefault("num_classes", num_classes)
    if config.remat:
        overrides["remat"] = True  # models.create: every B-cos layer rematerialised
    if config.compute_dtype != "float32":
        # Mixed precision: compute in bf16, params and norm statistics stay float32.
        overrides["dtype"] = jnp.dtype(config.compute_dtype)
    return overrides


def schedule_lengths(config: Any, num_train: int) -> Tuple[int, int]:
    """(steps_per_epoch, total_steps); an epoch drops the last incomplete batch."""
    steps_per_epoch = max(1, num_train // config.batch_size)
    total = config.num_steps or int(round(config.num_epochs * steps_per_epoch))
    return steps_per_epoch, int(total)


def model_input(images: jax.Array, in_channels: int) -> jax.Array:
    """``images`` if their channels fit the model, else a ValueError naming the fix: B-cos
    models take the 6-channel ``[x, 1-x]`` encoding, standard models 3 channels (the
    pipeline normalises those with the ImageNet mean/std when ``data.add_inverse`` is False)."""
    if images.shape[-1] != in_channels:
        raise ValueError(
            f"the pipeline gives {images.shape[-1]}-channel images but the model takes "
            f"{in_channels}; set config.data.add_inverse={in_channels == 6}"
        )
    return images


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the steps need besides the state; built once per run, never changed.

    Attributes:
      model_name, model_overrides: the zoo model and its ``models.create`` arguments.
      model: the Flax module built from them.
      in_channels, image_size: the model's input (NHWC, 6 channels for B-cos models).
      tx, schedule: the optax transformation and its learning rate per optimiser step.
      loss, aux_loss_weight: the training loss (``losses.LOSSES``) and the auxiliary head's weight.
      grad_accum_steps: sequential micro-batches per optimiser update.
      steps_per_epoch, total_steps: optimiser updates per epoch and in the run.
      use_ema, ema_decay, ema_every, ema_warmup_epochs: the EMA of the weights
        (``ema.update``; ``ema_decay`` already adjusted by ``ema.adjusted_decay``).
      mesh: keeps every micro-batch split over all devices; None without a mesh.
    """

    model_name: str
    model_overrides: Dict[str, Any]
    model: Any
    in_channels: int
    image_size: int
    tx: optax.GradientTransformation
    schedule: Callable[[jax.Array], jax.Array]
    loss: str
    aux_loss_weight: float
    grad_accum_steps: int
    steps_per_epoch: int
    total_steps: int
    use_ema: bool
    ema_decay: float
    ema_every: int
    ema_warmup_epochs: int
    mesh: Optional[Mesh]

    @classmethod
    def from_config(cls, config: Any, num_classes: int, num_train: int,
                    mesh: Optional[Mesh] = None) -> Setup:
        """The setup of a training config (``defaults.default_config()`` and a recipe's changes)
        for a dataset of ``num_classes`` classes and ``num_train`` training images."""
        overrides = model_overrides(config, num_classes)
        steps_per_epoch, total_steps = schedule_lengths(config, num_train)
        tx, schedule = optim.make_optimizer(config.optimizer, config.schedule, steps_per_epoch,
                                            total_steps)
        use_ema = bool(config.ema_decay)
        ema_decay = 0.0
        if use_ema:
            ema_decay = ema_lib.adjusted_decay(config.ema_decay, config.ema_every,
                                               config.batch_size, config.num_epochs)
        return cls(
            model_name=config.model_name, model_overrides=overrides,
            model=models.create(config.model_name, **overrides),
            in_channels=models.get_spec(config.model_name).in_channels,
            image_size=config.data.image_size, tx=tx, schedule=schedule, loss=config.loss,
            aux_loss_weight=config.aux_loss_weight, grad_accum_steps=config.grad_accum_steps,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, use_ema=use_ema,
            ema_decay=ema_decay, ema_every=config.ema_every,
            ema_warmup_epochs=config.ema_warmup_epochs, mesh=mesh)


# ---------------------------------------------------------------------------------------
# The pure functions.
# ---------------------------------------------------------------------------------------
def init(setup: Setup, rng: jax.Array) -> TrainState:
    """The state at step 0: the model initialised from ``rng``, the optimiser state, the EMA
    (a copy of the weights) when the run keeps one."""
    x = jnp.zeros((2, setup.image_size, setup.image_size, setup.in_channels), jnp.float32)
    variables = setup.model.init({"params": rng, "dropout": rng}, x, train=True)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = ema_count = None
    if setup.use_ema:
        ema = {"params": params, "batch_stats": batch_stats}
        ema_count = jnp.zeros((), jnp.int32)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=setup.tx.init(params), ema=ema, ema_count=ema_count)


def _loss_and_grads(setup: Setup, params, batch_stats, images, targets, rng):
    def loss_fn(params, batch_stats):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        out, mutated = setup.model.apply(
            variables, model_input(images, setup.in_channels), train=True,
            mutable=["batch_stats"], rngs={"dropout": rng})
        loss = losses.compute(setup.loss, out, targets, setup.aux_loss_weight)
        new_stats = mutated.get("batch_stats", batch_stats)
        return loss, (logits_of(out).astype(jnp.float32), new_stats)

    return jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)


def train_step(setup: Setup, state: TrainState, batch: Dict[str, jax.Array],
               rng: jax.Array) -> Tuple[TrainState, Dict[str, jax.Array]]:
    """One optimiser update on ``batch`` ({'image': [N, H, W, C], 'targets': [N, classes]}).

    The step's random key is ``fold_in(rng, state.step)``, so a resumed run draws the same
    keys. Returns the new state and scalar metrics: loss, top1/top5 (%, against the dominant
    class of mixed targets), lr, grad_norm and param_norm.
    """
    step = state.step
    rng = jax.random.fold_in(rng, step)
    params = state.params
    accum = setup.grad_accum_steps
    if accum == 1:
        (loss, (logits, batch_stats)), grads = _loss_and_grads(
            setup, params, state.batch_stats, batch["image"], batch["targets"], rng)
    else:
        # Micro-batch i takes rows i, i+accum, ... so every device keeps its share.
        def split(x):
            x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
            if setup.mesh is None:
                return x
            return jax.lax.with_sharding_constraint(
                x, NamedSharding(setup.mesh, P(None, sharding.BATCH_AXES)))

        micro = jax.tree.map(split, {"image": batch["image"], "targets": batch["targets"]})

        def body(carry, xs):
            g_acc, stats, l_acc = carry
            mb, i = xs
            (loss_i, (logits_i, stats)), g = _loss_and_grads(
                setup, params, stats, mb["image"], mb["targets"], jax.random.fold_in(rng, i))
            return (jax.tree.map(jnp.add, g_acc, g), stats, l_acc + loss_i), logits_i

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, batch_stats, loss), logits = jax.lax.scan(
            body, (zeros, state.batch_stats, jnp.zeros((), jnp.float32)),
            (micro, jnp.arange(accum)))
        grads = jax.tree.map(lambda g: g / accum, grads)
        loss = loss / accum
        logits = logits.swapaxes(0, 1).reshape(-1, logits.shape[-1])
    updates, opt_state = setup.tx.update(grads, state.opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_state = state.replace(step=step + 1, params=new_params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if setup.use_ema:
        # As the reference: params before this update, batch statistics after the forward.
        ema, ema_count = ema_lib.update(
            state.ema, state.ema_count, {"params": params, "batch_stats": batch_stats},
            step=step, steps_per_epoch=setup.steps_per_epoch, every=setup.ema_every, accum=accum,
            decay=setup.ema_decay, warmup_epochs=setup.ema_warmup_epochs)
        new_state = new_state.replace(ema=ema, ema_count=ema_count)
    labels = jnp.argmax(batch["targets"], axis=-1)  # mixed targets: the dominant class
    step_metrics = {
        "loss": loss,
        "top1": 100.0 * jnp.mean(metrics.topk_correct(logits, labels, 1)),
        "top5": 100.0 * jnp.mean(metrics.topk_correct(logits, labels, 5)),
        "lr": setup.schedule(step),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(new_params),
    }
    return new_state, step_metrics


def eval_step(setup: Setup, variables: Dict[str, Any],
              batch: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
    """Sums over an eval batch ({'image', 'label' [N] int, 'valid' [N] bool}): correct1,
    correct5, count (valid rows) and loss_sum, with the reference's test criterion (plain
    BCE, or CE for models trained with CE). Rows with ``valid`` False (padding) count nothing."""
    x = model_input(batch["image"], setup.in_channels)
    logits = logits_of(setup.model.apply(variables, x, train=False)).astype(jnp.float32)
    labels = batch["label"]
    valid = batch["valid"].astype(jnp.float32)
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    fn = losses.get("ce" if setup.loss == "ce" else "bce")
    per_example = jax.vmap(lambda lg, t: fn(lg[None], t[None]))(logits, onehot)
    return {
        "correct1": jnp.sum(metrics.topk_correct(logits, labels, 1) * valid),
        "correct5": jnp.sum(metrics.topk_correct(logits, labels, 5) * valid),
        "count": jnp.sum(valid),
        "loss_sum": jnp.sum(per_example * valid),
    }


# ---------------------------------------------------------------------------------------
# Compiled on a mesh.
# ---------------------------------------------------------------------------------------
class Jitted(NamedTuple):
    """The steps of ``setup`` compiled for a mesh (see ``jit_on_mesh``)."""

    init: Callable[[jax.Array], TrainState]
    train_step: Callable[..., Tuple[TrainState, Dict[str, jax.Array]]]
    eval_step: Callable[[Dict[str, Any], Dict[str, jax.Array]], Dict[str, jax.Array]]
    abstract_state: TrainState  # jax.ShapeDtypeStruct leaves with their shardings
    state_sharding: TrainState  # a NamedSharding per leaf
    batch_sharding: NamedSharding


def jit_on_mesh(setup: Setup, mesh: Mesh, rules: Sequence[Tuple[str, str]],
                fsdp_min_size: int) -> Jitted:
    """``init``, ``train_step`` and ``eval_step`` jitted with explicit shardings.

    The state is created directly with its final shardings (``sharding.state_shardings``
    with ``rules``; ``config.sharding_rules``, ``config.fsdp_min_size``) and donated to
    every train step; batches are split over all devices (dim 0); the metrics and eval sums
    come back replicated. ``train_step(state, batch, rng)`` takes the run's key ``rng``.
    """
    abstract = jax.eval_shape(functools.partial(init, setup), jax.random.key(0))
    state_sharding = sharding.state_shardings(abstract, mesh, rules, fsdp_min_size)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(sharding.BATCH_AXES))
    return Jitted(
        init=jax.jit(functools.partial(init, setup), out_shardings=state_sharding),
        train_step=jax.jit(
            functools.partial(train_step, setup),
            in_shardings=(state_sharding, {"image": batch_sharding, "targets": batch_sharding},
                          replicated),
            out_shardings=(state_sharding, replicated),
            donate_argnums=0),
        eval_step=jax.jit(functools.partial(eval_step, setup), out_shardings=replicated),
        abstract_state=jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
            state_sharding),
        state_sharding=state_sharding,
        batch_sharding=batch_sharding,
    )
