"""bcos_jax against the PyTorch reference (``bcos`` 0.1.3), same weights, same machine, one run.

    .venv/bin/python benchmarks/compare_torch.py --models resnet50 densenet121 simple_vit_s_patch16_224

For each model: eval forward, explanation (forward + one vjp of the predicted logits) and one
training step (Adam, uniform-off-label BCE), batch 8 at 224² in float32 by default. Medians
of ``--repeats`` runs after 2 warm-up runs; the speed-up is torch median / jax median.
Both frameworks use all cores of the machine (torch: ``torch.get_num_threads()``).
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import ratio_line, timeit  # noqa: E402
from bcos_jax import convert, explain_fn, models  # noqa: E402


def torch_side(name, x_nchw, labels, num_classes, repeats):
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

    res = {"forward": timeit(fwd, repeats), "explain": timeit(expl, repeats), "train_step": timeit(step, repeats)}
    return res, model.state_dict()


def jax_side(name, state_dict, x_nhwc, labels, num_classes, repeats):
    model = models.create(name, num_classes=num_classes)
    variables = convert.from_torch(name, state_dict, num_classes=num_classes)
    x = jnp.asarray(x_nhwc)
    fwd_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    expl = explain_fn(model)

    tx = optax.adam(1e-3)
    params = variables["params"]
    opt_state = tx.init(params)
    extra = {k: v for k, v in variables.items() if k != "params"}
    off = 1.0 / num_classes
    targets = jnp.maximum(jax.nn.one_hot(labels, num_classes), off)

    def loss_fn(p, extra, x):
        out, new = model.apply({"params": p, **extra}, x, train=True, mutable=list(extra))
        return optax.sigmoid_binary_cross_entropy(out, targets).mean(), new

    @jax.jit
    def step(p, o, extra, x):
        (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, extra, x)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, new, loss

    state = [params, opt_state, extra]

    def run_step():
        p, o, e, loss = step(*state, x)
        jax.block_until_ready(loss)
        state[:] = [p, o, e]

    return {
        "forward": timeit(lambda: jax.block_until_ready(fwd_fn(variables, x)), repeats),
        "explain": timeit(lambda: jax.block_until_ready(expl(variables, x)), repeats),
        "train_step": timeit(run_step, repeats),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "densenet121", "simple_vit_s_patch16_224"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
          f"threads {torch.get_num_threads()}; batch {args.batch}, {args.size}², float32")
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    x_nhwc = np.concatenate([img, 1 - img], -1)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    labels = rng.integers(0, args.num_classes, args.batch).astype(np.int32)
    for name in args.models:
        t_res, sd = torch_side(name, x_nchw, labels, args.num_classes, args.repeats)
        j_res = jax_side(name, sd, x_nhwc, labels, args.num_classes, args.repeats)
        for k in ("forward", "explain", "train_step"):
            print(ratio_line(f"{name} {k}", t_res[k], j_res[k]), flush=True)


if __name__ == "__main__":
    main()
