"""How tensors, weights and commands sit in external memory: the one definition.

Everything here is plain numpy (imported by the functions that use it, so that
``hw`` imports without numpy): the host driver and compiler use it to build
memory images, the golden model's ISA interpreter uses it to read them, and the
gateware's address generators implement exactly these formulas (see
``docs/ISA.md``). ``R`` is ``EngineConfig.rows`` (bytes per word), ``C`` is
``EngineConfig.cols``.

Activations
    A ``(channels, H, W)`` int8 tensor is stored pixel-major with channels in
    blocks of ``R``: word ``(y * W + x) * CB + cb`` holds channels
    ``cb*R .. cb*R+R-1`` of pixel ``(y, x)``, byte ``r`` = channel ``cb*R + r``.
    ``CB = ceil(channels / R)``; the lanes past the last channel are padding.
    A concat is a placement: each part is written with the whole tensor's
    ``CB`` as pixel stride and its first block as offset.

Weight blob of a convolution
    For each tile of ``C`` output channels ``cot``: first the tile's
    parameters (``param_words``: ``C`` int32 biases, ``C`` int32 multipliers,
    ``C`` uint8 shifts, little-endian), then one weight tile per
    ``kt = (ky * kw + kx) * CBin + cb`` (ky outermost, input block innermost):
    ``C`` words, word ``c`` holding ``w[cot*C + c, cb*R + r, ky, kx]`` in
    byte ``r``. Padding channels have zero weights and zero parameters.
    The biases are *effective* biases: the input zero point is already folded
    in (``quant.arith.fold_zero_point``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Shape

from .isa import EngineConfig, param_tile_layout

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "cdiv", "act_words", "pack_activation", "unpack_activation",
    "blob_words", "pack_conv_blob", "unpack_conv_blob", "words_to_bytes", "bytes_to_words",
]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def act_words(channels: int, h: int, w: int, rows: int) -> int:
    """Words occupied by a ``(channels, h, w)`` activation tensor."""
    return h * w * cdiv(channels, rows)


def pack_activation(x: np.ndarray, rows: int, fill: int = 0) -> np.ndarray:
    """``(C, H, W)`` int8 -> ``(H*W*CB, rows)`` int8 words, padding lanes set to ``fill``."""
    import numpy as np

    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"activation must be (channels, H, W), got shape {x.shape}")
    c, h, w = x.shape
    cb = cdiv(c, rows)
    buf = np.full((cb * rows, h, w), fill, dtype=np.int8)
    buf[:c] = x
    # (cb, r, h, w) -> (h, w, cb, r)
    return buf.reshape(cb, rows, h, w).transpose(2, 3, 0, 1).reshape(h * w * cb, rows).copy()


def unpack_activation(words: np.ndarray, channels: int, h: int, w: int, rows: int,
                      pix_words: int | None = None, offset: int = 0) -> np.ndarray:
    """Words -> ``(channels, H, W)`` int8.

    ``pix_words`` is the pixel stride of the stored tensor (defaults to its own
    block count) and ``offset`` the word offset of its first block inside a
    pixel: together they read one part of a concat.
    """
    import numpy as np

    cb = cdiv(channels, rows)
    pix = cb if pix_words is None else pix_words
    words = np.asarray(words, dtype=np.int8).reshape(-1, rows)
    need = (h * w - 1) * pix + offset + cb
    if words.shape[0] < need:
        raise ValueError(f"{words.shape[0]} words given, the tensor needs {need}")
    idx = (np.arange(h * w)[:, None] * pix + offset + np.arange(cb)[None, :]).reshape(-1)
    sel = words[idx].reshape(h, w, cb * rows)[:, :, :channels]
    return sel.transpose(2, 0, 1).copy()


def _param_bytes(cols: int) -> dict[str, slice]:
    """Byte ranges of the bias, m0 and shift arrays in a tile's parameters (``hw.isa.param_tile_layout``)."""
    layout = param_tile_layout(cols)
    return {name: slice(field.offset // 8, (field.offset + Shape.cast(field.shape).width) // 8)
            for name, field in layout}


def blob_words(cout: int, cin: int, kh: int, kw: int, cfg: EngineConfig) -> int:
    n_cot = cdiv(cout, cfg.cols)
    n_kt = kh * kw * cdiv(cin, cfg.rows)
    return n_cot * (cfg.param_words + n_kt * cfg.tile_words)


def pack_conv_blob(w: np.ndarray, bias: np.ndarray, m0: np.ndarray, shift: np.ndarray,
                   cfg: EngineConfig) -> np.ndarray:
    """Weights ``(cout, cin, kh, kw)`` int8 and per-channel parameters -> blob words ``(n, rows)`` int8.

    ``bias`` is the effective int32 bias (input zero point folded in), ``m0``
    the int32 multiplier and ``shift`` the right shift of each output channel.
    """
    import numpy as np

    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"weights must be (cout, cin, kh, kw), got shape {w.shape}")
    if w.min(initial=0) < -128 or w.max(initial=0) > 127:
        raise ValueError("weights must be int8")
    cout, cin, kh, kw = w.shape
    R, C = cfg.rows, cfg.cols
    n_cot, cbin = cdiv(cout, C), cdiv(cin, R)
    wp = np.zeros((n_cot * C, cbin * R, kh, kw), dtype=np.int8)
    wp[:cout, :cin] = w

    def per_channel(v, dtype):
        out = np.zeros(n_cot * C, dtype=dtype)
        out[:cout] = np.asarray(v).astype(np.int64)
        return out

    b = per_channel(bias, "<i4")
    m = per_channel(m0, "<i4")
    s = per_channel(shift, np.uint8)
    where = _param_bytes(C)
    chunks = []
    for cot in range(n_cot):
        sl = slice(cot * C, (cot + 1) * C)
        params = np.zeros(cfg.param_words * R, dtype=np.uint8)
        params[where["bias"]] = b[sl].view(np.uint8)
        params[where["m0"]] = m[sl].view(np.uint8)
        params[where["shift"]] = s[sl]
        chunks.append(params.view(np.int8).reshape(cfg.param_words, R))
        # (C, cbin*R, kh, kw) -> (kh, kw, cbin, C, R): one word per (ky, kx, cb, c)
        t = wp[sl].reshape(C, cbin, R, kh, kw).transpose(3, 4, 1, 0, 2)
        chunks.append(t.reshape(kh * kw * cbin * C, R))
    return np.concatenate(chunks).astype(np.int8)


def unpack_conv_blob(words: np.ndarray, cout: int, cin: int, kh: int, kw: int, cfg: EngineConfig):
    """Inverse of :func:`pack_conv_blob`: ``(w, bias, m0, shift)``."""
    import numpy as np

    R, C = cfg.rows, cfg.cols
    n_cot, cbin = cdiv(cout, C), cdiv(cin, R)
    words = np.asarray(words, dtype=np.int8).reshape(-1, R)
    per_cot = cfg.param_words + kh * kw * cbin * C
    w = np.zeros((n_cot * C, cbin * R, kh, kw), dtype=np.int8)
    b = np.zeros(n_cot * C, np.int64)
    m = np.zeros(n_cot * C, np.int64)
    s = np.zeros(n_cot * C, np.int64)
    where = _param_bytes(C)
    for cot in range(n_cot):
        chunk = words[cot * per_cot:(cot + 1) * per_cot]
        raw = chunk[:cfg.param_words].reshape(-1).view(np.uint8)
        sl = slice(cot * C, (cot + 1) * C)
        b[sl] = raw[where["bias"]].view("<i4")
        m[sl] = raw[where["m0"]].view("<i4")
        s[sl] = raw[where["shift"]]
        t = chunk[cfg.param_words:].reshape(kh, kw, cbin, C, R).transpose(3, 2, 4, 0, 1)
        w[sl] = t.reshape(C, cbin * R, kh, kw)
    return w[:cout, :cin], b[:cout], m[:cout], s[:cout]


def words_to_bytes(words: np.ndarray) -> bytes:
    import numpy as np

    return np.ascontiguousarray(np.asarray(words, dtype=np.int8)).tobytes()


def bytes_to_words(raw: bytes, rows: int) -> np.ndarray:
    import numpy as np

    return np.frombuffer(raw, dtype=np.int8).reshape(-1, rows).copy()
