"""Deliberately naive integer references for the hardware unit tests (independent of quant/golden)."""

import numpy as np


def conv_acc_reference(x, w, bias, *, zp_in, stride=(1, 1), pad=(0, 0), dil=1, out_hw):
    """int32 accumulators ``bias + sum(x * w)`` with out-of-range taps reading ``zp_in``, by explicit loops.

    This is the engine's accumulator before requantization (the bias given is
    the one the engine adds, i.e. already the effective bias).
    """
    cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out_h, out_w = out_hw
    sy, sx = stride
    pt, pl = pad
    acc = np.zeros((cout, out_h, out_w), dtype=np.int64)
    for oy in range(out_h):
        for ox in range(out_w):
            patch = np.full((cin, kh, kw), zp_in, dtype=np.int64)
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sy - pt + ky * dil, ox * sx - pl + kx * dil
                    if 0 <= iy < h and 0 <= ix < wd:
                        patch[:, ky, kx] = x[:, iy, ix]
            acc[:, oy, ox] = (w.reshape(cout, -1).astype(np.int64) @ patch.reshape(-1)) + np.asarray(bias)
    return ((acc + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def maxpool_reference(x, *, k, stride, pad, out_hw):
    """Max over each window clipped to the input, by explicit loops (padding never wins)."""
    c, h, w = x.shape
    pt, pl = pad
    out_h, out_w = out_hw
    out = np.zeros((c, out_h, out_w), dtype=np.int64)
    for oy in range(out_h):
        for ox in range(out_w):
            y0, x0 = oy * stride - pt, ox * stride - pl
            ys = [y for y in range(y0, y0 + k) if 0 <= y < h]
            xs = [xx for xx in range(x0, x0 + k) if 0 <= xx < w]
            assert ys and xs, "a window with no input element"
            out[:, oy, ox] = x[:, ys][:, :, xs].reshape(c, -1).max(axis=1)
    return out


def pool_out_size(n, k, s, p, ceil_mode):
    """PyTorch's pooling output size."""
    num = n + 2 * p - k
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o
