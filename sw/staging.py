"""Running a compiled program on a board whose memory is smaller than the program's, and what it costs.

A :class:`~sw.compiler.Program` addresses one flat memory holding every weight
blob and activation (SqueezeNet 1.1: about 1.6 MB). A board has far less (the
iCEBreaker 128 KiB). :class:`StagedTransport` is a
:class:`~sw.transport.Transport` over the board's own that keeps a host-side
image of the program's whole memory: the driver, :class:`~sw.runtime.Session`
and :func:`~sw.runtime.run_network` write to and read from the image as if it
were the engine's memory, and a run (``CTRL.START``) is carried out in
*groups* of consecutive commands whose memory fits the board:

1. what the group reads (``Step.reads``: input band, weight blobs) and no
   earlier command of the group writes is uploaded from the image;
2. the group's commands, relocated (every address field moved into the
   board's range, and checked again with :func:`hw.isa.check_command`), are
   written at the top of the board's memory and run;
3. what it writes (``Step.writes``) that a later command or the host reads is
   downloaded into the image, with the profile records.

Spans that overlap or touch are placed as one contiguous segment, so every
address a command derives from a field stays inside its segment. Three
rewrites keep a command's memory small:

* an output written in part of each pixel (a concat member) goes to a
  *compact* region on the board (``dst_pix`` = the words written) and is
  scattered into the image by the host;
* an input read in part of each pixel (``src_pix`` > ``cb``) is gathered by
  the host into a compact region (``src_pix`` = 0);
* a convolution or Fire module too big for the board is cut into *slices* of
  its output-channel tiles (weight blobs are tile by tile,
  :func:`hw.layout.pack_conv_blob`); each slice reads the whole input band
  again (a Fire slice squeezes it again).

:func:`plan_staging` makes the plan without a board; :func:`traffic` turns it
into bytes and frames on the link (:mod:`hw.link.protocol`), and
:func:`link_fps` into frames per second for a line rate.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hw.isa import (
    ADDR_BITS,
    CMD_BYTES,
    COMMAND_LAYOUTS,
    PROFILE_FIELDS,
    PROFILE_RECORD_BYTES,
    Ctrl,
    EngineConfig,
    ErrorCode,
    Opcode,
    Reg,
    Status,
    check_command,
)
from hw.link import protocol as P
from sw.compiler import Program
from sw.transport import EngineTimeout, Transport, TransportError

__all__ = ["StagingError", "Scatter", "Gather", "Unit", "Group", "StagingPlan", "plan_staging", "relocate_command",
           "StagedTransport", "Traffic", "traffic", "link_fps", "open_board", "program_config", "compile_for_board"]


class StagingError(TransportError):
    """A command's memory does not fit the board, or a run the staging cannot carry out."""


def program_config(board_config: EngineConfig, addr_bits: int = ADDR_BITS, *,
                   ibuf_depth: int | None = None) -> EngineConfig:
    """The configuration to compile a program for staging through a board of ``board_config``.

    The same engine, with a memory port as wide as a command's address
    fields: the program's addresses are the host image's, which is larger
    than the board's memory; :class:`StagedTransport` moves each command into
    the board's range. A smaller ``ibuf_depth`` than the board's makes the
    compiler cut smaller bands (commands that need less board memory); the
    commands still run on the board's engine.
    """
    return dataclasses.replace(board_config, mem_addr_bits=addr_bits,
                               ibuf_depth=board_config.ibuf_depth if ibuf_depth is None else ibuf_depth)


def _compatible(board: EngineConfig, program: EngineConfig) -> bool:
    """The program's commands run on the board's engine: same array and buffers, a buffer at least as deep."""
    return (board.ibuf_depth >= program.ibuf_depth
            and dataclasses.replace(board, mem_addr_bits=program.mem_addr_bits,
                                    ibuf_depth=program.ibuf_depth) == program)


def compile_for_board(qgraph, board_config: EngineConfig, board_words: int, *, profile: bool = True):
    """Compile ``qgraph`` so that every command stages through ``board_words`` words; ``(program, plan)``.

    Tries the board's activation buffer, then halves it (smaller bands) until the plan fits.

    Raises
    ------
    StagingError
        If no buffer size down to 64 words gives a plan (the last reason quoted).
    """
    from sw.compiler import CompileError, compile_graph

    depth, first = board_config.ibuf_depth, None
    while depth >= 64:
        try:
            program = compile_graph(qgraph, program_config(board_config, ibuf_depth=depth))
            return program, plan_staging(program, board_words, profile=profile)
        except (StagingError, CompileError) as e:
            first = first or e
        depth //= 2
    raise StagingError(f"no band size lets this network stage through {board_words} words; with the board's "
                       f"{board_config.ibuf_depth}-word buffer: {first}")


# ---- command fields -----------------------------------------------------------------------------

def _field(layout, path: tuple[str, ...]) -> tuple[int, int]:
    """(bit offset, width) of a (nested) command field."""
    off = 0
    for name in path:
        field = layout[name]
        off += field.offset
        layout = field.shape
    return off, field.width


def _get(value: int, op: Opcode, *path: str) -> int:
    off, width = _field(COMMAND_LAYOUTS[op], path)
    return (value >> off) & ((1 << width) - 1)


def _set(value: int, op: Opcode, *path_and_value) -> int:
    *path, v = path_and_value
    off, width = _field(COMMAND_LAYOUTS[op], tuple(path))
    mask = (1 << width) - 1
    if not 0 <= v <= mask:
        raise StagingError(f"{op.name}.{'.'.join(path)}={v} does not fit {width} bits")
    return (value & ~(mask << off)) | (v << off)


#: The address fields of each command.
_ADDRESS_FIELDS = {
    Opcode.CONV: (("load", "src"), ("wblob",), ("dst",)),
    Opcode.FIRE: (("load", "src"), ("w_sq",), ("w_e1",), ("w_e3",), ("dst",)),
    Opcode.POOL: (("load", "src"), ("dst",)),
    Opcode.GAP: (("load", "src"), ("dst",)),
}


def relocate_command(raw: bytes, move, *, src: int | None = None, dst: int | None = None) -> bytes:
    """The command with every address field ``a`` replaced by ``move(a)``, or by ``src``/``dst`` when given."""
    value = int.from_bytes(raw[:CMD_BYTES], "little")
    op = Opcode(value & 0xF)
    for path in _ADDRESS_FIELDS[op]:
        fixed = src if path == ("load", "src") else dst if path == ("dst",) else None
        value = _set(value, op, *path, fixed if fixed is not None else move(_get(value, op, *path)))
    return value.to_bytes(CMD_BYTES, "little")


def _cdiv(a, b):
    return -(-a // b)


# ---- units: the commands as the board runs them ------------------------------------------------

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


# ---- planning -----------------------------------------------------------------------------------

def _merge(spans) -> list[tuple[int, int]]:
    """Union of ``(addr, words)`` spans as sorted, disjoint, non-touching intervals ``(start, end)``."""
    iv = sorted((a, a + n) for a, n in spans if n > 0)
    out: list[list[int]] = []
    for s, e in iv:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _covered(span, intervals) -> bool:
    a, n = span
    return any(s <= a and a + n <= e for s, e in intervals)


def _overlaps(iv, intervals) -> bool:
    s, e = iv
    return any(s < e2 and s2 < e for s2, e2 in intervals)


@dataclasses.dataclass
class Group:
    """Consecutive units staged together.

    Attributes
    ----------
    units : list of Unit
    segments : list of (program start, program end, board start)
        Where each merged span lives on the board.
    scatter_at, gather_at : list of int
        Board address of each unit's compact output / input (-1 for none).
    fetch : list of bool
        Whether each unit's compact output is needed later (downloaded and scattered).
    uploads, downloads : list of (program start, program end)
        Spans uploaded before the run and downloaded after it.
    board_words : int
        Board memory the group uses (commands and profile records included).
    cmd_at : int
        Board address of its commands (then its profile records), at the top of the board's memory.
    """

    units: list[Unit]
    segments: list[tuple[int, int, int]]
    scatter_at: list[int]
    gather_at: list[int]
    fetch: list[bool]
    uploads: list[tuple[int, int]]
    downloads: list[tuple[int, int]]
    board_words: int
    cmd_at: int

    @property
    def count(self) -> int:
        return len(self.units)

    def move(self, addr: int) -> int:
        """Board address of program address ``addr``."""
        for s, e, b in self.segments:
            if s <= addr < e:
                return b + addr - s
        raise StagingError(f"address {addr} of steps {self.units[0].step}..{self.units[-1].step} is in no "
                           f"staged span")


@dataclasses.dataclass
class StagingPlan:
    """Groups of units covering steps ``first .. first + count - 1`` of a program."""

    config: EngineConfig
    board_words: int
    groups: list[Group]
    profile: bool
    first: int
    count: int

    @property
    def units(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def slices(self) -> int:
        """Units beyond one per step (slices of steps too big for the board)."""
        return self.units - self.count


def _layout(units: list[Unit], cfg: EngineConfig, profile: bool):
    area = len(units) * (cfg.cmd_words + (cfg.profile_words if profile else 0))
    merged = _merge([sp for u in units for sp in (*u.reads, *u.writes)])
    return area, merged, area + sum(e - s for s, e in merged) + sum(u.private_words for u in units)


def plan_staging(program: Program, board_words: int, *, first: int = 0, count: int | None = None,
                 profile: bool = True, keep: list[tuple[int, int]] | None = None) -> StagingPlan:
    """Split steps ``first .. first + count - 1`` into groups of units that fit ``board_words`` words.

    Parameters
    ----------
    keep : list of (addr, words) or None
        Program memory the host reads after the run (default: the program's
        output tensors for a run of the whole program, everything for a part
        of it); what neither a later unit nor this reads is not downloaded.

    Raises
    ------
    StagingError
        If a unit alone exceeds the board's memory.
    """
    cfg = program.config
    R = cfg.rows
    count = len(program.steps) - first if count is None else count
    if keep is None and (first, count) != (0, len(program.steps)):
        # Part of the program (a layer at a time): later runs, or the host, may read anything it writes.
        keep = [(0, program.mem_words)]
    if keep is None:
        keep = []
        for name in program.outputs:
            v = program.views[name]
            keep.append((v.addr(), (v.h * v.w - 1) * v.pix + v.cb(R)))
    keep_iv = _merge(keep)
    per_step = [_units_of(program, i, board_words) for i in range(first, first + count)]
    # The bands of a layer cut into slices run slice by slice (each slice's weights then stay on the board
    # while the bands pass); they are independent of each other.
    units: list[Unit] = []
    k = 0
    while k < count:
        layer, n = program.steps[first + k].layer, len(per_step[k])
        m = k + 1
        while m < count and program.steps[first + m].layer == layer and len(per_step[m]) == n:
            m += 1
        if n > 1 and m - k > 1:
            units += [per_step[b][sl] for sl in range(n) for b in range(k, m)]
        else:
            units += [u for b in range(k, m) for u in per_step[b]]
        k = m

    def reads_of(u):
        return [*u.reads, *([(u.gather.src, u.gather.span[1] - u.gather.src)] if u.gather else [])]

    groups: list[Group] = []
    resident: list[tuple[int, int, int]] = []   # (program start, end, board start) valid on the board now
    i = 0
    while i < len(units):
        if _layout(units[i:i + 1], cfg, profile)[2] > board_words:
            u = units[i]
            st = program.steps[u.step]
            raise StagingError(f"step {u.step} ({st.layer}, {st.kind}) needs {_layout([u], cfg, profile)[2]} words "
                               f"of board memory, the board has {board_words}")
        j = i + 1
        while j < len(units) and _layout(units[i:j + 1], cfg, profile)[2] <= board_words:
            # What an earlier unit of the group scattered, or what a gather would read, is only right in the
            # image after the group: such a reader starts the next group.
            scattered = _merge([(u.scatter.span[0], u.scatter.span[1] - u.scatter.span[0])
                                for u in units[i:j] if u.scatter])
            direct = _merge([sp for u in units[i:j] for sp in u.writes])
            nxt = units[j]
            if any(_overlaps((a, a + n), scattered) for a, n in reads_of(nxt)) or (
                    nxt.gather and _overlaps(nxt.gather.span, direct)):
                break
            j += 1
        grp = units[i:j]
        area, merged, used = _layout(grp, cfg, profile)
        # Spans from address 0 in program order (weight blobs first), commands and records at the top: a layer's
        # next band then finds its weights where the previous band left them.
        segments, b = [], 0
        for s, e in merged:
            segments.append((s, e, b))
            b += e - s
        scatter_at, gather_at = [], []
        for u in grp:
            gather_at.append(b if u.gather else -1)
            b += u.gather.n_pix * u.gather.cb if u.gather else 0
            scatter_at.append(b if u.scatter else -1)
            b += u.scatter.n_pix * u.scatter.words if u.scatter else 0
        up, written = [], []
        for u in grp:
            for sp in u.reads:
                if not _covered(sp, _merge(written)):
                    up.append(sp)
            written += u.writes
        # What the previous group left on the board at the same place need not go up again.
        uploads = [(s, e) for s, e in _merge(up)
                   if not any(rs <= s and e <= re and seg_b + s - seg_s == rb + s - rs
                              for rs, re, rb in resident for seg_s, seg_e, seg_b in segments if seg_s <= s < seg_e)]
        later = _merge([sp for v in units[j:] for sp in reads_of(v)]) + keep_iv
        down = [iv for iv in _merge(written) if _overlaps(iv, later)]
        fetch = [bool(u.scatter) and _overlaps(u.scatter.span, later) for u in grp]
        scattered = _merge([(u.scatter.span[0], u.scatter.span[1] - u.scatter.span[0]) for u in grp if u.scatter])
        resident = [(s, e, b0) for s, e, b0 in segments if not _overlaps((s, e), scattered)]
        groups.append(Group(grp, segments, scatter_at, gather_at, fetch, uploads, down, used,
                            board_words - area))
        i = j
    return StagingPlan(cfg, board_words, groups, profile, first, count)


# ---- the link's cost ----------------------------------------------------------------------------

@dataclasses.dataclass
class Traffic:
    """Bytes and frames of one staged run over the link.

    ``payload_up``/``payload_down`` are memory bytes (uploads, gathers and
    commands; downloads, scatters and profile records); ``wire_up``/
    ``wire_down`` add every frame's header, CRCs and answer, and the register
    and ``WAIT`` frames.
    """

    groups: int
    units: int
    payload_up: int
    payload_down: int
    wire_up: int
    wire_down: int
    frames: int

    def seconds(self, baud: int, turnaround_s: float = 0.0) -> float:
        """Link time at ``baud`` (8N1: 10 bits a byte), stop-and-wait: each frame also waits ``turnaround_s``."""
        return (self.wire_up + self.wire_down) * 10 / baud + self.frames * turnaround_s


def traffic(plan: StagingPlan, *, waits_per_group: int = 1) -> Traffic:
    """The link traffic of a plan, from the protocol's frame sizes."""
    R = plan.config.rows
    t = dict(up=0, down=0, frames=0, pay_up=0, pay_down=0)

    def mem(op, nbytes):
        while nbytes > 0:
            n = min(nbytes, P.MAX_PAYLOAD)
            t["up"] += P.request_wire_bytes(op, n)
            t["down"] += P.answer_wire_bytes(op, n)
            t["frames"] += 1
            t["pay_up" if op == P.Op.WRITE_MEM else "pay_down"] += n
            nbytes -= n

    def reg(op, n):
        t["up"] += P.request_wire_bytes(op, n)
        t["down"] += P.answer_wire_bytes(op, n)
        t["frames"] += 1

    for g in plan.groups:
        for s, e in g.uploads:
            mem(P.Op.WRITE_MEM, (e - s) * R)
        for u in g.units:
            if u.gather:
                mem(P.Op.WRITE_MEM, u.gather.n_pix * u.gather.cb * R)
        mem(P.Op.WRITE_MEM, g.count * plan.config.cmd_words * R)
        for _ in range(5 if plan.profile else 4):   # CLEAR, CMD_ADDR, CMD_COUNT, (PROF_ADDR), START
            reg(P.Op.WRITE_REG, 4)
        for _ in range(waits_per_group):
            reg(P.Op.WAIT, 0)
        reg(P.Op.READ_REG, 8)                        # CYCLES, ACTIVE
        for s, e in g.downloads:
            mem(P.Op.READ_MEM, (e - s) * R)
        for u, f in zip(g.units, g.fetch, strict=True):
            if f:
                mem(P.Op.READ_MEM, u.scatter.n_pix * u.scatter.words * R)
        if plan.profile:
            mem(P.Op.READ_MEM, g.count * plan.config.profile_words * R)
    return Traffic(len(plan.groups), plan.units, t["pay_up"], t["pay_down"], t["up"], t["down"], t["frames"])


def link_fps(program: Program, board_words: int, baud: int, *, turnaround_s: float = 0.0,
             profile: bool = False) -> tuple[float, Traffic]:
    """Frames per second the link alone allows for one inference of ``program`` (and the traffic)."""
    t = traffic(plan_staging(program, board_words, profile=profile))
    return 1.0 / t.seconds(baud, turnaround_s), t


# ---- the transport ------------------------------------------------------------------------------

class StagedTransport(Transport):
    """A program's whole memory on the host, its runs staged through a small board.

    Parameters
    ----------
    board : Transport
        The board's transport (:class:`sw.backends.serial.SerialBackend`, or
        any other: the tests stage through a golden backend).
    program : Program
        The program whose commands runs will execute (``CMD_ADDR`` must point
        into its command list).
    board_words : int or None
        Board memory to use; default ``board.mem_words``.

    Registers: ``ID``, ``VERSION`` and ``SCRATCH`` are the board's;
    ``CONFIG0..2`` read as the program's configuration (the board's, except
    for the address width, since the host image is the memory the driver
    sees, and maybe a shallower buffer, see :func:`compile_for_board`);
    ``CMD_ADDR``, ``CMD_COUNT``, ``PROF_ADDR`` are kept here;
    ``CTRL.START`` records a run that :meth:`wait_done` carries out;
    ``STATUS``, ``CMD_INDEX`` describe it (the index in the whole run) and
    ``CYCLES``, ``ACTIVE`` add up its groups. A step run in slices gets one
    profile record, the sum of its slices'.

    Raises
    ------
    StagingError
        If the board's engine is not the program's (array, buffers) or its
        memory words differ.
    """

    def __init__(self, board: Transport, program: Program, *, board_words: int | None = None):
        self.board = board
        self.program = program
        cfg = program.config
        if board.word_bytes != cfg.rows:
            raise StagingError(f"the board's words are {board.word_bytes} bytes, the program's {cfg.rows}")
        words = [board.read_reg(r) for r in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2)]
        try:
            self.board_config = EngineConfig.from_config_words(*words)
        except ValueError as e:
            raise StagingError(f"the board reports an invalid configuration {words}: {e}") from None
        if not _compatible(self.board_config, cfg):
            raise StagingError(f"the board's engine is {self.board_config}, the program was compiled for {cfg}")
        self.word_bytes = cfg.rows
        self.board_words = board_words if board_words is not None else board.mem_words
        self.mem_words = program.mem_words
        self.image = bytearray(program.mem_words * cfg.rows)
        self._regs = {Reg.CMD_ADDR: 0, Reg.CMD_COUNT: 0, Reg.PROF_ADDR: 0, Reg.CMD_INDEX: 0, Reg.CYCLES: 0,
                      Reg.ACTIVE: 0}
        self._status = 0
        self._pending = None
        self._plans: dict = {}
        #: Memory bytes moved by the staging so far, and groups run.
        self.bytes_up = 0
        self.bytes_down = 0
        self.groups_run = 0

    def _check(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.mem_words:
            raise TransportError(f"words [{addr}, {addr + n}) are outside the program's memory ({self.mem_words})")

    def write_mem(self, addr_words: int, data: bytes) -> None:
        R = self.word_bytes
        if len(data) % R:
            raise TransportError(f"{len(data)} bytes is not a whole number of {R}-byte words")
        self._check(addr_words, len(data) // R)
        self.image[addr_words * R:addr_words * R + len(data)] = data

    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        R = self.word_bytes
        self._check(addr_words, n_words)
        return bytes(self.image[addr_words * R:(addr_words + n_words) * R])

    def write_reg(self, reg: Reg | int, value: int) -> None:
        reg = Reg(reg)
        if reg in (Reg.CMD_ADDR, Reg.CMD_COUNT, Reg.PROF_ADDR):
            self._regs[reg] = value & 0xFFFFFFFF
        elif reg == Reg.CTRL:
            if value & Ctrl.CLEAR:
                self._status &= ~(int(Status.DONE) | int(Status.ERROR) | 0xF00)
            if value & Ctrl.START and not self._status & Status.BUSY:
                self._status = Status.BUSY
                self._pending = (self._regs[Reg.CMD_ADDR], self._regs[Reg.CMD_COUNT], self._regs[Reg.PROF_ADDR],
                                 bool(value & Ctrl.PROFILE))
        else:
            self.board.write_reg(reg, value)

    def read_reg(self, reg: Reg | int) -> int:
        reg = Reg(reg)
        if reg == Reg.STATUS:
            return self._status
        if reg in self._regs:
            return self._regs[reg]
        if reg in (Reg.CONFIG0, Reg.CONFIG1, Reg.CONFIG2):
            return self.program.config.config_words()[reg - Reg.CONFIG0]
        return self.board.read_reg(reg)

    def plan(self, first: int, count: int, profile: bool) -> StagingPlan:
        """The (cached) plan of a run."""
        key = (first, count, profile)
        if key not in self._plans:
            self._plans[key] = plan_staging(self.program, self.board_words, first=first, count=count,
                                            profile=profile)
        return self._plans[key]

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        """Carry out the recorded run, group by group, within ``timeout`` seconds in all.

        Raises
        ------
        StagingError
            If ``CMD_ADDR`` is not in the program's command list.
        EngineTimeout
            If a group does not finish in the time left.
        """
        if self._pending is None:
            return self._status
        cmd_addr, count, prof_addr, profile = self._pending
        self._pending = None
        p, cfg = self.program, self.program.config
        R = cfg.rows
        first, rem = divmod(cmd_addr - p.cmd_addr, cfg.cmd_words)
        if rem or first < 0 or first + count > len(p.steps):
            self._status = Status.ERROR | (ErrorCode.BAD_ADDRESS.value << 8)
            raise StagingError(f"CMD_ADDR={cmd_addr}, CMD_COUNT={count} is not a run of the program's commands "
                               f"(words {p.cmd_addr}.. in steps of {cfg.cmd_words})")
        deadline = time.monotonic() + timeout
        cycles = active = 0
        plan = self.plan(first, count, profile)
        b = self.board
        pw = cfg.profile_words
        records = np.zeros((count, len(PROFILE_FIELDS)), dtype=np.int64)
        image = np.frombuffer(self.image, dtype=np.uint8).reshape(-1, R)
        for g in plan.groups:
            for s, e in g.uploads:
                self._put(g.move(s), self.image[s * R:e * R])
            for u, at in zip(g.units, g.gather_at, strict=True):
                if u.gather:
                    ga = u.gather
                    rows = ga.src + np.arange(ga.n_pix)[:, None] * ga.pix + np.arange(ga.cb)[None, :]
                    self._put(at, image[rows.reshape(-1)].tobytes())
            cmds = []
            for u, s_at, g_at in zip(g.units, g.scatter_at, g.gather_at, strict=True):
                moved = relocate_command(u.command, g.move, src=g_at if u.gather else None,
                                         dst=s_at if u.scatter else None)
                code = check_command(self.board_config, moved)
                if code != ErrorCode.NONE and check_command(cfg, u.command) == ErrorCode.NONE:
                    raise StagingError(f"step {u.step} becomes invalid on the board once relocated ({code.name})")
                cmds.append(moved + bytes(cfg.cmd_words * R - CMD_BYTES))
            self._put(g.cmd_at, b"".join(cmds))
            board_prof = g.cmd_at + g.count * cfg.cmd_words
            b.write_reg(Reg.CTRL, Ctrl.CLEAR)
            b.write_reg(Reg.CMD_ADDR, g.cmd_at)
            b.write_reg(Reg.CMD_COUNT, g.count)
            ctrl = Ctrl.START
            if profile:
                b.write_reg(Reg.PROF_ADDR, board_prof)
                ctrl |= Ctrl.PROFILE
            b.write_reg(Reg.CTRL, ctrl)
            try:
                status = b.wait_done(timeout=max(0.0, deadline - time.monotonic()), max_cycles=max_cycles)
            except EngineTimeout as e:
                self._status = Status.BUSY
                raise EngineTimeout(f"staged run: group {self.groups_run + 1} (steps {g.units[0].step}.."
                                    f"{g.units[-1].step}) did not finish: {e}", status=e.status,
                                    cycles=e.cycles) from e
            self.groups_run += 1
            regs = (b.read_regs(Reg.CYCLES, 2) if hasattr(b, "read_regs")
                    else [b.read_reg(Reg.CYCLES), b.read_reg(Reg.ACTIVE)])
            cycles += regs[0]
            active += regs[1]
            if status & Status.ERROR:
                self._regs[Reg.CMD_INDEX] = g.units[b.read_reg(Reg.CMD_INDEX)].step - first
                self._status = int(status) & ~int(Status.BUSY)
                break
            for s, e in g.downloads:
                self.image[s * R:e * R] = self._get(g.move(s), e - s)
            for u, at, fetch in zip(g.units, g.scatter_at, g.fetch, strict=True):
                if fetch:
                    sc = u.scatter
                    got = np.frombuffer(self._get(at, sc.n_pix * sc.words), dtype=np.uint8).reshape(sc.n_pix,
                                                                                                   sc.words, R)
                    base = sc.dst + np.arange(sc.n_pix) * sc.pix
                    for src_w, dst_w, n in sc.pieces:
                        for w in range(n):
                            image[base + dst_w + w] = got[:, src_w + w]
            if profile:
                raw = np.frombuffer(self._get(board_prof, g.count * pw), dtype=np.uint8).reshape(g.count, pw * R)
                vals = raw[:, :PROFILE_RECORD_BYTES].copy().view("<u4").reshape(g.count, len(PROFILE_FIELDS))
                for u, v in zip(g.units, vals, strict=True):
                    records[u.step - first] += v
        else:
            self._regs[Reg.CMD_INDEX] = count
            self._status = Status.DONE
        if profile:
            # One record per program step (the slices of a step add up), where the driver reads them.
            rec = np.zeros((count, pw * R), dtype=np.uint8)
            rec[:, :PROFILE_RECORD_BYTES] = (records & 0xFFFFFFFF).astype("<u4").view(np.uint8).reshape(count, -1)
            self.image[prof_addr * R:(prof_addr + count * pw) * R] = rec.tobytes()
        self._regs[Reg.CYCLES] = cycles & 0xFFFFFFFF
        self._regs[Reg.ACTIVE] = active & 0xFFFFFFFF
        return self._status

    def _put(self, addr: int, data) -> None:
        self.board.write_mem(addr, bytes(data))
        self.bytes_up += len(data)

    def _get(self, addr: int, n: int) -> bytes:
        out = self.board.read_mem(addr, n)
        self.bytes_down += len(out)
        return out

    def cycles(self):
        return None

    def close(self) -> None:
        self.board.close()


def connect_board(port, **serial_kw):
    """A :class:`sw.backends.serial.SerialBackend` to the board at ``port``, its configuration read from the board.

    ``port`` is a device (``/dev/ttyUSB1``), a serial-like object, or
    ``sim:<board>``: that board's top in Verilator behind a simulated UART
    (:func:`sim.link_sim.open_sim_port`; a few kilobytes per second).
    ``serial_kw`` go to :class:`sw.backends.serial.SerialBackend`.
    """
    from sw.backends.serial import SerialBackend

    if isinstance(port, str) and port.startswith("sim:"):
        from sim.link_sim import open_sim_port

        port = open_sim_port(port)
        serial_kw.setdefault("timeout", 2.0)
        serial_kw.setdefault("wait_cycles", 20_000)
    try:
        return SerialBackend(port, None, **serial_kw)
    except BaseException:
        if hasattr(port, "close"):
            port.close()
        raise


def board_transport(be, program: Program) -> Transport:
    """``program`` on the connected board ``be``: the board itself when the program fits it, else staged."""
    if program.config == be.config and program.mem_words <= be.mem_words:
        return be
    return StagedTransport(be, program)


def open_board(port, program: Program, **serial_kw) -> Transport:
    """The transport to run ``program`` on the board at ``port``: the board itself, or staged through it.

    ``port`` and ``serial_kw`` as for :func:`connect_board`.
    """
    return board_transport(connect_board(port, **serial_kw), program)
