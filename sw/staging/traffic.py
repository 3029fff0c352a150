"""The link's cost of a staging plan: bytes, frames and frames per second for a line rate."""

from __future__ import annotations

import dataclasses

from hw.link import protocol as P
from sw.compiler import Program

from .plan import StagingPlan, plan_staging


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

    def usb_seconds(self, clk_hz: float, turnaround_s: float = 0.0) -> float:
        """Link time over the USB link at a ``sync`` clock of ``clk_hz`` (:func:`hw.link.usb.usb_rates`:
        requests and answers at their own rates), stop-and-wait with ``turnaround_s`` a frame."""
        from hw.link.usb import usb_rates

        up, down = usb_rates(clk_hz)
        return self.wire_up / up + self.wire_down / down + self.frames * turnaround_s


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
