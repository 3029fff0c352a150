"""The staging plan: consecutive units grouped so that each group's memory fits the board, and compiling a
network so that it stages."""

from __future__ import annotations

import dataclasses

from hw.isa import ADDR_BITS, EngineConfig
from sw.compiler import Program

from .commands import StagingError
from .units import Unit, _units_of


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
    def slices(self) -> int:
        """Units beyond one per step (slices of steps too big for the board)."""
        return self.units - self.count

    @property
    def units(self) -> int:
        """Units in all groups (one a step, more for a step cut into slices)."""
        return sum(g.count for g in self.groups)


def _layout(units: list[Unit], cfg: EngineConfig, profile: bool):
    area = len(units) * (cfg.cmd_words + (cfg.profile_words if profile else 0))
    merged = _merge([sp for u in units for sp in (*u.reads, *u.writes)])
    return area, merged, area + sum(e - s for s, e in merged) + sum(u.private_words for u in units)


def _units_in_order(program: Program, first: int, count: int, board_words: int) -> list[Unit]:
    """The units of steps ``first .. first + count - 1`` in the order they run.

    The bands of a layer cut into slices run slice by slice (each slice's weights then stay on the board
    while the bands pass); they are independent of each other.
    """
    per_step = [_units_of(program, i, board_words) for i in range(first, first + count)]
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
    return units


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
    units = _units_in_order(program, first, count, board_words)

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
