"""Emission: each operation as commands, band by band, with its weight blob.

A command's band is placed in the activation buffer away from the regions the previous command still
reads (``hw.isa.buffer_regions``), so the engine can load it while the previous command computes (the
sequencer checks the regions itself, and waits when they meet). Convolution, pool and average bands are
sized for half the buffer where a row fits, so consecutive bands alternate halves; a FIRE band may fill the
buffer but for its squeeze output, kept at the top: the next band's load only has to avoid that."""

from __future__ import annotations

import numpy as np

from hw.isa import CMD_BYTES, Opcode, buffer_regions, pack_command, unpack_command, write_span
from hw.layout import cdiv, pack_conv_blob
from quant.quantize import QDualConv, QMaxPool

from .packing import pair_packed_conv
from .planning import _Op, dual_pad_zero_point
from .program import MAX_CB, MAX_DIM, CompileError, Root, Step, TensorView


class _Emission:
    """Operations -> steps and weight blobs (a part of :class:`~sw.compiler.compile._Compiler`)."""

    #: A Fire layer whose first band's load would wait for the previous command (it reads what that one
    #: writes, or its buffer regions) and read more than LEAD_MIN_LOAD words starts with a band of a
    #: LEAD-th of the largest, then bands growing by LEAD_GROWTH (:meth:`_bands`): its load is short
    #: and each band's computation hides the next band's load. Below that, the extra bands' squeeze halo
    #: and pipeline fills cost more than the wait.
    LEAD = 4
    LEAD_GROWTH = 2.5
    LEAD_MIN_LOAD = 16_000
    #: The same for a convolution, whose extra band costs no halo computation; its lead band is followed
    #: by equal bands.
    CONV_LEAD_MIN_LOAD = 4_000
    #: A global average pool runs in at least this many chunks (:meth:`_emit_gap`).
    GAP_CHUNKS = 16

    def emit(self, ops: list[_Op], blob_base: int) -> tuple[list[Step], list[tuple[int, np.ndarray]]]:
        self._blob_top = blob_base
        self._blobs = []
        self._live = []  # the buffer regions the previous command reads while the next one loads
        self._writes = None  # the memory the previous command writes (None: no command yet)
        steps = []
        emit = {"conv": self._emit_conv, "fire": self._emit_fire, "pool": self._emit_pool, "gap": self._emit_gap}
        for op in ops:
            new = emit[op.kind](op)
            for st in new:
                st.source, st.output = op.src, op.out
            steps += new
        return steps, self._blobs

    def _blob(self, w_logical: np.ndarray, bias_eff, m0, shift, in_view: TensorView) -> int:
        """Place a weight blob whose input channels follow ``in_view``'s lanes; return its address."""
        R = self.R
        cout, cin, kh, kw = w_logical.shape
        wp = np.zeros((cout, in_view.cb(R) * R, kh, kw), dtype=np.int8)
        wp[:, in_view.lanes] = w_logical
        words = pack_conv_blob(wp, bias_eff, m0, shift, self.cfg)
        addr = self._blob_top
        self._blobs.append((addr, words))
        self._blob_top += len(words)
        return addr

    def _blob_size(self, cout, cin_lanes, kh, kw):
        cfg = self.cfg
        return cdiv(cout, cfg.cols) * (cfg.param_words + kh * kw * cdiv(cin_lanes, cfg.rows) * cfg.tile_words)

    def _load_spec(self, src: TensorView, r_lo: int, r_hi: int, pool: QMaxPool | None, ibuf: int = 0):
        """The LoadSpec for conv-input rows [r_lo, r_hi) of a layer reading ``src`` (through ``pool``)."""
        R = self.R
        if pool is None:
            p_lo, p_hi, extra = r_lo, r_hi, {}
        else:
            k, (ppt, ppl) = pool.kernel[0], pool.padding
            start = r_lo * 2 - ppt
            p_lo = max(start, 0)
            p_hi = min((r_hi - 1) * 2 - ppt + k, src.h)
            extra = dict(pool=1, pool_k=k, pool_pad_t=p_lo - start, pool_pad_l=ppl)
        cb = src.cb(R)
        spec = dict(src=src.addr(p_lo), src_rows=p_hi - p_lo, src_w=src.w, cb=cb,
                    src_pix=0 if src.pix == cb else src.pix, ibuf=ibuf, **extra)
        return spec, (p_hi - p_lo) * src.w * cb

    @staticmethod
    def _load_span(load: dict) -> tuple[int, int]:
        pix = load.get("src_pix") or load["cb"]
        return load["src"], (load["src_rows"] * load["src_w"] - 1) * pix + load["cb"]

    def _blob_span(self, addr: int) -> tuple[int, int]:
        for a, words in self._blobs:
            if a == addr:
                return a, len(words)
        raise AssertionError(addr)

    def _budget(self, rows_for, words_per_row: int) -> int:
        """The buffer words a layer's band may use: half the buffer where one output row's band fits it
        (so consecutive commands alternate halves), else all of it."""
        half = self.cfg.ibuf_depth // 2
        return half if rows_for(1) * words_per_row <= half else self.cfg.ibuf_depth

    def _place(self, words: int) -> int:
        """Where the next command's band of ``words`` goes: the first of 0, the top of the buffer or the end
        of a live region of the previous command that meets none of them (else 0: its load waits)."""
        depth = self.cfg.ibuf_depth
        for base in (0, depth - words, *(hi for _, hi in self._live)):
            if base >= 0 and base + words <= depth and not any(base < hi and lo < base + words
                                                                for lo, hi in self._live):
                return base
        return 0

    def _placed(self, cmd: bytes) -> bytes:
        """Note an emitted command's live buffer regions (for the next :meth:`_place`); return it."""
        op, c = unpack_command(cmd)
        self._live = buffer_regions(self.cfg, op, c)
        self._writes = write_span(self.cfg, op, c)
        return cmd

    def _load_waits(self, load: dict, band_words: int) -> bool:
        """Would a band load wait for the previous command: it reads memory that one writes, or no place in
        the buffer avoids that one's live regions?"""
        if self._writes is None:
            return True  # the first command: nothing to load beside
        lo, n = self._load_span(load)
        w_lo, w_hi = self._writes
        base = self._place(band_words)
        return (lo < w_hi and w_lo < lo + n) or any(base < hi and lo_ < base + band_words
                                                     for lo_, hi in self._live)

    def _bands(self, layer: str, out_h: int, rows_for, budget_words: int | None, words_per_row: int, what: str,
               lead: int = 0, growth: float | None = None):
        """Largest equal bands of output rows whose input fits ``budget_words`` (None: :meth:`_budget`).

        With ``lead`` > 0 a first band of a ``lead``-th of the largest comes before them (then bands
        growing ``growth`` times, if given, up to the largest): this layer's first load, which waits while
        it reads rows the previous layer's last band writes, is short, and its computation hides the next
        band's load."""
        if budget_words is None:
            budget_words = self._budget(rows_for, words_per_row)
        best = 0
        for n in range(1, out_h + 1):
            if rows_for(n) * words_per_row <= budget_words and rows_for(n) <= MAX_DIM:
                best = n
            else:
                break
        if best == 0:
            raise CompileError(layer, f"{what}: one output row needs {rows_for(1) * words_per_row} buffer words, "
                                      f"the engine has {budget_words} (ibuf_depth={self.cfg.ibuf_depth})")
        bands = []
        y = 0
        if lead and out_h > best // lead > 0:
            # The lead band, then (with growth) bands each at most growth times the one before.
            n = best // lead
            while y < out_h and n < best and (growth or y == 0):
                n = min(n, out_h - y)
                bands.append((y, n))
                y += n
                n = int(n * (growth or 1))
            if y == out_h:
                return bands
        nb = cdiv(out_h - y, best)
        size = cdiv(out_h - y, nb)
        while y < out_h:
            n = min(size, out_h - y)
            bands.append((y, n))
            y += n
        return bands

    def _conv_input_rows(self, oy0, n, sy, pad_t, kh, dil, h_in):
        r_lo = max(oy0 * sy - pad_t, 0)
        r_hi = min((oy0 + n - 1) * sy - pad_t + (kh - 1) * dil + 1, h_in)
        return r_lo, r_hi

    def _emit_conv(self, op: _Op) -> list[Step]:
        if getattr(op.node, "depthwise", False):
            return self._emit_depthwise(op)
        cfg, R = self.cfg, self.R
        node = op.node
        src = self.views[op.src]
        pool = op.pool
        if isinstance(node, QDualConv):
            in_view = src
            w_log = node.weight
            zp_pad = dual_pad_zero_point(node)
        else:
            in_view = src
            w_log = node.weight
            zp_pad = node.zp_in
        cin_cb = in_view.cb(R)
        if cin_cb > MAX_CB:
            raise CompileError(node.name, f"input of {cin_cb} channel blocks: at most {MAX_CB}")
        if pool is not None and cin_cb > cfg.pool_max_cb:
            raise CompileError(pool.name, f"{cin_cb} channel blocks to pool on the way in: the engine's pool "
                                          f"holds {cfg.pool_max_cb}")
        out = self.views[op.out]
        cout, _, kh, kw = w_log.shape
        _, h_out, w_out = node.shape
        if pool is not None:
            _, h_in, w_in = pool.shape
        else:
            h_in, w_in = in_view.h, in_view.w
        sy, sx = node.stride
        pt, pl = node.padding[0], node.padding[1]
        dil = node.dilation[0]
        packed = op.src in self.packed_inputs
        sx_eff, pl_eff = sx, pl
        if packed:
            w_log, pl_eff = pair_packed_conv(w_log, pl, R)
            kw, sx_eff, w_in = w_log.shape[3], 1, in_view.w
            in_view = TensorView(in_view.name, R, in_view.h, in_view.w, in_view.root, 0, np.arange(R))
        if kh * kw * cin_cb >= 1 << 16:
            raise CompileError(node.name, f"{kh}x{kw} kernel over {cin_cb} channel blocks: {kh * kw * cin_cb} "
                                          f"weight tiles per output tile, the engine counts up to {(1 << 16) - 1}")
        wblob = self._blob(w_log, node.effective_bias, node.m0, node.shift, in_view)
        blob_w = self._blob_size(cout, cin_cb * R, kh, kw)

        def rows_for(n):  # input rows of a band of n output rows that is not clipped by the image edges
            return min((n - 1) * sy + (kh - 1) * dil + 1, h_in)

        bands = self._bands(node.name, h_out, rows_for, None, w_in * cin_cb, "convolution band")
        r_lo, r_hi = self._conv_input_rows(0, bands[0][1], sy, pt, kh, dil, h_in)
        first_load, first_words = self._load_spec(src if pool is None else self.views[op.src], r_lo, r_hi, pool)
        lead_px = max(bands[0][1] // self.LEAD, 1) * w_out
        # (A lead band's passes must be long enough for the weights to stream behind them.)
        if (first_words > self.CONV_LEAD_MIN_LOAD and lead_px >= 4 * cfg.tile_words
                and self._load_waits(first_load, (r_hi - r_lo) * w_in * cin_cb)):
            bands = self._bands(node.name, h_out, rows_for, None, w_in * cin_cb, "convolution band",
                                lead=self.LEAD)
        steps = []
        macs_row = w_out * cout * node.weight.shape[1] * node.kernel_size[0] * node.kernel_size[1]
        for bi, (oy0, n) in enumerate(bands):
            r_lo, r_hi = self._conv_input_rows(oy0, n, sy, pt, kh, dil, h_in)
            ibuf = self._place((r_hi - r_lo) * w_in * cin_cb)
            load, read_words = self._load_spec(src if pool is None else self.views[op.src], r_lo, r_hi, pool, ibuf)
            cmd = self._placed(pack_command(
                Opcode.CONV, load=load, in_h=r_hi - r_lo, in_w=w_in, kh=kh, kw=kw, sy=sy, sx=sx_eff, dil=dil,
                pad_t=r_lo - (oy0 * sy - pt), pad_l=pl_eff, out_h=n, out_w=w_out, cout=cout,
                quant=dict(zp_in=zp_pad, zp_out=node.zp_out, act_min=node.act_min, act_max=node.act_max),
                wblob=wblob, dst=out.addr(oy0), dst_pix=out.pix))
            passes = cdiv(n * w_out, cfg.acc_depth)
            steps.append(Step(
                layer=node.name, kind="conv", command=cmd, macs=n * macs_row,
                read_bytes=R * (read_words + passes * blob_w) + CMD_BYTES,
                write_bytes=R * n * w_out * cdiv(cout, R), band=(bi, len(bands)),
                reads=[self._load_span(load), self._blob_span(wblob)],
                writes=[(out.addr(oy0), (n * w_out - 1) * out.pix + cdiv(cout, R))],
                detail=f"{node.kernel_size[0]}x{node.kernel_size[1]}/{sy} {node.weight.shape[1]}->{cout} "
                       f"{h_out}x{w_out}"
                       + (f" +pool{pool.kernel[0]}x{pool.kernel[1]}" if pool is not None else "")
                       + (" packed" if packed else "")))
        return steps

    def _emit_depthwise(self, op: _Op) -> list[Step]:
        """A depthwise convolution as one CONV per band and output tile of ``cols`` channels, each loading
        only the tile's own input channel blocks (its weights are the tile's diagonal block)."""
        cfg, R, C = self.cfg, self.R, self.cfg.cols
        node, pool = op.node, op.pool
        src, out = self.views[op.src], self.views[op.out]
        cout, cin, kh, kw = node.weight.shape
        contiguous = (np.array_equal(src.lanes, np.arange(cin)) and np.array_equal(out.lanes, np.arange(cout)))
        if cin != cout or not contiguous:
            raise CompileError(node.name, "a depthwise convolution whose input or output is stored with gaps "
                                          "between its channels")
        if pool is not None:
            raise CompileError(node.name, "a max pool fused into a depthwise convolution")
        _, h_out, w_out = node.shape
        sy, sx = node.stride
        pt, pl = node.padding[0], node.padding[1]
        dil = node.dilation[0]
        bias = node.effective_bias
        steps = []
        for c0 in range(0, cout, C):
            c1 = min(c0 + C, cout)
            tile_cb = cdiv(c1 - c0, R)
            view = TensorView(src.name, c1 - c0, src.h, src.w, src.root, src.offset + c0 // R, np.arange(c1 - c0))
            wblob = self._blob(node.weight[c0:c1, c0:c1], bias[c0:c1], node.m0[c0:c1], node.shift[c0:c1], view)
            blob_w = self._blob_size(c1 - c0, tile_cb * R, kh, kw)

            def rows_for(n):
                return min((n - 1) * sy + (kh - 1) * dil + 1, src.h)

            bands = self._bands(node.name, h_out, rows_for, None, src.w * tile_cb, "depthwise band")
            for bi, (oy0, n) in enumerate(bands):
                r_lo, r_hi = self._conv_input_rows(oy0, n, sy, pt, kh, dil, src.h)
                ibuf = self._place((r_hi - r_lo) * src.w * tile_cb)
                load, read_words = self._load_spec(view, r_lo, r_hi, None, ibuf)
                dst = out.addr(oy0) + c0 // R
                cmd = self._placed(pack_command(
                    Opcode.CONV, load=load, in_h=r_hi - r_lo, in_w=src.w, kh=kh, kw=kw, sy=sy, sx=sx, dil=dil,
                    pad_t=r_lo - (oy0 * sy - pt), pad_l=pl, out_h=n, out_w=w_out, cout=c1 - c0,
                    quant=dict(zp_in=node.zp_in, zp_out=node.zp_out, act_min=node.act_min, act_max=node.act_max),
                    wblob=wblob, dst=dst, dst_pix=out.pix))
                passes = cdiv(n * w_out, cfg.acc_depth)
                steps.append(Step(
                    layer=node.name, kind="conv", command=cmd, macs=n * w_out * (c1 - c0) * kh * kw,
                    read_bytes=R * (read_words + passes * blob_w) + CMD_BYTES,
                    write_bytes=R * n * w_out * tile_cb, band=(bi, len(bands)),
                    reads=[self._load_span(load), self._blob_span(wblob)],
                    writes=[(dst, (n * w_out - 1) * out.pix + tile_cb)],
                    detail=f"dw {kh}x{kw}/{sy} {cout} {h_out}x{w_out}"))
        return steps

    def _emit_fire(self, op: _Op) -> list[Step]:
        cfg, R, g = self.cfg, self.R, self.g
        f = op.node
        sq, e1, e3 = g[f.squeeze], g[f.expand1x1], g[f.expand3x3]
        src = self.views[op.src]
        pool = op.pool
        cin_cb = src.cb(R)
        if e1.out_channels % R:
            raise CompileError(f.concat, f"expand1x1 has {e1.out_channels} channels: the FIRE command needs a "
                                         f"multiple of {R} to place expand3x3 after it")
        if pool is not None and cin_cb > cfg.pool_max_cb:
            raise CompileError(pool.name, f"{cin_cb} channel blocks to pool: the engine holds {cfg.pool_max_cb}")
        if sq.stride != (1, 1) or sq.kernel_size != (1, 1) or any(sq.padding) \
                or e1.stride != (1, 1) or any(e1.padding) or e3.stride != (1, 1) \
                or e3.padding != (1, 1, 1, 1) or e3.dilation != (1, 1) or e1.zp_in != e3.zp_in:
            raise CompileError(f.concat, "not the Fire shape the engine runs (squeeze 1x1, expand 1x1 and "
                                         "3x3/1 padding 1)")
        out = self.views[op.out]
        if out.offset != 0 or out.pix != cdiv(e1.out_channels, R) + cdiv(e3.out_channels, R):
            raise CompileError(f.concat, "a Fire output placed inside another tensor is not supported")
        _, h, w = e1.shape
        sq_cb = cdiv(sq.out_channels, R)
        w_sq = self._blob(sq.weight, sq.effective_bias, sq.m0, sq.shift, src)
        sq_view = TensorView("sq", sq.out_channels, h, w, Root("sq", h, w, sq_cb), 0, np.arange(sq.out_channels))
        w_e1 = self._blob(e1.weight, e1.effective_bias, e1.m0, e1.shift, sq_view)
        w_e3 = self._blob(e3.weight, e3.effective_bias, e3.m0, e3.shift, sq_view)
        blob_w = [self._blob_size(c.out_channels, cb * R, *c.kernel_size)
                  for c, cb in ((sq, cin_cb), (e1, sq_cb), (e3, sq_cb))]

        def rows_for(n):
            return min(n + 2, h)

        bands = self._bands(f.concat, h, rows_for, cfg.ibuf_depth, w * (cin_cb + sq_cb), "Fire band")
        first_rows = min(bands[0][1] + 1, h)
        first_load, first_words = self._load_spec(src, 0, first_rows, pool)
        if first_words > self.LEAD_MIN_LOAD and self._load_waits(first_load, first_rows * w * cin_cb):
            bands = self._bands(f.concat, h, rows_for, cfg.ibuf_depth, w * (cin_cb + sq_cb), "Fire band",
                                lead=self.LEAD, growth=self.LEAD_GROWTH)
        steps = []
        macs_row = w * (sq.out_channels * sq.in_channels + e1.out_channels * e1.in_channels
                        + e3.out_channels * e3.in_channels * 9)
        for bi, (oy0, n) in enumerate(bands):
            s_lo, s_hi = max(oy0 - 1, 0), min(oy0 + n + 1, h)
            in_h = s_hi - s_lo
            band_words, sq_words = in_h * w * cin_cb, in_h * w * sq_cb
            ibuf = self._place(band_words)
            if ibuf + band_words + sq_words > cfg.ibuf_depth:
                ibuf = 0
            sq_ibuf = cfg.ibuf_depth - sq_words  # at the top, out of the way of the next band
            load, read_words = self._load_spec(src, s_lo, s_hi, pool, ibuf)
            cmd = self._placed(pack_command(
                Opcode.FIRE, load=load, in_h=in_h, in_w=w, halo_top=int(oy0 > 0), out_h=n,
                squeeze=sq.out_channels, expand1=e1.out_channels, expand3=e3.out_channels, sq_ibuf=sq_ibuf,
                zp_in=sq.zp_in, zp_sq=sq.zp_out, zp_out=e1.zp_out, sq_min=sq.act_min, sq_max=sq.act_max,
                out_min=e1.act_min, out_max=e1.act_max, w_sq=w_sq, w_e1=w_e1, w_e3=w_e3, dst=out.addr(oy0)))
            passes_sq = cdiv(in_h * w, cfg.acc_depth)
            passes = cdiv(n * w, cfg.acc_depth)
            steps.append(Step(
                layer=f.concat, kind="fire", command=cmd, macs=n * macs_row,
                read_bytes=R * (read_words + passes_sq * blob_w[0] + passes * (blob_w[1] + blob_w[2])) + CMD_BYTES,
                write_bytes=R * n * w * out.pix, band=(bi, len(bands)),
                reads=[self._load_span(load), *(self._blob_span(a) for a in (w_sq, w_e1, w_e3))],
                writes=[(out.addr(oy0), n * w * out.pix)],
                detail=f"{sq.in_channels}->{sq.out_channels}->{e1.out_channels}+{e3.out_channels} {h}x{w}"
                       + (f" +pool{pool.kernel[0]}x{pool.kernel[1]}" if pool is not None else "")))
        if e1.zp_out != e3.zp_out or e1.act_min != e3.act_min or e1.act_max != e3.act_max:
            raise CompileError(f.concat, "expand1x1 and expand3x3 must share the output quantization (concat)")
        return steps

    def _one_input(self, op: _Op) -> tuple[object, TensorView, TensorView, int]:
        """A pool's or an average's node, input and output views, and the input's channel blocks."""
        src = self.views[op.src]
        return op.node, src, self.views[op.out], src.cb(self.R)

    def _emit_pool(self, op: _Op) -> list[Step]:
        cfg, R = self.cfg, self.R
        node, src, out, cb = self._one_input(op)
        if cb > cfg.pool_max_cb:
            raise CompileError(node.name, f"{cb} channel blocks: the engine's pool holds {cfg.pool_max_cb}")
        _, h_out, w_out = node.shape
        bands = self._bands(node.name, h_out, lambda n: n, None, w_out * cb, "pool band")
        steps = []
        for bi, (oy0, n) in enumerate(bands):
            load, read_words = self._load_spec(src, oy0, oy0 + n, node, self._place(n * w_out * cb))
            cmd = self._placed(pack_command(Opcode.POOL, load=load, out_h=n, out_w=w_out, dst=out.addr(oy0),
                                            dst_pix=out.pix))
            steps.append(Step(layer=node.name, kind="pool", command=cmd, macs=0,
                              read_bytes=R * read_words + CMD_BYTES, write_bytes=R * n * w_out * cb,
                              band=(bi, len(bands)), detail=f"maxpool {node.kernel[0]}x{node.kernel[1]}/2",
                              reads=[self._load_span(load)],
                              writes=[(out.addr(oy0), (n * w_out - 1) * out.pix + cb)]))
        return steps

    def _emit_gap(self, op: _Op) -> list[Step]:
        cfg, R = self.cfg, self.R
        node, src, out, cb = self._one_input(op)
        if not np.array_equal(src.lanes, np.arange(src.channels)) or out.offset != 0:
            raise CompileError(node.name, "averaging a tensor stored with gaps between its channels")
        per = cfg.ibuf_depth // (src.h * src.w)
        # Short chunks (GAP_CHUNKS at least): the first load, which waits for the layer before, is short,
        # and each chunk's average (a word a cycle, as its load) hides the next chunk's load.
        per = min((cfg.ibuf_depth // 2) // (src.h * src.w), cdiv(cb, self.GAP_CHUNKS)) or per
        if per == 0:
            raise CompileError(node.name, f"a {src.h}x{src.w} map does not fit the buffer for averaging")
        steps = []
        chunks = [(c0, min(per, cb - c0)) for c0 in range(0, cb, per)]
        for bi, (c0, n) in enumerate(chunks):
            load = dict(src=src.addr() + c0, src_rows=src.h, src_w=src.w, cb=n,
                        src_pix=0 if src.pix == n else src.pix, ibuf=self._place(src.h * src.w * n))
            cmd = self._placed(pack_command(Opcode.GAP, load=load, m0=int(node.m0), shift=int(node.shift),
                                            zp_in=node.zp_in, zp_out=node.zp_out, dst=out.addr() + c0))
            steps.append(Step(layer=node.name, kind="gap", command=cmd, macs=0,
                              read_bytes=R * src.h * src.w * n + CMD_BYTES, write_bytes=R * n,
                              band=(bi, len(chunks)), detail=f"global average {src.h}x{src.w}",
                              reads=[self._load_span(load)], writes=[(out.addr() + c0, n)]))
        if node.act_min != -128 or node.act_max != 127:
            raise CompileError(node.name, "a clamped global average pool (the engine's is unclamped)")
        return steps
