"""Train and evaluate a B-cos (or standard) model from the zoo.

    python train.py --config configs/imagenet_bcos_final.py:resnet50 --workdir runs/r50 \\
        [--config.batch_size=256 --config.data.data_dir=... ...]

The config (``configs/*.py``, ``get_config(arg)`` -> plain values) says everything: model,
data, global batch size, duration, loss, optimiser, schedule, EMA, mesh and sharding.
A run resumes by itself from the newest readable checkpoint in ``--workdir`` and ends
bit-for-bit where an uninterrupted run would (per-step rngs are ``fold_in(seed, step)``, the
data order depends only on the step, the data iterator state is checkpointed).

Multi-host: run the same command on every host with --distributed (TPU pods, SLURM: JAX
detects the cluster), or pass --coordinator_address/--num_processes/--process_id. Without accelerators,
``--aot_topology v5e:4x4`` compiles the sharded train step for that TPU topology and prints
its per-chip memory instead of training (needs ``pip install 'jax[tpu]'``).

The file reads top to bottom: flags, mesh, input, model and optimiser, sharding, update
step, checkpoint, loop, eval, end of run. The pieces live in ``bcos_jax.training``.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from bcos_jax import data, hub, models
from bcos_jax.explain import logits_of
from bcos_jax.training import checkpoint as ckpt_lib
from bcos_jax.training import defaults as defaults_lib
from bcos_jax.training import ema as ema_lib
from bcos_jax.training import evaluate as eval_lib
from bcos_jax.training import losses, optim, sharding
from bcos_jax.training import metrics as metrics_lib

config_flags.DEFINE_config_file("config", None, "Training config file (configs/NAME.py[:ARG]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, summary.json, pictures.")
flags.DEFINE_string("aot_topology", None, "Compile the train step for this TPU topology (e.g. v5e:4x4, "
                    "v4:2x2x2) on this machine, print its per-chip memory, and exit.")
flags.DEFINE_integer("aot_num_slices", 1, "Number of slices for --aot_topology (multi-slice pods).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs off TPU).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs off TPU).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs off TPU).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection "
                  "(multi-host TPU pods, SLURM); see bcos_jax.training.sharding.initialize_distributed.")

IMAGENET_INFO = dict(num_classes=1000, num_train=1281167, num_eval=50000)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the run stops and keeps its last good checkpoint."""


# =======================================================================================
# Model and optimiser.
# =======================================================================================
def model_overrides(config: ml_collections.ConfigDict, num_classes: int) -> Dict[str, Any]:
    """Overrides for ``models.create``: the config's ``model`` dict, classes, compute dtype."""
    overrides = dict(config.model.to_dict() if hasattr(config.model, "to_dict") else config.model)
    overrides.setdefault("num_classes", num_classes)
    if config.get("remat", False):
        overrides["remat"] = True  # models.create: every B-cos layer rematerialised
    if config.get("compute_dtype", "float32") != "float32":
        # Mixed precision: compute in bf16, params and norm statistics stay float32.
        overrides["dtype"] = jnp.dtype(config.compute_dtype)
    return overrides


def schedule_lengths(config, num_train: int):
    """(steps_per_epoch, total_steps); an epoch drops the last incomplete batch."""
    steps_per_epoch = max(1, num_train // config.batch_size)
    total = config.get("num_steps") or 0
    if not total:
        total = int(round(config.num_epochs * steps_per_epoch))
    return steps_per_epoch, int(total)


def build(config: ml_collections.ConfigDict, mesh, info) -> ml_collections.ConfigDict:
    """Everything the loop (and the AOT compile) needs, nothing run yet."""
    spec = models.get_spec(config.model_name)
    overrides = model_overrides(config, info.num_classes)
    model = models.create(config.model_name, **overrides)
    steps_per_epoch, total_steps = schedule_lengths(config, info.num_train)
    tx, schedule = optim.make_optimizer(config.optimizer, config.schedule, steps_per_epoch, total_steps)
    use_ema = bool(config.get("ema_decay"))
    image_size = config.data.image_size
    in_channels = spec.in_channels

    def init_state(rng):
        x = jnp.zeros((2, image_size, image_size, in_channels), jnp.float32)
        variables = model.init({"params": rng, "dropout": rng}, x, train=True)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": batch_stats,
                 "opt_state": tx.init(params)}
        if use_ema:
            state["ema"] = {"params": params, "batch_stats": batch_stats}
            state["ema_count"] = jnp.zeros((), jnp.int32)
        return state

    # ---- Sharding: the state is created directly with its final shardings. ----
    rng_abstract = jax.eval_shape(lambda: jax.random.key(0))
    abstract = jax.eval_shape(init_state, rng_abstract)
    state_sharding = sharding.state_shardings(abstract, mesh, config.get("sharding_rules", ()),
                                              config.get("fsdp_min_size", 2**14))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(sharding.BATCH_AXES))
    init = jax.jit(init_state, out_shardings=state_sharding)

    ema_decay = 0.0
    if use_ema:
        ema_decay = ema_lib.adjusted_decay(config.ema_decay, config.ema_every, config.batch_size,
                                           config.num_epochs)

    # ---- Update step: one jitted function; the state is donated. ----
    accum = config.get("grad_accum_steps", 1)

    def loss_fn(params, batch_stats, images, targets, rng):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        out, mutated = model.apply(variables, eval_lib.model_input(images, in_channels), train=True,
                                   mutable=["batch_stats"], rngs={"dropout": rng})
        loss = losses.compute(config.loss, out, targets, config.get("aux_loss_weight", 1.0))
        return loss, (logits_of(out).astype(jnp.float32), mutated.get("batch_stats", batch_stats))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, batch, rng):
        step = state["step"]
        rng = jax.random.fold_in(rng, step)
        params = state["params"]
        if accum == 1:
            (loss, (logits, batch_stats)), grads = grad_fn(
                params, state["batch_stats"], batch["image"], batch["targets"], rng)
        else:
            # Micro-batch i takes rows i, i+accum, ... so every device keeps its share.
            def split(x):
                x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
                return jax.lax.with_sharding_constraint(
                    x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))

            micro = jax.tree.map(split, {"image": batch["image"], "targets": batch["targets"]})

            def body(carry, xs):
                g_acc, bs, l_acc = carry
                mb, i = xs
                (l, (lg, bs)), g = grad_fn(params, bs, mb["image"], mb["targets"], jax.random.fold_in(rng, i))
                return (jax.tree.map(jnp.add, g_acc, g), bs, l_acc + l), lg

            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, batch_stats, loss), logits = jax.lax.scan(
                body, (zeros, state["batch_stats"], jnp.zeros((), jnp.float32)), (micro, jnp.arange(accum)))
            grads = jax.tree.map(lambda g: g / accum, grads)
            loss = loss / accum
            logits = logits.swapaxes(0, 1).reshape(-1, logits.shape[-1])
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        new_state = dict(state, step=step + 1, params=new_params, batch_stats=batch_stats, opt_state=opt_state)
        if use_ema:
            # As the reference: params before this update, batch statistics after the forward.
            new_state["ema"], new_state["ema_count"] = ema_lib.update(
                state["ema"], state["ema_count"], {"params": params, "batch_stats": batch_stats},
                step=step, steps_per_epoch=steps_per_epoch, every=config.ema_every, accum=accum,
                decay=ema_decay, warmup_epochs=config.get("ema_warmup_epochs", 0))
        labels = jnp.argmax(batch["targets"], axis=-1)  # mixed targets: the dominant class
        step_metrics = {
            "loss": loss,
            "top1": 100.0 * jnp.mean(metrics_lib.topk_correct(logits, labels, 1)),
            "top5": 100.0 * jnp.mean(metrics_lib.topk_correct(logits, labels, 5)),
            "lr": schedule(step),
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(new_params),
        }
        return new_state, step_metrics

    train_step = jax.jit(
        train_step,
        in_shardings=(state_sharding, {"image": batch_sharding, "targets": batch_sharding}, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    return ml_collections.ConfigDict(dict(
        model=model, spec=spec, overrides=overrides, tx=tx, schedule=schedule, init=init,
        abstract_state=abstract, state_sharding=state_sharding, train_step=train_step,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, in_channels=in_channels,
        batch_sharding=batch_sharding, use_ema=use_ema), type_safe=False, convert_dict=False)


def _dataset_info(config):
    try:
        return data.dataset_info(config.data)
    except Exception:  # noqa: BLE001 - e.g. AOT compiles without the data on disk
        if config.data.name != "imagenet2012":
            raise
        return ml_collections.ConfigDict(dict(IMAGENET_INFO, image_size=config.data.image_size))


def _interval(config, steps_per_epoch: int, key: str) -> int:
    """An interval in steps from ``key_steps`` (wins when > 0) or ``key_epochs``."""
    steps = config.get(f"{key}_steps") or 0
    if steps:
        return int(steps)
    epochs = config.get(f"{key}_epochs") or 0
    return max(1, int(round(epochs * steps_per_epoch))) if epochs else 0


# =======================================================================================
# The run.
# =======================================================================================
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
    """Train (resuming from ``workdir`` if possible), evaluate, write summary.json; returns it."""
    jax.config.update("jax_threefry_partitionable", True)  # rngs independent of the sharding
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0

    # ---- Mesh. ----
    mesh = sharding.make_mesh(config.mesh, config.get("dcn_mesh"))
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    accum = config.get("grad_accum_steps", 1)
    if config.batch_size % accum or (config.batch_size // accum) % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must split into grad_accum_steps={accum} "
                         f"micro-batches each divisible by the {mesh.size} devices")
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    logging.info("mesh %s, %d processes, global batch %d (%d per process)",
                 dict(mesh.shape), jax.process_count(), config.batch_size, local_batch)

    # ---- Input. ----
    info = data.dataset_info(config.data)
    train_ds = data.make_dataset(config.data, config.data.train_split, train=True,
                                 global_batch_size=config.batch_size, seed=config.seed)
    eval_ds = data.make_dataset(config.data, config.data.eval_split, train=False,
                                global_batch_size=config.eval_batch_size, seed=config.seed)
    train_iter = iter(train_ds)

    # ---- Model, optimiser, sharded state, update step. ----
    b = build(config, mesh, info)
    if is_main:
        hub.write_model_json(workdir, config.model_name, b.overrides)
    eval_step = eval_lib.make_eval_step(b.model, mesh, b.in_channels, config.loss)
    rng = jax.random.key(config.seed)
    init_rng, train_rng = jax.random.split(rng)

    # ---- Checkpoint: resume from the newest readable one. ----
    ckpt = ckpt_lib.Checkpointer(workdir, keep=config.get("keep_checkpoints", 3))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            b.abstract_state, b.state_sharding)
    restored = ckpt.restore(abstract)
    if restored is not None:
        start_step, state, data_state = restored
        train_iter.set_state(data_state)
        logging.info("resumed from step %d in %s", start_step, ckpt.directory)
    else:
        start_step, state = 0, b.init(init_rng)
    total = b.total_steps
    spe = b.steps_per_epoch
    log_every = config.get("log_every_steps", 50)
    ckpt_every = _interval(config, spe, "checkpoint_every") or total
    eval_every = _interval(config, spe, "eval_every") or total
    explain_every = _interval(config, spe, "explain_every")

    writer = metrics_lib.Writer(workdir)
    bar = metrics_lib.ProgressBar(total, initial=start_step)
    bar.write(f"{config.model_name}: {total} steps ({spe}/epoch), global batch {config.batch_size}, "
              f"mesh {dict(mesh.shape)}, start at step {start_step}")

    # Fixed pictures for the explanation logs: the first eval images of process 0.
    explain_step = eval_lib.make_explain_step(b.model, b.in_channels, mesh)
    n_pics = config.get("num_explain_images", 8)
    first = next(iter(eval_ds))
    pics = {"image": np.asarray(first["image"][:n_pics]), "label": np.asarray(first["label"][:n_pics])}
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        pics = multihost_utils.broadcast_one_to_all(pics)
    replicated = NamedSharding(mesh, P())
    pics_dev = jax.device_put(pics, replicated)

    def eval_variables(use_ema: bool):
        src = state["ema"] if use_ema else state
        v = {"params": src["params"]}
        if src["batch_stats"]:
            v["batch_stats"] = src["batch_stats"]
        return v

    def run_eval(step: int) -> Dict[str, float]:
        out = {f"val_{k}": v for k, v in eval_lib.evaluate(eval_step, eval_variables(False), iter(eval_ds), mesh).items()}
        if b.use_ema:
            ema = eval_lib.evaluate(eval_step, eval_variables(True), iter(eval_ds), mesh)
            out.update({f"val_ema_{k}": v for k, v in ema.items()})
        writer.scalars(step, {k: v for k, v in out.items() if not k.endswith("count")})
        return out

    def log_explanations(step: int):
        if b.spec.in_channels != 6:
            return
        ex = jax.device_get(explain_step(eval_variables(False), pics_dev["image"], pics_dev["label"]))
        if is_main:
            writer.image(step, "explanations", eval_lib.explanation_rows(
                ex, np.asarray(pics["image"]), smooth=config.get("explain_smooth", 3)))

    # Stop cleanly (checkpoint, exit) on SIGTERM, e.g. a preempted VM.
    stop = {"now": False}
    try:
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    except ValueError:  # not the main thread: no handler, the run is simply killed
        pass

    # ---- Loop. ----
    pending = []  # device metrics since the last host check
    last_val: Dict[str, float] = {}
    t_last, n_last = time.time(), start_step
    train_means: Dict[str, float] = {}
    for step in range(start_step, total):
        batch = next(train_iter)
        gb = sharding.make_global_batch({"image": batch["image"], "targets": batch["targets"]}, mesh)
        state, m = b.train_step(state, gb, train_rng)
        pending.append(m)
        done = step + 1
        is_last = done == total
        do_eval = done % eval_every == 0 or is_last
        do_ckpt = done % ckpt_every == 0 or is_last or stop["now"]
        if done % log_every == 0 or do_eval or do_ckpt:
            # Host check of every step since the last one: a non-finite loss stops the run
            # before anything is checkpointed, so the last checkpoint stays good.
            host = jax.device_get(pending)
            pending = []
            bad = [n_last + i + 1 for i, h in enumerate(host)
                   if not (np.isfinite(h["loss"]) and np.isfinite(h["param_norm"]))]
            if bad:
                ckpt.wait()
                h = host[bad[0] - n_last - 1]
                msg = (f"non-finite training loss or parameters at step {bad[0]} (loss {float(h['loss'])}, "
                       f"parameter norm {float(h['param_norm'])}, lr {float(h['lr']):.3g}); "
                       f"stopping. The last good checkpoint is step {max(ckpt.all_steps(), default=None)} "
                       f"in {ckpt.directory}; lower the learning rate or check the data, then rerun to resume.")
                bar.close()
                writer.close()
                ckpt.close()
                raise NonFiniteLossError(msg)
            dt = time.time() - t_last
            train_means = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
            train_means["images_per_s"] = (done - n_last) * config.batch_size / max(dt, 1e-9)
            train_means["epoch"] = done / spe
            writer.scalars(done, {f"train/{k}": v for k, v in train_means.items()})
            t_last, n_last = time.time(), done
        bar.update(1, loss=train_means.get("loss", float("nan")), lr=train_means.get("lr", float("nan")))
        if do_eval:
            last_val = run_eval(done)
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_val.items() if "count" not in k))
        if explain_every and (done % explain_every == 0 or is_last):
            log_explanations(done)
        if do_ckpt:
            ckpt.save(done, state, train_iter.get_state(),
                      metrics={"val_top1": last_val["val_top1"]} if do_eval else None)
        if stop["now"] and not is_last:
            bar.write(f"SIGTERM: checkpointed step {done}; rerun the same command to resume")
            ckpt.close()
            writer.close()
            bar.close()
            return {"stopped_at": done}
    bar.close()
    ckpt.wait()

    # ---- Eval: the final numbers (also when the run was already complete). ----
    if not last_val:
        last_val = run_eval(int(state["step"]))
    summary: Dict[str, Any] = {
        "model": config.model_name, "steps": int(state["step"]), "epochs": int(state["step"]) / spe,
        "global_batch_size": config.batch_size, "devices": mesh.size, "processes": jax.process_count(),
        **{k: v for k, v in last_val.items()},
        "train": train_means, "best_step": ckpt.best_step(),
    }
    summary["accuracy"] = last_val["val_top1"]

    # ---- End of run: explanation pictures, localisation on datasets with masks. ----
    if b.spec.in_channels == 6:
        from bcos_jax import visualize

        ex = jax.device_get(explain_step(eval_variables(False), pics_dev["image"], pics_dev["label"]))
        if is_main:
            imgs = np.asarray(pics["image"])
            expl = [visualize.gradient_to_image(imgs[i], ex.weights[i], smooth=config.get("explain_smooth", 3))
                    for i in range(len(imgs))]
            summary["explanations_png"] = visualize.save_grid(
                os.path.join(workdir, "explanations.png"), list(imgs), expl, list(ex.contributions),
                scale=max(1, 128 // imgs.shape[1]))
    if config.get("localisation", False):
        loc = eval_lib.localisation(b.model, eval_variables(False), iter(eval_ds), mesh, b.in_channels)
        summary.update(localisation=loc["localisation"], localisation_uniform=loc["localisation_uniform"])
    ckpt.close()
    writer.close()
    metrics_lib.write_summary(workdir, summary)
    bar.write(f"done: val top-1 {summary['accuracy']:.2f}%"
              + (f", localisation {summary['localisation']:.3f} (uniform {summary['localisation_uniform']:.3f})"
                 if "localisation" in summary else "") + f"; summary in {workdir}/summary.json")
    return summary


# =======================================================================================
# Ahead-of-time compilation for a TPU topology (no TPU needed).
# =======================================================================================
def aot_compile(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1,
                info: Any = None) -> Dict[str, Any]:
    """Compile the train step for a described TPU slice; print and return per-chip memory."""
    from bcos_jax.training import aot

    jax.config.update("jax_threefry_partitionable", True)
    devices, chip = aot.topology_devices(topology, num_slices)
    mesh = sharding.make_mesh(config.mesh, config.get("dcn_mesh"), devices)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} chips of {topology}")
    info = info or _dataset_info(config)
    b = build(config, mesh, info)
    s = config.data.image_size
    n = config.batch_size
    batch = {
        "image": jax.ShapeDtypeStruct((n, s, s, b.in_channels), jnp.float32, sharding=b.batch_sharding),
        "targets": jax.ShapeDtypeStruct((n, info.num_classes), jnp.float32, sharding=b.batch_sharding),
    }
    state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                         b.abstract_state, b.state_sharding)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P()))
    return aot.compile_and_report(b.train_step, (state, batch, rng), chip=chip, topology=topology,
                                  mesh_shape=dict(mesh.shape), config_name=config.model_name,
                                  global_batch=config.batch_size)


def _flags_error(message: str) -> None:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def parse_flags(argv):
    """absl's flag parsing, but a bad --config is one line naming the problem and the fix
    (exit status 1), not a traceback: a missing config file (close names suggested), a
    failing get_config, an unknown --config.KEY (close keys suggested), an unknown model
    or model override (``defaults_lib.check_command_line`` / ``check_model``)."""
    try:
        expanded = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    except flags.Error:
        expanded = None  # absl reports a bad --flagfile itself below
    if expanded is not None:
        try:
            defaults_lib.check_command_line(expanded)
        except ValueError as e:
            _flags_error(str(e))
    rest = app.parse_flags_with_usage(argv)
    if flags.FLAGS["config"].present:
        try:
            defaults_lib.check_model(flags.FLAGS.config)
        except ValueError as e:
            _flags_error(str(e))
    return rest


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; -v 0 shows it
    config = flags.FLAGS.config
    if flags.FLAGS.aot_topology:
        aot_compile(config, flags.FLAGS.aot_topology, flags.FLAGS.aot_num_slices)
        return
    if not flags.FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    sharding.initialize_distributed(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                                    flags.FLAGS.process_id, force=flags.FLAGS.distributed)
    train_and_evaluate(config, flags.FLAGS.workdir)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=parse_flags)
