"""Folding of inference-time affine layers into the preceding convolution.

A BatchNorm2d in eval mode is a per-channel affine map
``y = gamma * (x - mean) / sqrt(var + eps) + beta``; after a convolution it
folds into the convolution's weights and bias:
``W' = W * k``, ``b' = (b - mean) * k + beta`` with ``k = gamma / sqrt(var + eps)``.
A multiplication of a convolution's output by a constant folds the same way.
The arithmetic is done in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["fold_bn", "fold_scale", "fold_conv_bn"]


def _f64(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def fold_bn(weight, bias, mean, var, gamma, beta, eps: float):
    """Fold batch-norm statistics into a convolution's weight and bias.

    Parameters
    ----------
    weight : array_like, shape (Cout, ...)
        Convolution weights.
    bias : array_like, shape (Cout,), or None
        Convolution bias (``None`` for a convolution without bias).
    mean, var : array_like, shape (Cout,)
        BatchNorm running mean and running variance.
    gamma, beta : array_like, shape (Cout,), or None
        BatchNorm affine parameters (``None`` for ``affine=False``: 1 and 0).
    eps : float
        BatchNorm epsilon.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Folded float64 weight (same shape as ``weight``) and bias ``(Cout,)``.

    Raises
    ------
    ValueError
        On mismatched channel counts or a negative variance.
    """
    w = _f64(weight)
    cout = w.shape[0]
    b = np.zeros(cout) if bias is None else _f64(bias)
    mean, var = _f64(mean), _f64(var)
    gamma = np.ones(cout) if gamma is None else _f64(gamma)
    beta = np.zeros(cout) if beta is None else _f64(beta)
    for name, v in (("bias", b), ("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)):
        if v.shape != (cout,):
            raise ValueError(f"batch-norm {name} has shape {v.shape}, expected ({cout},) for {cout} channels")
    if (var < 0).any():
        raise ValueError(f"negative running variance {var.min()!r}")
    k = gamma / np.sqrt(var + float(eps))
    return w * k.reshape((cout,) + (1,) * (w.ndim - 1)), (b - mean) * k + beta


def fold_scale(weight, bias, scale: float):
    """Fold ``conv(x) * scale`` into the convolution: ``(W * scale, b * scale)`` (float64)."""
    w = _f64(weight)
    b = np.zeros(w.shape[0]) if bias is None else _f64(bias)
    return w * float(scale), b * float(scale)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    Raises
    ------
    ValueError
        When the batch norm has no running statistics or its channel count
        differs from the convolution's output channels.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn!r} has no running statistics (track_running_stats=False): cannot fold it")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"{bn!r} has {bn.num_features} channels, the convolution {conv.out_channels}")
    w, b = fold_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                   bn.weight if bn.affine else None, bn.bias if bn.affine else None, bn.eps)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                    padding_mode=conv.padding_mode)
    with torch.no_grad():
        out.weight.copy_(torch.from_numpy(w))
        out.bias.copy_(torch.from_numpy(b))
    return out.to(conv.weight.dtype)
