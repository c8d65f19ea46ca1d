"""Helpers to use the PyTorch reference (``bcos`` 0.1.3) as a parity oracle in tests."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
bcos = pytest.importorskip("bcos")
torch.set_num_threads(1)  # tests run in parallel workers on a 2-core machine


def nchw(x_nhwc: np.ndarray, dtype=np.float32) -> torch.Tensor:
    """NumPy NHWC -> torch NCHW tensor of ``dtype`` (float32 unless a float64 comparison)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc, dtype).transpose(0, 3, 1, 2)))


def float64_model(tmodel: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of a torch module (the original is left in float32), for comparisons
    whose discrete choices float32 rounding could flip (tests/precision.py)."""
    return copy.deepcopy(tmodel).double()


def nhwc(t: torch.Tensor) -> np.ndarray:
    """torch NCHW (or [N, C]) -> NumPy NHWC."""
    a = t.detach().cpu().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def randomize_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial affine parameters and running statistics, so that
    parity tests fail if a norm is converted or applied wrongly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name in ("running_var",):
                if getattr(m, name, None) is not None:
                    buf = getattr(m, name)
                    buf.copy_(0.5 + 1.5 * torch.rand(buf.shape, generator=g))
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
            is_norm = isinstance(
                m, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
            )
            if is_norm and getattr(m, "weight", None) is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            if is_norm and getattr(m, "bias", None) is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def torch_explain(model: torch.nn.Module, x_nhwc: np.ndarray, targets=None, float64: bool = False):
    """Logits and explanation-mode input gradients W(x) of a bcos model.

    Returns (logits [N, C], weights [N, H, W, C_in], targets [N]) as NumPy; ``targets``
    defaults to the argmax. The model must be in eval mode. ``float64=True`` runs a float64
    copy of the model on a float64 input.
    """
    if float64:
        model = float64_model(model)
    x = nchw(x_nhwc, np.float64 if float64 else np.float32).requires_grad_(True)
    with model.explanation_mode():
        out = model(x)
        t = out.argmax(1) if targets is None else torch.as_tensor(np.asarray(targets))
        sel = out[torch.arange(out.shape[0]), t].sum()
        (g,) = torch.autograd.grad(sel, x)
    return out.detach().numpy(), nhwc(g), t.numpy()


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (a scale-aware relative error that tolerates zeros)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

