"""Pixel-pair packing: a narrow input read two pixels per word, and the convolution rewritten for it."""

from __future__ import annotations

import numpy as np

from hw.layout import cdiv


def pack_pixel_pairs(x: np.ndarray, rows: int, fill: int) -> np.ndarray:
    """``(C, H, W)`` with ``C <= rows/2`` -> ``(rows, H, ceil(W/2))``: two pixels per word.

    Lane ``c + j * rows/2`` of packed column ``X`` holds channel ``c`` of pixel
    ``2X + j``; a pixel past the right edge reads ``fill`` (the zero point,
    as padding would).
    """
    c, h, w = x.shape
    half = rows // 2
    w2 = cdiv(w, 2)
    out = np.zeros((rows, h, w2), dtype=np.int8)
    wide = np.full((c, h, 2 * w2), fill, dtype=np.int8)
    wide[:, :, :w] = x
    out[:c] = wide[:, :, 0::2]
    out[half:half + c] = wide[:, :, 1::2]
    return out


def pair_packed_conv(w: np.ndarray, pad_l: int, rows: int) -> tuple[np.ndarray, int]:
    """Weights of a stride-2-in-x convolution rewritten for a pixel-pair-packed input.

    Output column ``ox`` reads input column ``2*ox - pad_l + kx`` = pixel ``j``
    of packed column ``ox + floor((kx - pad_l) / 2)``: the same convolution as
    one with stride 1 in x over the packed tensor, kernel width ``kw'`` and
    left padding ``pad_l'``, whose lane ``c + j*rows/2`` carries tap ``kx``.
    Returns ``(w' (cout, rows, kh, kw'), pad_l')``.
    """
    cout, cin, kh, kw = w.shape
    half = rows // 2
    pad2 = (pad_l + 1) // 2
    kw2 = (kw - 1 - pad_l) // 2 + pad2 + 1
    out = np.zeros((cout, rows, kh, kw2), dtype=np.int8)
    for kx in range(kw):
        t = kx - pad_l
        out[:, (t % 2) * half:(t % 2) * half + cin, :, t // 2 + pad2] = w[:, :, :, kx]
    return out, pad2
