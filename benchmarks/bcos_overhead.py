"""Cost of the B-cos transform: B-cos ResNet-50 against the standard ResNet-50 of the same file.

    .venv/bin/python benchmarks/bcos_overhead.py [--batch 8 --size 224 --repeats 5] [--torch]

Both models come from ``bcos_jax/models/resnet.py`` (B-cos conv + uncentred BN vs plain conv +
BN + ReLU); forward (eval) and one Adam training step (donated state), jitted, float32,
timed alternately (B-cos, standard, B-cos, ...). The ratio printed is B-cos time / standard
time (1.0 = free).

Both share the lowering of the linear part (``layers._linear_and_norm``: 1x1 convs as
matmuls, space-to-depth input gradients of strided stems), so the ratio is the cost of the
B-cos transform itself (patch norm, dynamic scale, weight normalisation, uncentred BN
instead of BN + ReLU). ``bcos, prenormalized`` is the B-cos forward with its kernels
normalised once ahead of time (``layers.prenormalize``), as for evaluation or serving.
``--torch`` also times the reference pair in PyTorch (``bcos`` resnet50 vs torchvision resnet50).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # torch on a shared machine, see compare_torch.py

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import layers, models
from benchmarks.common import donated_runner, fmt, header, load, timeit_pair, train_step


def jax_fns(name, x, labels, num_classes, **overrides):
    model = models.create(name, num_classes=num_classes, **overrides)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    tx = optax.adam(1e-3)
    params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    targets = jax.nn.one_hot(labels, num_classes)
    run_step = donated_runner(train_step(model, tx), params, tx.init(params), extra, x, targets)

    pre = layers.prenormalize(model, variables, x, train=False)
    return {
        "forward": lambda: jax.block_until_ready(fwd(variables, x)),
        "forward_prenormalized": lambda: jax.block_until_ready(fwd(pre, x)),
        "train_step": run_step,
    }


def torch_fns(x_nchw):
    import bcos.models.pretrained as pretrained
    import torch
    import torchvision

    out = {}
    for label, m in [
        ("bcos", pretrained.resnet50(pretrained=False)),
        ("standard", torchvision.models.resnet50()),
    ]:
        m.eval()
        xx = torch.from_numpy(x_nchw if label == "bcos" else np.ascontiguousarray(x_nchw[:, :3]))

        def f(m=m, xx=xx):
            with torch.no_grad():
                m(xx)

        out[label] = f
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument(
        "--what", nargs="+", default=["forward", "train_step"], choices=["forward", "train_step"]
    )
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    x6 = jnp.asarray(np.concatenate([img, 1 - img], -1))
    labels = jnp.asarray(rng.integers(0, args.num_classes, args.batch))
    print(header())
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; batch {args.batch}, "
        f"{args.size}², float32",
        flush=True,
    )
    bcos = jax_fns("resnet50", x6, labels, args.num_classes)
    std = jax_fns("standard_resnet50", jnp.asarray(img), labels, args.num_classes)
    for k in args.what:
        b, s = timeit_pair(bcos[k], std[k], args.repeats)
        print(
            f"jax {k:<10} bcos {fmt(b)}  standard {fmt(s)}  ratio "
            f"x{b['median'] / s['median']:.2f}  ({load()})",
            flush=True,
        )
        if k == "forward":
            b, s = timeit_pair(bcos["forward_prenormalized"], std[k], args.repeats)
            print(f"jax {k:<10} bcos, prenormalized {fmt(b)}  standard {fmt(s)}  "
                  f"ratio x{b['median'] / s['median']:.2f}  ({load()})", flush=True)
    if args.torch:
        t = torch_fns(np.ascontiguousarray(np.asarray(x6).transpose(0, 3, 1, 2)))
        b, s = timeit_pair(t["bcos"], t["standard"], args.repeats)
        print(
            f"torch forward    bcos {fmt(b)}  standard {fmt(s)}  ratio "
            f"x{b['median'] / s['median']:.2f}  ({load()})"
        )


if __name__ == "__main__":
    main()
