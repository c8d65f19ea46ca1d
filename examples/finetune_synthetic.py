"""Transfer, offline: the quickstart model fine-tuned on the second synthetic task.

    python examples/finetune_synthetic.py --workdir runs/transfer [--source runs/quickstart]

1. The source: ``--source`` (a quickstart workdir or ``save_model`` directory), else the
   quickstart trained here with ``configs/quickstart.py`` (into WORKDIR/quickstart; an
   existing complete run there is reused).
2. Three runs of ``train.py`` on 'quickstart2' (five classes the source never saw, drawn by
   the same generator), the same steps, data and evaluation schedule each:
   * scratch  — ``configs/finetune.py:quickstart2,scratch``: a fresh model;
   * finetune — ``configs/finetune.py:quickstart2`` with ``init_from`` the source: every
     weight trains, the logit layer (6 -> 5 classes) re-initialised;
   * probe    — ``configs/finetune.py:quickstart2,probe``: ``init_from`` the source and
     everything but the logit layer frozen (norm layers in inference mode).
3. A table: final validation top-1, the steps each run needed to reach the from-scratch
   run's final accuracy (evaluated every ``--eval_every`` steps) and 80 % / 90 % (the
   head start), and the localisation of
   its explanations (share of the positive contribution on the object; 'uniform' is the
   object's area, what an explanation spread evenly would score). Written to
   WORKDIR/transfer.json and printed as Markdown.

Everything goes through ``train.py``'s ``train_and_evaluate`` (the runs resume like any
other: rerunning the command continues or reuses them).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("scratch", "finetune", "probe")
MILESTONES = (80.0, 90.0)  # fixed accuracies whose steps the table also reports (the head start)


def _load(relpath: str, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def finetune_config(mode: str, source: str, steps: int, eval_every: int, num_train: int,
                    lr: Optional[float] = None):
    """The ``configs/finetune.py:quickstart2[,mode]`` config, run for ``steps`` steps on
    ``num_train`` training images (``lr``: the recipe's if None)."""
    arg = "quickstart2" if mode == "finetune" else f"quickstart2,{mode}"
    c = _load("configs/finetune.py", "bcos_finetune_config").get_config(arg)
    if mode != "scratch":
        c.init_from = os.path.abspath(source)
    if lr:
        c.optimizer.lr = lr
    c.data.num_train = num_train
    c.num_steps = steps
    c.eval_every_steps = eval_every
    c.checkpoint_every_steps = steps
    c.explain_every_epochs = 0.0
    return c


def steps_to(evals: List[Dict[str, float]], target: float) -> Optional[int]:
    """The first evaluated step whose validation top-1 reaches ``target`` (None: never)."""
    return next((int(e["step"]) for e in evals if e["val_top1"] >= target - 1e-9), None)


def _finished(workdir: str, steps: int) -> Optional[Dict[str, Any]]:
    """The summary of a complete earlier run in ``workdir`` with its evaluations, if any."""
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        s = json.load(f)
    return s if s.get("steps") == steps and s.get("evals") else None


def run(workdir: str, source: Optional[str], steps: int, eval_every: int, num_train: int,
        lrs: Dict[str, Optional[float]], modes=MODES) -> Dict[str, Any]:
    train = _load("train.py", "bcos_train")
    os.makedirs(workdir, exist_ok=True)
    results: Dict[str, Any] = {}
    if source is None:
        source = os.path.join(workdir, "quickstart")
        cfg = _load("configs/quickstart.py", "bcos_quickstart_config").get_config()
        t0 = time.time()
        s = train.train_and_evaluate(cfg, source)
        results["source"] = dict(workdir=source, accuracy=s["accuracy"], steps=s["steps"],
                                 localisation=s.get("localisation"), wall_s=time.time() - t0)
    else:
        results["source"] = dict(workdir=os.path.abspath(source))
    for mode in modes:
        t0 = time.time()
        run_dir = os.path.join(workdir, mode)
        cfg = finetune_config(mode, source, steps, eval_every, num_train, lrs.get(mode))
        s = _finished(run_dir, steps)  # reused: a rerun only adds what is missing
        wall = None
        if s is None:
            s = train.train_and_evaluate(cfg, run_dir)
            wall = time.time() - t0
        results[mode] = dict(accuracy=s["accuracy"], evals=s["evals"], steps=s["steps"],
                             localisation=s["localisation"],
                             localisation_uniform=s["localisation_uniform"],
                             frozen_params=s.get("frozen_params", 0),
                             reinitialised=s.get("reinitialised", []), wall_s=wall,
                             lr=cfg.optimizer.lr)
    results["num_train"] = num_train
    target = results["scratch"]["accuracy"]
    for mode in modes:
        results[mode]["steps_to_scratch_accuracy"] = steps_to(results[mode]["evals"], target)
    tmp = os.path.join(workdir, "transfer.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(workdir, "transfer.json"))
    return results


def table(results: Dict[str, Any]) -> str:
    target = results["scratch"]["accuracy"]
    rows = [
        f"quickstart2, {results['num_train']} training images; target: the from-scratch run's "
        f"final validation top-1, {target:.2f} %.",
        "",
        "| run | lr | final top-1 (%) | steps to the target | "
        + " | ".join(f"steps to {m:.0f} %" for m in MILESTONES)
        + " | localisation (uniform) | frozen values | wall (s) |",
        "|---|---|---|---|" + "---|" * len(MILESTONES) + "---|---|---|",
    ]
    for mode in [m for m in MODES if m in results]:
        r = results[mode]
        reached = r["steps_to_scratch_accuracy"]
        best = max(e["val_top1"] for e in r["evals"])
        reached = (f"{reached} of {r['steps']}" if reached is not None
                   else f"not reached (best {best:.2f} %)")
        wall = "earlier run" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        marks = " | ".join(str(steps_to(r["evals"], m) or "-") for m in MILESTONES)
        rows.append(f"| {mode} | {r['lr']:g} | {r['accuracy']:.2f} | {reached} | {marks} | "
                    f"{r['localisation']:.3f} ({r['localisation_uniform']:.3f}) | "
                    f"{r['frozen_params']} | {wall} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/transfer")
    p.add_argument("--source", default=None, help="a quickstart workdir (default: train one)")
    p.add_argument("--steps", type=int, default=384, help="steps of each quickstart2 run")
    p.add_argument("--eval_every", type=int, default=16)
    p.add_argument("--num_train", type=int, default=4096, help="quickstart2 training images")
    p.add_argument("--modes", default=",".join(MODES), help="a subset of " + ",".join(MODES))
    for mode in MODES:
        p.add_argument(f"--lr_{mode}", type=float, default=None, help="default: the recipe's")
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    lrs = {m: getattr(args, f"lr_{m}") for m in MODES}
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if "scratch" not in modes:
        raise SystemExit("--modes must include scratch: it sets the target accuracy")
    results = run(args.workdir, args.source, args.steps, args.eval_every, args.num_train, lrs,
                  modes)
    src = results["source"]
    if "accuracy" in src:
        print(f"source: the quickstart model, {src['accuracy']:.2f} % after {src['steps']} steps "
              f"({src['wall_s']:.0f} s)")
    print(table(results))


if __name__ == "__main__":
    main()
