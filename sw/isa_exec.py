"""The command set, executed on a memory image with the golden model: the engine's functional specification.

:class:`IsaMachine` does what the gateware does with a command list, word for
word in memory (padding lanes included), using :mod:`quant.golden` for the
arithmetic and :func:`hw.isa.check_command` for the error checks. It is the
golden backend of the driver and the reference every Verilator run is compared
against. It has no notion of time: profile records hold zero cycles.
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

__all__ = ["IsaMachine", "CommandError"]


class CommandError(RuntimeError):
    """A command the engine refuses; carries its index and :class:`ErrorCode`."""

    def __init__(self, index: int, code: ErrorCode):
        super().__init__(f"command {index} refused by the engine: {code.name}")
        self.index = index
        self.code = code


def _s8(v: int) -> int:
    return int(v)


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

    # ---- memory helpers --------------------------------------------------------------------
    def _read_band(self, src: int, rows: int, width: int, cb: int, src_pix: int) -> np.ndarray:
        """``(cb*R, rows, width)`` int8 lanes of a band (padding lanes included)."""
        R = self.cfg.rows
        stride = src_pix or cb
        pix = np.arange(rows * width)
        idx = (src + pix[:, None] * stride + np.arange(cb)[None, :]).reshape(-1)
        words = self.mem[idx % len(self.mem)].reshape(rows, width, cb * R)
        return words.transpose(2, 0, 1).copy()

    def _write_pixels(self, dst: int, lanes: np.ndarray, pix_words: int, n_words: int):
        """Write the first ``n_words`` words of every pixel of ``lanes`` (C, H, W) at ``dst + p * pix_words``."""
        R = self.cfg.rows
        c, h, w = lanes.shape
        assert c >= n_words * R
        words = lanes[:n_words * R].reshape(n_words, R, h * w).transpose(2, 0, 1)  # (pix, n_words, R)
        idx = (dst + np.arange(h * w)[:, None] * pix_words + np.arange(n_words)[None, :]).reshape(-1)
        self.mem[idx % len(self.mem)] = words.reshape(-1, R)

    # ---- operations -------------------------------------------------------------------------------
    @staticmethod
    def _maxpool_band(x, k, pad_t, pad_l, out_h, out_w):
        """Stride-2 max pool of a band with explicit output size; padding and overhang never win."""
        c, h, w = x.shape
        need_h, need_w = (out_h - 1) * 2 + k, (out_w - 1) * 2 + k
        canvas = np.full((c, max(need_h, pad_t + h), max(need_w, pad_l + w)), -32768, dtype=np.int16)
        canvas[:, pad_t:pad_t + h, pad_l:pad_l + w] = x
        out = np.full((c, out_h, out_w), -32768, dtype=np.int16)
        for ky in range(k):
            for kx in range(k):
                out = np.maximum(out, canvas[:, ky:ky + 2 * out_h:2, kx:kx + 2 * out_w:2][:, :out_h, :out_w])
        if (out == -32768).any():
            raise ValueError("a pooling window holds no input element")
        return out.astype(np.int8)

    def _conv_band(self, x, *, wblob, cout, kh, kw, sy, sx, dil, pad_t, pad_l, out_h, out_w, zp_in, zp_out,
                   act_min, act_max):
        """Convolution of a buffer tensor (all lanes) with a weight blob, band-local geometry."""
        cfg = self.cfg
        cin_lanes, h, w = x.shape
        n_cot = cdiv(cout, cfg.cols)
        n_words = n_cot * (cfg.param_words + kh * kw * cdiv(cin_lanes, cfg.rows) * cfg.tile_words)
        blob = self.mem[(wblob + np.arange(n_words)) % len(self.mem)]
        wt, bias, m0, shift = unpack_conv_blob(blob, n_cot * cfg.cols, cin_lanes, kh, kw, cfg)
        # The exact input window the outputs read, padded with the input zero point.
        r0, c0 = -pad_t, -pad_l
        r1 = (out_h - 1) * sy - pad_t + (kh - 1) * dil + 1
        c1 = (out_w - 1) * sx - pad_l + (kw - 1) * dil + 1
        canvas = np.full((cin_lanes, r1 - r0, c1 - c0), zp_in, dtype=np.int64)
        ys, ye = max(r0, 0), min(r1, h)
        xs, xe = max(c0, 0), min(c1, w)
        if ys < ye and xs < xe:
            canvas[:, ys - r0:ye - r0, xs - c0:xe - c0] = x[:, ys:ye, xs:xe]
        out = golden.conv2d(canvas.astype(np.int8), wt, bias, m0, shift, zp_in, zp_out, act_min, act_max,
                            stride=(sy, sx), padding=0, dilation=dil, bias_folded=True)
        assert out.shape[1:] == (out_h, out_w), (out.shape, out_h, out_w)
        return out

    def execute(self, raw: bytes):
        """Run one command; raise :class:`CommandError` (index 0) if the engine would refuse it."""
        code = check_command(self.cfg, raw)
        if code != ErrorCode.NONE:
            raise CommandError(0, code)
        op, c = unpack_command(raw)
        R = self.cfg.rows
        ld = c.load
        x = self._read_band(ld.src, ld.src_rows, ld.src_w, ld.cb, ld.src_pix)
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
            sq = sq[:cdiv(c.squeeze, R) * R]  # the buffer holds whole words
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
            sums = x.reshape(x.shape[0], -1).astype(np.int64).sum(axis=1) - x.shape[1] * x.shape[2] * c.zp_in
            out = requantize(sums, c.m0, c.shift, c.zp_out, -128, 127).astype(np.int8)
            self._write_pixels(c.dst, out.reshape(-1, 1, 1), ld.cb, ld.cb)

    def run(self, cmd_addr: int, count: int, profile_addr: int | None = None) -> tuple[ErrorCode, int]:
        """Run ``count`` commands from ``cmd_addr``; return ``(error code, index reached)``."""
        cmd_words = self.cfg.cmd_words
        for i in range(count):
            base = cmd_addr + i * cmd_words
            raw = self.mem[(base + np.arange(cmd_words)) % len(self.mem)].tobytes()[:CMD_BYTES]
            try:
                self.execute(raw)
            except CommandError as e:
                return e.code, i
            if profile_addr is not None:
                pw = self.cfg.profile_words
                self.mem[profile_addr + i * pw:profile_addr + (i + 1) * pw] = 0
        return ErrorCode.NONE, count
