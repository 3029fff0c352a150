"""The command set, executed on a memory image with the golden model: the engine's functional specification.

:class:`IsaMachine` does what the gateware does with a command list, word for
word in memory (padding lanes included), using :mod:`quant.golden` for the
arithmetic and :func:`hw.isa.check_command` for the error checks. It is the
golden backend of the driver and the reference every Verilator run is compared
against. It has no notion of time: profile records hold zero cycles.

Speed: decoded commands are kept per command bytes, and each weight blob's
constants in the fast kernels' form (:mod:`quant.kernels`) per blob address,
reused only while the blob's bytes in memory are unchanged; memory is read
and written through strided views, not index arrays, where nothing wraps.
"""

from __future__ import annotations

import numpy as np

from hw.isa import (
    CMD_BYTES,
    EngineConfig,
    ErrorCode,
    Opcode,
    check_command,
    unpack_command,
)
from hw.layout import cdiv, unpack_conv_blob
from quant import golden
from quant.arith import requantize
from quant.kernels import F32_EXACT, conv_sum, hwc_tensor, maxpool_int8

__all__ = ["IsaMachine", "CommandError"]


class CommandError(RuntimeError):
    """A command the engine refuses; carries its index and :class:`ErrorCode`."""

    def __init__(self, index: int, code: ErrorCode):
        super().__init__(f"command {index} refused by the engine: {code.name}")
        self.index = index
        self.code = code


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal int8 arrays of one shape, compared eight bytes at a time where the layout allows."""
    if a.flags.c_contiguous and b.flags.c_contiguous and a.nbytes % 8 == 0:
        return np.array_equal(a.reshape(-1).view(np.int64), b.reshape(-1).view(np.int64))
    return np.array_equal(a, b)


class _Fields:
    """Attribute access to a decoded command (an Amaranth ``data.Const``), each field read once."""

    def __init__(self, const):
        self._const = const

    def __getattr__(self, name):
        value = getattr(self._const, name)
        if not isinstance(value, int):
            value = _Fields(value)
        setattr(self, name, value)
        return value


class IsaMachine:
    """An engine reduced to its function: a word memory and the command list semantics.

    Parameters
    ----------
    config : EngineConfig
    mem_words : int
        Size of the memory in words.
    """

    def __init__(self, config: EngineConfig, mem_words: int):
        self.cfg = config
        self.mem = np.zeros((mem_words, config.rows), dtype=np.int8)
        self._decoded: dict[bytes, tuple] = {}
        self._blobs: dict[tuple, tuple] = {}

    def _words(self, start: int, n_items: int, item_stride: int, n_words: int) -> np.ndarray | None:
        """A view ``(n_items, n_words, R)`` of the words ``start + i * item_stride + j``; None if it would wrap."""
        end = start + (n_items - 1) * item_stride + n_words
        if start < 0 or end > len(self.mem) or n_items <= 0:
            return None
        m = self.mem
        if item_stride == n_words or n_items == 1:
            return m[start:start + n_items * n_words].reshape(n_items, n_words, m.shape[1])
        return np.ndarray((n_items, n_words, m.shape[1]), np.int8, buffer=m, offset=start * m.strides[0],
                          strides=(item_stride * m.strides[0], m.strides[0], m.strides[1]))

    # ---- memory helpers --------------------------------------------------------------------
    def _read_band(self, src: int, rows: int, width: int, cb: int, src_pix: int) -> np.ndarray:
        """``(cb*R, rows, width)`` int8 lanes of a band (padding lanes included)."""
        return np.ascontiguousarray(self._read_band_hwc(src, rows, width, cb, src_pix).transpose(2, 0, 1))

    def _read_band_hwc(self, src: int, rows: int, width: int, cb: int, src_pix: int) -> np.ndarray:
        """``(rows, width, cb*R)`` int8 lanes of a band (padding lanes included), channels last as in memory."""
        R = self.cfg.rows
        stride = src_pix or cb
        view = self._words(src, rows * width, stride, cb)
        if view is not None:
            return view.reshape(rows, width, cb * R).copy()
        pix = np.arange(rows * width)
        idx = (src + pix[:, None] * stride + np.arange(cb)[None, :]).reshape(-1)
        return self.mem[idx % len(self.mem)].reshape(rows, width, cb * R)

    def _write_pixels(self, dst: int, lanes: np.ndarray, pix_words: int, n_words: int):
        """Write the first ``n_words`` words of every pixel of ``lanes`` (H, W, C) at ``dst + p * pix_words``."""
        R = self.cfg.rows
        h, w, c = lanes.shape
        assert c >= n_words * R
        words = lanes.reshape(h * w, c)[:, :n_words * R].reshape(h * w, n_words, R)
        view = self._words(dst, h * w, pix_words, n_words)
        if view is not None:
            view[...] = words
            return
        idx = (dst + np.arange(h * w)[:, None] * pix_words + np.arange(n_words)[None, :]).reshape(-1)
        self.mem[idx % len(self.mem)] = words.reshape(-1, R)

    # ---- operations -------------------------------------------------------------------------------
    @staticmethod
    def _maxpool_band(x, k, pad_t, pad_l, out_h, out_w):
        """Stride-2 max pool of an ``(H, W, C)`` band with explicit output size; padding and overhang never win."""
        return np.ascontiguousarray(maxpool_int8(x.transpose(2, 0, 1), k, k, 2, 2, pad_t, pad_l, out_h,
                                                 out_w).transpose(1, 2, 0))

    def _conv_constants(self, wblob: int, cout: int, cin_lanes: int, kh: int, kw: int, zp_out: int, act_min: int,
                        act_max: int):
        """The weight blob at ``wblob`` unpacked and prepared for the kernels (kept while its bytes are unchanged)."""
        cfg = self.cfg
        n_cot = cdiv(cout, cfg.cols)
        n_words = n_cot * (cfg.param_words + kh * kw * cdiv(cin_lanes, cfg.rows) * cfg.tile_words)
        view = self._words(wblob, 1, 0, n_words)
        blob = view[0] if view is not None else self.mem[(wblob + np.arange(n_words)) % len(self.mem)]
        key = (wblob, n_words, cout, cin_lanes, kh, kw, zp_out, act_min, act_max)
        hit = self._blobs.get(key)
        if hit is not None and _same_bytes(hit[0], blob):
            return hit[1]
        wt, bias, m0, shift = unpack_conv_blob(blob, n_cot * cfg.cols, cin_lanes, kh, kw, cfg)
        # Every output lane of the blob's tiles, as the engine computes them (padding lanes included). Input
        # lanes past the last one with a non-zero weight add exactly zero: they are left out of the sums.
        used = np.flatnonzero(wt.any(axis=(0, 2, 3)))
        lanes = int(used[-1]) + 1 if len(used) else 1
        weights, requant = golden.prepare_conv(wt[:, :lanes], bias, m0, shift, zp_out, act_min, act_max)
        self._blobs[key] = (blob.copy(), (weights, requant, lanes))
        return weights, requant, lanes

    def _conv_band(self, x, *, wblob, cout, kh, kw, sy, sx, dil, pad_t, pad_l, out_h, out_w, zp_in, zp_out,
                   act_min, act_max):
        """Convolution of a buffer tensor ``(H, W, lanes)`` with a weight blob, band-local geometry.

        The engine's form: raw int8 lanes times the weights plus the folded bias,
        taps outside the band reading ``zp_in``. Returns ``(out_h, out_w, lanes)``.
        """
        h, w, cin_lanes = x.shape
        if golden.using_reference_kernels():
            return self._conv_band_reference(x, wblob=wblob, cout=cout, kh=kh, kw=kw, sy=sy, sx=sx, dil=dil,
                                             pad_t=pad_t, pad_l=pad_l, out_h=out_h, out_w=out_w, zp_in=zp_in,
                                             zp_out=zp_out, act_min=act_min, act_max=act_max)
        weights, requant, lanes = self._conv_constants(wblob, cout, cin_lanes, kh, kw, zp_out, act_min, act_max)
        # The exact input window the outputs read, padded with the input zero point.
        r0, c0 = -pad_t, -pad_l
        r1 = (out_h - 1) * sy - pad_t + (kh - 1) * dil + 1
        c1 = (out_w - 1) * sx - pad_l + (kw - 1) * dil + 1
        ys, ye = max(r0, 0), min(r1, h)
        xs, xe = max(c0, 0), min(c1, w)
        window = x[ys:ye, xs:xe, :lanes] if ys < ye and xs < xe else None
        if window is not None and window.shape[:2] == (r1 - r0, c1 - c0):  # inside the band: no padding
            canvas = window.astype(np.float32)
        else:
            canvas = np.full((r1 - r0, c1 - c0, lanes), zp_in, dtype=np.float32)  # channels last
            if window is not None:
                canvas[ys - r0:ye - r0, xs - c0:xe - c0] = window
        amp = 128  # |int8| and |zp_in| <= 128; the data's own range when that bound is too coarse
        if amp * weights.max_abs_row >= F32_EXACT and window is not None:
            amp = max(abs(zp_in), -int(window.min()), int(window.max()))
        sums, bound = conv_sum(hwc_tensor(canvas), amp, weights, stride=(sy, sx), dilation=(dil, dil))
        out = requant(sums, bound, channels_last=True).transpose(1, 2, 0)  # contiguous (H, W, C)
        assert out.shape[:2] == (out_h, out_w), (out.shape, out_h, out_w)
        return out

    def _conv_band_reference(self, x, *, wblob, cout, kh, kw, sy, sx, dil, pad_t, pad_l, out_h, out_w, zp_in,
                             zp_out, act_min, act_max):
        """:meth:`_conv_band` as it was computed before the fast kernels (under ``golden.reference_kernels()``)."""
        cfg = self.cfg
        h, w, cin_lanes = x.shape
        n_cot = cdiv(cout, cfg.cols)
        n_words = n_cot * (cfg.param_words + kh * kw * cdiv(cin_lanes, cfg.rows) * cfg.tile_words)
        blob = self.mem[(wblob + np.arange(n_words)) % len(self.mem)]
        wt, bias, m0, shift = unpack_conv_blob(blob, n_cot * cfg.cols, cin_lanes, kh, kw, cfg)
        r0, c0 = -pad_t, -pad_l
        r1 = (out_h - 1) * sy - pad_t + (kh - 1) * dil + 1
        c1 = (out_w - 1) * sx - pad_l + (kw - 1) * dil + 1
        canvas = np.full((cin_lanes, r1 - r0, c1 - c0), zp_in, dtype=np.int64)
        ys, ye = max(r0, 0), min(r1, h)
        xs, xe = max(c0, 0), min(c1, w)
        if ys < ye and xs < xe:
            canvas[:, ys - r0:ye - r0, xs - c0:xe - c0] = x[ys:ye, xs:xe].transpose(2, 0, 1)
        out = golden.conv2d(canvas.astype(np.int8), wt, bias, m0, shift, zp_in, zp_out, act_min, act_max,
                            stride=(sy, sx), padding=0, dilation=dil, bias_folded=True)
        return np.ascontiguousarray(out.transpose(1, 2, 0))

    def _decode(self, raw: bytes) -> tuple:
        """``(error code, opcode, fields)`` of a command, decoded once per distinct command."""
        hit = self._decoded.get(raw)
        if hit is None:
            code = check_command(self.cfg, raw)
            op, c = unpack_command(raw) if code == ErrorCode.NONE else (None, None)
            hit = self._decoded[raw] = (code, op, _Fields(c) if c is not None else None)
        return hit

    def execute(self, raw: bytes):
        """Run one command; raise :class:`CommandError` (index 0) if the engine would refuse it."""
        code, op, c = self._decode(raw)
        if code != ErrorCode.NONE:
            raise CommandError(0, code)
        R = self.cfg.rows
        ld = c.load
        x = self._read_band_hwc(ld.src, ld.src_rows, ld.src_w, ld.cb, ld.src_pix)
        if ld.pool:
            oh, ow = (c.out_h, c.out_w) if op == Opcode.POOL else (c.in_h, c.in_w)
            x = self._maxpool_band(x, ld.pool_k, ld.pool_pad_t, ld.pool_pad_l, oh, ow)
        if op == Opcode.CONV:
            y = self._conv_band(x, wblob=c.wblob, cout=c.cout, kh=c.kh, kw=c.kw, sy=c.sy, sx=c.sx, dil=c.dil,
                                pad_t=c.pad_t, pad_l=c.pad_l, out_h=c.out_h, out_w=c.out_w,
                                zp_in=c.quant.zp_in, zp_out=c.quant.zp_out, act_min=c.quant.act_min,
                                act_max=c.quant.act_max)
            self._write_pixels(c.dst, y, c.dst_pix, cdiv(c.cout, R))
        elif op == Opcode.FIRE:
            sq = self._conv_band(x, wblob=c.w_sq, cout=c.squeeze, kh=1, kw=1, sy=1, sx=1, dil=1, pad_t=0,
                                 pad_l=0, out_h=c.in_h, out_w=c.in_w, zp_in=c.zp_in, zp_out=c.zp_sq,
                                 act_min=c.sq_min, act_max=c.sq_max)
            sq = sq[:, :, :cdiv(c.squeeze, R) * R]  # the buffer holds whole words
            e1_cb, e3_cb = cdiv(c.expand1, R), cdiv(c.expand3, R)
            common = dict(sy=1, sx=1, dil=1, out_h=c.out_h, out_w=c.in_w, zp_in=c.zp_sq, zp_out=c.zp_out,
                          act_min=c.out_min, act_max=c.out_max)
            e1 = self._conv_band(sq, wblob=c.w_e1, cout=c.expand1, kh=1, kw=1, pad_t=-c.halo_top, pad_l=0,
                                 **common)
            e3 = self._conv_band(sq, wblob=c.w_e3, cout=c.expand3, kh=3, kw=3, pad_t=1 - c.halo_top, pad_l=1,
                                 **common)
            self._write_pixels(c.dst, e1, e1_cb + e3_cb, e1_cb)
            self._write_pixels(c.dst + e1_cb, e3, e1_cb + e3_cb, e3_cb)
        elif op == Opcode.POOL:
            self._write_pixels(c.dst, x, c.dst_pix, ld.cb)
        elif op == Opcode.GAP:
            sums = x.reshape(-1, x.shape[2]).sum(axis=0, dtype=np.int64) - x.shape[0] * x.shape[1] * c.zp_in
            out = requantize(sums, c.m0, c.shift, c.zp_out, -128, 127).astype(np.int8)
            self._write_pixels(c.dst, out.reshape(1, 1, -1), ld.cb, ld.cb)

    def run(self, cmd_addr: int, count: int, profile_addr: int | None = None) -> tuple[ErrorCode, int]:
        """Run ``count`` commands from ``cmd_addr``; return ``(error code, index reached)``."""
        cmd_words = self.cfg.cmd_words
        for i in range(count):
            base = cmd_addr + i * cmd_words
            view = self._words(base, 1, 0, cmd_words)
            raw = (view[0] if view is not None else self.mem[(base + np.arange(cmd_words)) % len(self.mem)])
            raw = raw.tobytes()[:CMD_BYTES]
            try:
                self.execute(raw)
            except CommandError as e:
                return e.code, i
            if profile_addr is not None:
                pw = self.cfg.profile_words
                self.mem[profile_addr + i * pw:profile_addr + (i + 1) * pw] = 0
        return ErrorCode.NONE, count
