"""bcos_jax against the PyTorch reference (``bcos`` 0.1.3), same weights, same machine, one run.

    .venv/bin/python benchmarks/compare_torch.py \\
        --models resnet50 densenet121 simple_vit_s_patch16_224

For each model: eval forward, explanation (forward + one vjp of the predicted logits) and one
training step (Adam, uniform-off-label BCE), batch 8 at 224² in float32 by default. Both
sides are built and warmed up first, then timed *alternately* (torch, jax, torch, jax, ...)
so that load from other processes hits both alike; medians of ``--repeats`` runs after 2
warm-up runs; the speed-up is torch median / jax median (> 1: bcos_jax is faster).
Both frameworks use all cores of the machine (torch: ``torch.get_num_threads()``; XLA: its
own thread pool). The JAX training step donates parameters, optimiser state and batch
statistics (``donate_argnums``), as a training loop would.

torch runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: on a loaded
machine, libgomp's default spin-waiting barriers make every torch op wait for a descheduled
thread, which makes torch several times slower and would flatter bcos_jax
(``OMP_WAIT_POLICY=ACTIVE`` in the environment restores libgomp's default).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (libgomp) is loaded

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import convert, explain_fn, models
from benchmarks.common import donated_runner, header, load, ratio_line, timeit_pair, train_step


def torch_side(name, x_nchw, labels, num_classes):
    """{measurement: zero-argument callable} for the reference model, and its state_dict."""
    import bcos.models.pretrained as pretrained
    import torch
    from bcos.modules.losses import UniformOffLabelsBCEWithLogitsLoss

    torch.manual_seed(0)
    model = getattr(pretrained, name)(pretrained=False, num_classes=num_classes)
    model.eval()
    x = torch.from_numpy(x_nchw)
    y = torch.from_numpy(labels).long()

    def fwd():
        with torch.no_grad():
            model(x)

    def expl():
        xg = x.clone().requires_grad_(True)
        with model.explanation_mode():
            out = model(xg)
            sel = out.gather(1, out.argmax(1, keepdim=True)).sum()
            torch.autograd.grad(sel, xg)

    train_model = getattr(pretrained, name)(pretrained=False, num_classes=num_classes)
    train_model.load_state_dict(model.state_dict())
    train_model.train()
    opt = torch.optim.Adam(train_model.parameters(), lr=1e-3)
    loss_fn = UniformOffLabelsBCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(train_model(x), y)
        loss.backward()
        opt.step()

    return {"forward": fwd, "explain": expl, "train_step": step}, model.state_dict()


def jax_side(name, state_dict, x_nhwc, labels, num_classes):
    """{measurement: zero-argument callable (blocking)} for bcos_jax with the same weights."""
    model = models.create(name, num_classes=num_classes)
    variables = convert.from_torch(name, state_dict, num_classes=num_classes)
    x = jnp.asarray(x_nhwc)
    fwd_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    expl = explain_fn(model)

    tx = optax.adam(1e-3)
    params = jax.tree.map(jnp.copy, variables["params"])
    opt_state = tx.init(params)
    extra = {k: jax.tree.map(jnp.copy, v) for k, v in variables.items() if k != "params"}
    # UniformOffLabelsBCEWithLogitsLoss: targets 1 on the label, 1/C elsewhere; mean BCE.
    off = 1.0 / num_classes
    targets = jnp.maximum(jax.nn.one_hot(labels, num_classes), off)

    run_step = donated_runner(train_step(model, tx), params, opt_state, extra, x, targets)
    return {
        "forward": lambda: jax.block_until_ready(fwd_fn(variables, x)),
        "explain": lambda: jax.block_until_ready(expl(variables, x)),
        "train_step": run_step,
    }


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", nargs="+", default=["resnet50", "densenet121", "simple_vit_s_patch16_224"]
    )
    ap.add_argument("--what", nargs="+", default=["forward", "explain", "train_step"],
                    choices=["forward", "explain", "train_step"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    print(header())
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
        f"threads {torch.get_num_threads()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
        f"batch {args.batch}, {args.size}², float32",
        flush=True,
    )
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    x_nhwc = np.concatenate([img, 1 - img], -1)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    labels = rng.integers(0, args.num_classes, args.batch).astype(np.int32)
    for name in args.models:
        t_fns, sd = torch_side(name, x_nchw, labels, args.num_classes)
        j_fns = jax_side(name, sd, x_nhwc, labels, args.num_classes)
        for k in args.what:
            t_res, j_res = timeit_pair(t_fns[k], j_fns[k], args.repeats)
            print(ratio_line(f"{name} {k}", t_res, j_res) + f"  ({load()})", flush=True)


if __name__ == "__main__":
    main()
