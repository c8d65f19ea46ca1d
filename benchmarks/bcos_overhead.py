"""Cost of the B-cos transform: B-cos ResNet-50 against the standard ResNet-50 of the same file.

    .venv/bin/python benchmarks/bcos_overhead.py [--batch 8 --size 224 --repeats 5] [--torch]

Both models come from ``bcos_jax/models/resnet.py`` (B-cos conv + uncentred BN vs plain conv +
BN + ReLU); forward (eval) and one Adam training step, jitted, float32. ``--torch`` also
times the same pair in PyTorch (``bcos`` resnet50 vs torchvision resnet50) for reference.
The ratio printed is B-cos time / standard time (1.0 = free).
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
from benchmarks.common import fmt, timeit  # noqa: E402
from bcos_jax import models  # noqa: E402


def jax_times(name, x, labels, repeats, num_classes):
    model = models.create(name, num_classes=num_classes)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    tx = optax.adam(1e-3)
    params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    targets = jax.nn.one_hot(labels, num_classes)

    def loss_fn(p, extra, x):
        out, new = model.apply({"params": p, **extra}, x, train=True, mutable=list(extra), rngs={"dropout": jax.random.key(1)})
        return optax.sigmoid_binary_cross_entropy(out, targets).mean(), new

    @jax.jit
    def step(p, o, extra, x):
        (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, extra, x)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, new, loss

    state = [params, tx.init(params), extra]

    def run_step():
        p, o, e, loss = step(*state, x)
        jax.block_until_ready(loss)
        state[:] = [p, o, e]

    return timeit(lambda: jax.block_until_ready(fwd(variables, x)), repeats), timeit(run_step, repeats)


def torch_forward(x_nchw, repeats):
    import bcos.models.pretrained as pretrained
    import torch
    import torchvision

    out = {}
    for label, m in [("bcos", pretrained.resnet50(pretrained=False)), ("standard", torchvision.models.resnet50())]:
        m.eval()
        xx = torch.from_numpy(x_nchw if label == "bcos" else np.ascontiguousarray(x_nchw[:, :3]))

        def f():
            with torch.no_grad():
                m(xx)

        out[label] = timeit(f, repeats)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    x6 = jnp.asarray(np.concatenate([img, 1 - img], -1))
    labels = jnp.asarray(rng.integers(0, args.num_classes, args.batch))
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; batch {args.batch}, {args.size}², float32")
    b_fwd, b_step = jax_times("resnet50", x6, labels, args.repeats, args.num_classes)
    s_fwd, s_step = jax_times("standard_resnet50", jnp.asarray(img), labels, args.repeats, args.num_classes)
    print(f"jax forward     bcos {fmt(b_fwd)}  standard {fmt(s_fwd)}  ratio x{b_fwd['median'] / s_fwd['median']:.2f}")
    print(f"jax train step  bcos {fmt(b_step)}  standard {fmt(s_step)}  ratio x{b_step['median'] / s_step['median']:.2f}")
    if args.torch:
        t = torch_forward(np.ascontiguousarray(np.asarray(x6).transpose(0, 3, 1, 2)), args.repeats)
        print(f"torch forward   bcos {fmt(t['bcos'])}  standard {fmt(t['standard'])}  "
              f"ratio x{t['bcos']['median'] / t['standard']['median']:.2f}")


if __name__ == "__main__":
    main()
