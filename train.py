"""Train and evaluate a B-cos (or standard) model from the zoo.

    python train.py --config configs/imagenet_bcos_final.py:resnet50 --workdir runs/r50 \\
        [--config.batch_size=256 --config.data.data_dir=... ...]

The config (``configs/*.py``, ``get_config(arg)`` -> plain values, every key and its default
in ``bcos_jax/training/defaults.py``) says everything: model, data, global batch size,
duration, loss, optimiser, schedule, EMA, mesh and sharding. A run resumes by itself from
the newest readable checkpoint in ``--workdir`` and ends bit-for-bit where an uninterrupted
run would (per-step rngs are ``fold_in(seed, step)``, the data order depends only on the
step, the data iterator state is checkpointed).

Multi-host: run the same command on every host with --distributed (TPU pods, SLURM: JAX
detects the cluster), or pass --coordinator_address/--num_processes/--process_id. Without
accelerators, ``--aot_topology v5e:4x4`` compiles the sharded train step for that TPU
topology and prints its per-chip memory instead of training (needs ``pip install 'jax[tpu]'``).

The file reads top to bottom: flags, mesh, input, model and optimiser, sharding and update
step, checkpoint, loop, eval. The pieces live in ``bcos_jax.training``: the train state
(``state.TrainState``) and the pure ``init`` / ``train_step`` / ``eval_step`` in ``step``.
Fine-tuning (``config.init_from``, ``config.freeze``, ``data.name='folder:PATH'``):
``bcos_jax.training.transfer`` and docs/finetuning.md.
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
from absl import app, flags, logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from bcos_jax import data, hub, jsonio
from bcos_jax.training import checkpoint as ckpt_lib
from bcos_jax.training import defaults as defaults_lib
from bcos_jax.training import evaluate as eval_lib
from bcos_jax.training import metrics as metrics_lib
from bcos_jax.training import sharding, transfer
from bcos_jax.training import step as step_lib

config_flags.DEFINE_config_file("config", None, "Training config file (configs/NAME.py[:ARG]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, summary.json, pictures.")
flags.DEFINE_string("aot_topology", None, "Compile the train step for this TPU topology (e.g. "
                    "v5e:4x4, v4:2x2x2) on this machine, print its per-chip memory, and exit.")
flags.DEFINE_integer("aot_num_slices", 1, "Number of slices for --aot_topology (multi-slice pods).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 (multi-process runs off TPU).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs off TPU).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs off TPU).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection "
                  "(multi-host TPU pods, SLURM); see "
                  "bcos_jax.training.sharding.initialize_distributed.")

IMAGENET_INFO = dict(num_classes=1000, num_train=1281167, num_eval=50000)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the run stops and keeps its last good checkpoint."""


def _dataset_info(config):
    try:
        return data.dataset_info(config.data)
    except Exception:
        if config.data.name != "imagenet2012":
            raise
        return ml_collections.ConfigDict(dict(IMAGENET_INFO, image_size=config.data.image_size))


def _interval(steps: int, epochs: float, steps_per_epoch: int) -> int:
    """An interval in steps: ``steps`` when > 0, else ``epochs`` (0: never)."""
    if steps:
        return int(steps)
    return max(1, int(round(epochs * steps_per_epoch))) if epochs else 0


def _check_finite(host, first_step: int, ckpt) -> None:
    """NonFiniteLossError naming the first step whose loss or parameters are not finite."""
    bad = [first_step + i for i, h in enumerate(host)
           if not (np.isfinite(h["loss"]) and np.isfinite(h["param_norm"]))]
    if bad:
        ckpt.wait()
        h = host[bad[0] - first_step]
        raise NonFiniteLossError(
            f"non-finite training loss or parameters at step {bad[0]} (loss {float(h['loss'])}, "
            f"parameter norm {float(h['param_norm'])}, lr {float(h['lr']):.3g}); stopping. The "
            f"last good checkpoint is step {max(ckpt.all_steps(), default=None)} in "
            f"{ckpt.directory}; lower the learning rate or check the data, then rerun to resume.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
    """Train (resuming from ``workdir`` if possible), evaluate, write summary.json; returns it.

    ``config`` is completed from ``defaults.default_config()`` (keys it lacks take the default).
    """
    config = defaults_lib.complete(config)
    jax.config.update("jax_threefry_partitionable", True)  # rngs independent of the sharding
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0

    # =================================================================================
    # Mesh: every device of every process; the global batch is split over all of them.
    # =================================================================================
    mesh = sharding.make_mesh(config.mesh, config.dcn_mesh)
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    accum = config.grad_accum_steps
    if config.batch_size % accum or (config.batch_size // accum) % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must split into grad_accum_steps={accum} "
                         f"micro-batches each divisible by the {mesh.size} devices")
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    logging.info("mesh %s, %d processes, global batch %d (%d per process)",
                 dict(mesh.shape), jax.process_count(), config.batch_size, local_batch)

    # =================================================================================
    # Input: each process reads its rows of every global batch.
    # =================================================================================
    info = data.dataset_info(config.data)
    if config.localisation and not data.sources.is_synthetic(config.data):
        # Said now rather than after the whole run, when the score would be computed.
        raise ValueError(f"config.localisation needs object masks, which only the synthetic "
                         f"datasets have, not {config.data.name!r}: set "
                         "--config.localisation=False")
    train_ds = data.make_dataset(config.data, config.data.train_split, train=True,
                                 global_batch_size=config.batch_size, seed=config.seed)
    eval_ds = data.make_dataset(config.data, config.data.eval_split, train=False,
                                global_batch_size=config.eval_batch_size, seed=config.seed)
    train_iter = iter(train_ds)
    class_names = data.sources.class_names(config.data)
    if is_main and class_names is not None:
        jsonio.write_json(os.path.join(workdir, "classes.json"), list(class_names))
    shown_names = eval_lib.display_class_names(class_names, info.num_classes)

    # =================================================================================
    # Model and optimiser (bcos_jax.training.step.Setup: the static half of training).
    # =================================================================================
    setup = step_lib.Setup.from_config(config, info.num_classes, info.num_train, mesh)
    freeze_plan = None
    if config.freeze:  # optax.multi_transform; fully frozen norm layers in inference mode
        setup, freeze_plan = transfer.apply_freeze(setup, config.freeze)
    if is_main:
        hub.write_model_json(workdir, setup.model_name, setup.model_overrides)
    total, spe = setup.total_steps, setup.steps_per_epoch

    # =================================================================================
    # Sharding and update step: the state is created with its final shardings (rules on
    # parameter paths) and donated to every jitted step.
    # =================================================================================
    steps = step_lib.jit_on_mesh(setup, mesh, config.sharding_rules, config.fsdp_min_size)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    replicated = NamedSharding(mesh, P())

    # =================================================================================
    # Checkpoint: resume from the newest readable one (the state and the data position).
    # =================================================================================
    ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = ckpt.restore(steps.abstract_state)
    init_report = None  # what init_from took over (None: not applied in this invocation)
    if restored is not None:
        start_step, state, data_state = restored
        train_iter.set_state(data_state)
        logging.info("resumed from step %d in %s", start_step, ckpt.directory)
        if config.init_from:
            logging.warning("resumed from the run's own checkpoint: init_from=%r is not applied "
                            "again", config.init_from)
    else:
        start_step, state = 0, steps.init(init_rng)
        if config.init_from:  # the weights of another run or model; the optimiser starts afresh
            state, init_report = transfer.apply_init_from(
                setup, state, steps.state_sharding, config.init_from, config.data.image_size)
    ckpt_every = _interval(config.checkpoint_every_steps, config.checkpoint_every_epochs, spe)
    eval_every = _interval(config.eval_every_steps, config.eval_every_epochs, spe)
    explain_every = _interval(config.explain_every_steps, config.explain_every_epochs, spe)
    ckpt_every, eval_every = ckpt_every or total, eval_every or total

    writer = metrics_lib.Writer(workdir)
    bar = metrics_lib.ProgressBar(total, initial=start_step)
    bar.write(f"{config.model_name}: {total} steps ({spe}/epoch), global batch "
              f"{config.batch_size}, mesh {dict(mesh.shape)}, start at step {start_step}")

    # Fixed pictures for the explanation logs: the first eval images of process 0.
    explain_step = eval_lib.make_explain_step(setup.model, setup.in_channels, mesh)
    first = next(iter(eval_ds))
    n_pics = config.num_explain_images
    pics = {"image": np.asarray(first["image"][:n_pics]),
            "label": np.asarray(first["label"][:n_pics])}
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        pics = multihost_utils.broadcast_one_to_all(pics)
    pics_dev = jax.device_put(pics, replicated)

    evals = []  # every evaluation of this invocation: summary.json's 'evals'

    def run_eval(step: int) -> Dict[str, float]:
        out = eval_lib.evaluate(steps.eval_step, state.variables(), iter(eval_ds), mesh)
        out = {f"val_{k}": v for k, v in out.items()}
        if setup.use_ema:
            ema = eval_lib.evaluate(steps.eval_step, state.variables(ema=True), iter(eval_ds), mesh)
            out.update({f"val_ema_{k}": v for k, v in ema.items()})
        writer.scalars(step, {k: v for k, v in out.items() if not k.endswith("count")})
        evals.append({"step": step, **out})
        return out

    def explanations():
        return jax.device_get(explain_step(state.variables(), pics_dev["image"], pics_dev["label"]))

    # Stop cleanly (checkpoint, exit) on SIGTERM, e.g. a preempted VM.
    stop = {"now": False}
    try:
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    except ValueError:  # not the main thread: no handler, the run is simply killed
        pass

    # =================================================================================
    # Loop.
    # =================================================================================
    pending = []  # device metrics since the last host check
    last_val: Dict[str, float] = {}
    t_last, n_last = time.time(), start_step
    train_means: Dict[str, float] = {}
    for step in range(start_step, total):
        batch = next(train_iter)
        gb = sharding.make_global_batch({k: batch[k] for k in ("image", "targets")}, mesh)
        state, m = steps.train_step(state, gb, train_rng)
        pending.append(m)
        done = step + 1
        is_last = done == total
        do_eval = done % eval_every == 0 or is_last
        do_ckpt = done % ckpt_every == 0 or is_last or stop["now"]
        if done % config.log_every_steps == 0 or do_eval or do_ckpt:
            # Host check of every step since the last one: a non-finite loss stops the run
            # before anything is checkpointed, so the last checkpoint stays good.
            host = jax.device_get(pending)
            pending = []
            try:
                _check_finite(host, n_last + 1, ckpt)
            except NonFiniteLossError:
                bar.close()
                writer.close()
                ckpt.close()
                raise
            dt = time.time() - t_last
            train_means = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
            train_means["images_per_s"] = (done - n_last) * config.batch_size / max(dt, 1e-9)
            train_means["epoch"] = done / spe
            writer.scalars(done, {f"train/{k}": v for k, v in train_means.items()})
            t_last, n_last = time.time(), done
        # No loss and lr on the bar until the first host check has them.
        shown = {k: train_means[k] for k in ("loss", "lr") if k in train_means}
        bar.update(1, **shown)
        if do_eval:
            last_val = run_eval(done)
            bar.write(f"step {done}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in last_val.items() if "count" not in k))
        if explain_every and (done % explain_every == 0 or is_last) and setup.in_channels == 6:
            ex = explanations()
            if is_main:
                writer.image(done, "explanations", eval_lib.explanation_rows(
                    ex, np.asarray(pics["image"]), smooth=config.explain_smooth))
                writer.text(done, "explanations/classes",
                            eval_lib.explanation_captions(ex, shown_names))
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

    # =================================================================================
    # Eval: the final numbers (also when the run was already complete).
    # =================================================================================
    done = int(state.step)
    if not last_val:
        last_val = run_eval(done)
    summary: Dict[str, Any] = {
        "model": config.model_name, "steps": done, "epochs": done / spe,
        "global_batch_size": config.batch_size, "devices": mesh.size,
        "processes": jax.process_count(), **last_val, "train": train_means,
        "best_step": ckpt.best_step(), "accuracy": last_val["val_top1"], "evals": evals,
        **transfer.summary_fields(freeze_plan, init_report, config.init_from),
    }

    # Explanation pictures; localisation on datasets with object masks.
    if setup.in_channels == 6:
        from bcos_jax import visualize

        ex = explanations()
        if is_main:
            imgs = np.asarray(pics["image"])
            expl = [visualize.gradient_to_image(img, w, smooth=config.explain_smooth)
                    for img, w in zip(imgs, ex.weights)]
            summary["explanations_png"] = visualize.save_grid(
                os.path.join(workdir, "explanations.png"), list(imgs), expl,
                list(ex.contributions), scale=max(1, 128 // imgs.shape[1]))
    if config.localisation:
        loc = eval_lib.localisation(setup.model, state.variables(), iter(eval_ds), mesh,
                                    setup.in_channels)
        summary.update(localisation=loc["localisation"],
                       localisation_uniform=loc["localisation_uniform"])
    ckpt.close()
    writer.close()
    metrics_lib.write_summary(workdir, summary)
    loc_msg = ""
    if "localisation" in summary:
        loc_msg = (f", localisation {summary['localisation']:.3f} "
                   f"(uniform {summary['localisation_uniform']:.3f})")
    bar.write(f"done: val top-1 {summary['accuracy']:.2f}%{loc_msg}; "
              f"summary in {workdir}/summary.json")
    return summary


# =======================================================================================
# Ahead-of-time compilation for a TPU topology (no TPU needed).
# =======================================================================================
def aot_compile(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1,
                info: Any = None) -> Dict[str, Any]:
    """Compile the train step for a described TPU slice; print and return per-chip memory."""
    from bcos_jax.training import aot

    config = defaults_lib.complete(config)
    jax.config.update("jax_threefry_partitionable", True)
    devices, chip = aot.topology_devices(topology, num_slices)
    mesh = sharding.make_mesh(config.mesh, config.dcn_mesh, devices)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} "
                         f"chips of {topology}")
    info = info or _dataset_info(config)
    setup = step_lib.Setup.from_config(config, info.num_classes, info.num_train, mesh)
    if config.freeze:
        setup, _ = transfer.apply_freeze(setup, config.freeze)
    steps = step_lib.jit_on_mesh(setup, mesh, config.sharding_rules, config.fsdp_min_size)
    s, n = config.data.image_size, config.batch_size
    batch = {
        "image": jax.ShapeDtypeStruct((n, s, s, setup.in_channels), jnp.float32,
                                      sharding=steps.batch_sharding),
        "targets": jax.ShapeDtypeStruct((n, info.num_classes), jnp.float32,
                                        sharding=steps.batch_sharding),
    }
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P()))
    return aot.compile_and_report(steps.train_step, (steps.abstract_state, batch, rng), chip=chip,
                                  topology=topology, mesh_shape=dict(mesh.shape),
                                  config_name=config.model_name, global_batch=config.batch_size)


def _flags_error(message: str) -> None:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
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
