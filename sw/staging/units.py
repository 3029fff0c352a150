"""Units: each program step as the board runs it (whole, in sub-bands or in output-channel slices, with
compact scattered outputs and gathered inputs)."""

from __future__ import annotations

import dataclasses

from hw.isa import CMD_BYTES, EngineConfig, Opcode
from sw.compiler import Program

from .commands import StagingError, _cdiv, _get, _set


@dataclasses.dataclass(frozen=True)
class Scatter:
    """An output kept compact on the board: ``n_pix`` pixels of ``words`` words, scattered by the host.

    ``pieces``: ``(word in the compact pixel, word in the image's pixel, words)``; image pixel ``p``
    starts at ``dst + p * pix``.
    """

    dst: int
    pix: int
    n_pix: int
    words: int
    pieces: tuple[tuple[int, int, int], ...]

    @property
    def span(self) -> tuple[int, int]:
        """The program memory it lands in, as ``(start, end)``."""
        lo = min(o for _, o, _ in self.pieces)
        hi = max(o + n for _, o, n in self.pieces)
        return self.dst + lo, self.dst + (self.n_pix - 1) * self.pix + hi


@dataclasses.dataclass(frozen=True)
class Gather:
    """An input read in part of each pixel, gathered by the host: ``n_pix`` pixels of ``cb`` words."""

    src: int
    pix: int
    n_pix: int
    cb: int

    @property
    def span(self) -> tuple[int, int]:
        return self.src, self.src + (self.n_pix - 1) * self.pix + self.cb


@dataclasses.dataclass
class Unit:
    """One command as the board runs it: a program step, or a slice of one.

    Attributes
    ----------
    step : int
        The program step it comes from.
    command : bytes
        In program addresses (a slice has its own channel counts and blobs;
        a compact output or input its own pixel stride).
    reads : list of (addr, words)
        Program memory it reads in place (weights, a contiguous input band).
    writes : list of (addr, words)
        Program memory it writes in place, each span whole.
    scatter : Scatter or None
    gather : Gather or None
    """

    step: int
    command: bytes
    reads: list[tuple[int, int]]
    writes: list[tuple[int, int]]
    scatter: Scatter | None = None
    gather: Gather | None = None

    @property
    def private_words(self) -> int:
        """Board words of its compact regions."""
        return ((self.scatter.n_pix * self.scatter.words if self.scatter else 0)
                + (self.gather.n_pix * self.gather.cb if self.gather else 0))


def _load(value: int, op: Opcode, st_reads) -> tuple[list, Gather | None, int]:
    """The load's read span (or its gather) and the command with a gathered load rewritten."""
    cb = _get(value, op, "load", "cb")
    spix = _get(value, op, "load", "src_pix")
    n_pix = _get(value, op, "load", "src_rows") * _get(value, op, "load", "src_w")
    if spix in (0, cb) or n_pix == 1:
        return [st_reads[0]], None, value
    return [], Gather(_get(value, op, "load", "src"), spix, n_pix, cb), _set(value, op, "load", "src_pix", 0)


def _units_of(program: Program, i: int, room: int) -> list[Unit]:
    """The units of step ``i``: compact partial outputs and inputs, slices when it does not fit ``room``."""
    cfg = program.config
    R, C = cfg.rows, cfg.cols
    st = program.steps[i]
    value = int.from_bytes(st.command, "little")
    try:
        op = Opcode(value & 0xF)
    except ValueError:
        raise StagingError(f"step {i} ({st.layer}) is not a command (opcode {value & 0xF})") from None
    load_reads, gather, value = _load(value, op, st.reads)
    blobs = list(st.reads[1:])
    fixed = cfg.cmd_words + cfg.profile_words + sum(n for _, n in load_reads) + (
        gather.n_pix * gather.cb if gather else 0)

    def unit(v, reads, writes, scatter=None):
        return Unit(i, v.to_bytes(CMD_BYTES, "little"), reads, writes, scatter, gather)

    if op == Opcode.GAP:
        return [unit(value, load_reads, list(st.writes))]
    if op == Opcode.POOL:
        n_pix = _get(value, op, "out_h") * _get(value, op, "out_w")
        dst, pix, cb = _get(value, op, "dst"), _get(value, op, "dst_pix"), _get(value, op, "load", "cb")
        if pix == cb or n_pix == 1:
            return [unit(value, load_reads, list(st.writes))]
        return [unit(_set(value, op, "dst_pix", cb), load_reads, [], Scatter(dst, pix, n_pix, cb, ((0, 0, cb),)))]

    if op == Opcode.CONV:
        units = _conv_units(cfg, i, st, value, gather, room)
        if units is None:
            raise StagingError(f"step {i} ({st.layer}): a convolution that does not fit {room} words of board "
                               f"memory in sub-bands of one output row nor in slices of one output-channel tile")
        return units

    # FIRE: the output pixel is expand1 then expand3, written whole.
    n_pix = _get(value, op, "out_h") * _get(value, op, "in_w")
    dst = _get(value, op, "dst")
    e1, e3 = _get(value, op, "expand1"), _get(value, op, "expand3")
    (w_sq, n_sq), (w_e1, n_e1), (w_e3, n_e3) = blobs
    e1_cb, e3_cb = _cdiv(e1, R), _cdiv(e3, R)
    pix = e1_cb + e3_cb
    if fixed + n_sq + n_e1 + n_e3 + n_pix * pix <= room:
        return [unit(value, load_reads + blobs, list(st.writes))]
    n1, n3 = _cdiv(e1, C), _cdiv(e3, C)
    per1, per3 = n_e1 // n1, n_e3 // n3
    for s in range(2, min(n1, n3) + 1):
        cuts1 = [j * n1 // s for j in range(s + 1)]
        cuts3 = [j * n3 // s for j in range(s + 1)]
        worst = max((cuts1[j + 1] - cuts1[j]) * (per1 + n_pix * C // R)
                    + (cuts3[j + 1] - cuts3[j]) * (per3 + n_pix * C // R) for j in range(s))
        if fixed + n_sq + worst <= room:
            break
    else:
        raise StagingError(f"step {i} ({st.layer}): a Fire module that does not fit {room} words of board memory "
                           f"even cut into {min(n1, n3)} slices (its input and squeeze weights take {fixed + n_sq})")
    units = []
    for j in range(s):
        a1, b1, a3, b3 = cuts1[j], cuts1[j + 1], cuts3[j], cuts3[j + 1]
        c1 = min(e1, b1 * C) - a1 * C
        c3 = min(e3, b3 * C) - a3 * C
        w1, w3 = _cdiv(c1, R), _cdiv(c3, R)
        v = _set(value, op, "expand1", c1)
        v = _set(v, op, "expand3", c3)
        v = _set(v, op, "w_e1", w_e1 + a1 * per1)
        v = _set(v, op, "w_e3", w_e3 + a3 * per3)
        reads = load_reads + [(w_sq, n_sq), (w_e1 + a1 * per1, (b1 - a1) * per1), (w_e3 + a3 * per3, (b3 - a3) * per3)]
        units.append(unit(v, reads, [], Scatter(dst, pix, n_pix, w1 + w3,
                                               ((0, a1 * C // R, w1), (w1, e1_cb + a3 * C // R, w3)))))
    return units


def _conv_units(cfg: EngineConfig, i: int, st, value: int, gather: Gather | None, room: int) -> list[Unit] | None:
    """A convolution band as units that fit ``room`` words: whole, in sub-bands of rows, or in channel slices.

    Sub-bands of output rows keep the weights (which then stay on the board from one sub-band to the next);
    slices of output-channel tiles read the input band again each. None when neither fits.
    """
    R, C = cfg.rows, cfg.cols
    op = Opcode.CONV
    (wblob, blob_words), = st.reads[1:]
    out_h, out_w = _get(value, op, "out_h"), _get(value, op, "out_w")
    dst, pix, cout = _get(value, op, "dst"), _get(value, op, "dst_pix"), _get(value, op, "cout")
    n_cot = _cdiv(cout, C)
    per_cot = blob_words // n_cot
    full = _cdiv(cout, R)
    src, src_w = _get(value, op, "load", "src"), _get(value, op, "load", "src_w")
    cb, spix = _get(value, op, "load", "cb"), _get(value, op, "load", "src_pix")
    stride_in = spix or cb     # the gather (if any) already set src_pix to 0: its stride is the gather's
    if gather is not None:
        stride_in = gather.pix
    area = cfg.cmd_words + cfg.profile_words

    def band(a: int, b: int):
        """The command, input span/gather and output of output rows [a, b)."""
        sy, kh, dil = _get(value, op, "sy"), _get(value, op, "kh"), _get(value, op, "dil")
        pad_t = _get(value, op, "pad_t")
        pad_t -= 16 if pad_t & 8 else 0                   # signed(4)
        in_h = _get(value, op, "in_h")
        r_lo = max(0, a * sy - pad_t)
        r_hi = min(in_h, (b - 1) * sy - pad_t + (kh - 1) * dil + 1)
        v = value
        if (a, b) != (0, out_h):
            v = _set(v, op, "load", "src", src + r_lo * src_w * stride_in)
            v = _set(v, op, "load", "src_rows", r_hi - r_lo)
            v = _set(v, op, "in_h", r_hi - r_lo)
            new_pad = pad_t - a * sy + r_lo
            if not -8 <= new_pad <= 7:
                return None
            v = _set(v, op, "pad_t", new_pad & 0xF)
            v = _set(v, op, "out_h", b - a)
            v = _set(v, op, "dst", dst + a * out_w * pix)
        if (a, b) == (0, out_h):    # the band as compiled (a pooled load reads more rows than in_h)
            return v, ([] if gather else [st.reads[0]]), gather, out_h * out_w, dst
        n_in = (r_hi - r_lo) * src_w
        if gather is None:
            inputs, g = [(src + r_lo * src_w * stride_in, (n_in - 1) * stride_in + cb)], None
        else:
            inputs, g = [], Gather(gather.src + r_lo * src_w * stride_in, gather.pix, n_in, cb)
        return v, inputs, g, (b - a) * out_w, dst + a * out_w * pix

    def footprint(inputs, g, n_pix, blob, words):
        return area + sum(n for _, n in inputs) + (g.n_pix * g.cb if g else 0) + blob + n_pix * words

    def whole_channels(a, b):
        got = band(a, b)
        if got is None:
            return None
        v, inputs, g, n_pix, d = got
        if footprint(inputs, g, n_pix, blob_words, full) > room:
            return None
        if pix == full or n_pix == 1:
            return Unit(i, v.to_bytes(CMD_BYTES, "little"), inputs + [(wblob, blob_words)],
                        [(d, (n_pix - 1) * pix + full)], None, g)
        return Unit(i, _set(v, op, "dst_pix", full).to_bytes(CMD_BYTES, "little"), inputs + [(wblob, blob_words)],
                    [], Scatter(d, pix, n_pix, full, ((0, 0, full),)), g)

    # Sub-bands of output rows, the fewest that fit.
    a_plain = whole_channels(0, out_h)
    if a_plain is not None:
        return [a_plain]
    if not _get(value, op, "load", "pool"):       # a pooled load's rows do not split this simply
        for m in range(2, out_h + 1):
            edges = [out_h * j // m for j in range(m + 1)]
            units = [whole_channels(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
            if all(u is not None for u in units):
                return units
    # Slices of k output-channel tiles over the whole band.
    got = band(0, out_h)
    v0, inputs, g, n_pix, d = got
    fixed = footprint(inputs, g, 0, 0, 0)
    k = (room - fixed) // (per_cot + n_pix * (C // R))
    if n_cot == 1 or k < 1:
        return None
    units = []
    for t0 in range(0, n_cot, k):
        t1 = min(n_cot, t0 + k)
        c_lo, c_hi = t0 * C, min(cout, t1 * C)
        words = _cdiv(c_hi - c_lo, R)
        v = _set(v0, op, "cout", c_hi - c_lo)
        v = _set(v, op, "wblob", wblob + t0 * per_cot)
        v = _set(v, op, "dst_pix", words)
        units.append(Unit(i, v.to_bytes(CMD_BYTES, "little"), inputs + [(wblob + t0 * per_cot, (t1 - t0) * per_cot)],
                          [], Scatter(d, pix, n_pix, words, ((0, c_lo // R, words),)), g))
    return units
