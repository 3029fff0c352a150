"""On-chip memory behind a memory port: the engine's whole "external" memory on a board.

Two storages, one port behaviour (:class:`OnChipMemory`):

* ``"bram"``: an :class:`amaranth.lib.memory.Memory` (block RAM, inferred by
  Yosys: DP16KD on the ECP5, SB_RAM40_4K on the iCE40);
* ``"spram"``: the iCE40 UltraPlus single-port RAMs, instantiated as
  ``SB_SPRAM256KA`` (16K x 16 bits each, four on the UP5K): ``word_bytes / 2``
  of them side by side make a word, the rest are stacked in depth.

Timing: one request per cycle; a read accepted in cycle ``t`` answers from
cycle ``t + 4`` (SPRAM: request register, RAM, output register, answer queue)
or ``t + 5`` (block RAM: a register per bank before the bank multiplexer), in
order; a write accepted in cycle ``t`` is seen by a read accepted in ``t + 1``
(both pass the request register in order). ``req.ready`` is withheld only when the answer queue could
overflow (its consumer holding ``rsp.ready`` low), which the engine's
initiators never do for long.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.bus import MemPortSignature

__all__ = ["OnChipMemory", "SPRAM_WORDS", "SPRAM_BITS", "STORAGES"]

#: Words of one bank of block-RAM storage (each bank has its own output register).
BRAM_BANK = 16384
#: Words (16 bits each) of one SB_SPRAM256KA.
SPRAM_WORDS = 16384
SPRAM_BITS = 16
STORAGES = ("bram", "spram")


class OnChipMemory(wiring.Component):
    """The far side of a :class:`hw.bus.MemPortSignature`, in block RAM or iCE40 SPRAM.

    Parameters
    ----------
    word_bytes : int
        Word width in bytes.
    addr_bits : int
        Width of the port's word address (``EngineConfig.mem_addr_bits``).
    mem_words : int
        Words of storage (at most ``2 ** addr_bits``). Addresses at or beyond it
        wrap onto the storage; the link refuses them, the engine's commands are
        compiled within it.
    storage : str
        ``"bram"`` or ``"spram"``. With ``"spram"``, ``word_bytes`` must be 2, 4
        or 8 and ``mem_words`` a multiple of 16384 with ``mem_words *
        word_bytes / 2 / 16384`` SPRAMs (at most ``spram_count``).
    spram_count : int
        SPRAMs on the device (4 on the UP5K).

    Raises
    ------
    ValueError
        On a size that the storage cannot hold; the message quotes it.
    """

    def __init__(self, *, word_bytes: int, addr_bits: int, mem_words: int, storage: str = "bram",
                 spram_count: int = 4):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if not (isinstance(mem_words, int) and 0 < mem_words <= 1 << addr_bits):
            raise ValueError(f"mem_words must be in [1, 2**{addr_bits}], got {mem_words!r}")
        if storage == "spram":
            if word_bytes not in (2, 4, 8):
                raise ValueError(f"SPRAM words are built of 16-bit RAMs: word_bytes must be 2, 4 or 8, "
                                 f"got {word_bytes!r}")
            lanes = word_bytes // 2
            if mem_words % SPRAM_WORDS or lanes * mem_words // SPRAM_WORDS > spram_count:
                raise ValueError(f"{mem_words} words of {word_bytes} bytes do not fit {spram_count} SPRAMs of "
                                 f"{SPRAM_WORDS} x 16 bits (need a multiple of {SPRAM_WORDS} words, at most "
                                 f"{spram_count // lanes * SPRAM_WORDS})")
        self._word_bytes = word_bytes
        self._addr_bits = addr_bits
        self._mem_words = mem_words
        self._storage = storage
        super().__init__({"bus": In(MemPortSignature(word_bytes, addr_bits))})

    @property
    def mem_words(self) -> int:
        return self._mem_words

    @property
    def storage(self) -> str:
        return self._storage

    @property
    def spram_blocks(self) -> int:
        """SB_SPRAM256KA instances used (0 for block RAM)."""
        if self._storage != "spram":
            return 0
        return self._word_bytes // 2 * self._mem_words // SPRAM_WORDS

    def elaborate(self, platform):
        m = Module()
        W = 8 * self._word_bytes
        req = self.bus.req
        depth = 8
        m.submodules.answers = answers = SyncFIFO(width=W, depth=depth)
        pending = Signal()          # a read was accepted last cycle: its data is on rdata now
        rdata = Signal(W)
        # The RAM's output goes through a register before the answer queue: on a large memory the
        # multiplexer over its blocks is most of a clock period by itself.
        rdata_q = Signal(W)
        pending_q = Signal()
        if self._storage == "bram":   # one more stage: the banks' own output registers
            pending_b = Signal()
            m.d.sync += pending_b.eq(pending)
        else:
            pending_b = pending
        m.d.sync += [rdata_q.eq(rdata), pending_q.eq(pending_b)]
        # The request is registered too: the arbiter's and the initiators' logic stays away from the RAM's
        # address and write-enable fan-out.
        q_valid = Signal()
        q = Signal.like(req.payload)
        take = req.valid & req.ready
        m.d.sync += [q_valid.eq(take), q.eq(req.payload)]
        read = q_valid & ~q.write
        write = q_valid & q.write
        # Reads accepted and not yet taken by the initiator; the answer queue holds them all. `ready` is a
        # register, computed from the count a cycle late with a read of slack for it.
        outstanding = Signal(range(depth + 1))
        ready = Signal()
        m.d.sync += [outstanding.eq(outstanding + (take & ~req.payload.write)
                                    - (self.bus.rsp.valid & self.bus.rsp.ready)),
                     ready.eq(outstanding < depth - 2)]
        m.d.comb += req.ready.eq(ready)
        m.d.sync += pending.eq(read)
        m.d.comb += [answers.w_data.eq(rdata_q), answers.w_en.eq(pending_q),
                     self.bus.rsp.payload.eq(answers.r_data), self.bus.rsp.valid.eq(answers.r_rdy),
                     answers.r_en.eq(self.bus.rsp.ready)]

        if self._storage == "bram":
            # Banks of at most BRAM_BANK words, each read into its own register (the block RAMs' output
            # registers), then one 4:1-ish multiplexer into rdata: no wide multiplexer right after the RAMs.
            bank_bits = max(1, (BRAM_BANK - 1).bit_length())
            n_banks = -(-self._mem_words // BRAM_BANK)
            sel = q.addr[bank_bits:bank_bits + max(1, (n_banks - 1).bit_length())] if n_banks > 1 else Const(0, 1)
            sel_q = Signal.like(sel)
            sel_qq = Signal.like(sel)
            m.d.sync += [sel_q.eq(sel), sel_qq.eq(sel_q)]
            outs = []
            for b in range(n_banks):
                depth_b = min(BRAM_BANK, self._mem_words - b * BRAM_BANK)
                m.submodules[f"bank{b}"] = mem = Memory(shape=unsigned(W), depth=depth_b, init=[])
                rp = mem.read_port()
                wp = mem.write_port()
                index = q.addr[:max(1, (depth_b - 1).bit_length())]
                hit = sel == b
                out = Signal(W, name=f"bank{b}_q")
                m.d.sync += out.eq(rp.data)
                m.d.comb += [rp.addr.eq(index), rp.en.eq(read & hit), wp.addr.eq(index), wp.data.eq(q.data),
                             wp.en.eq(write & hit)]
                outs.append(out)
            with m.Switch(sel_qq):
                for b, out in enumerate(outs):
                    with m.Case(b):
                        m.d.comb += rdata.eq(out)
            return m

        # SPRAM: `lanes` RAMs side by side per bank, `banks` banks in depth.
        lanes = self._word_bytes // 2
        banks = self._mem_words // SPRAM_WORDS
        bank = q.addr[14:14 + max(1, (banks - 1).bit_length())] if banks > 1 else Const(0, 1)
        bank_q = Signal.like(bank)
        m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(banks):
            lane_outs = []
            for lane in range(lanes):
                dout = Signal(SPRAM_BITS, name=f"spram_{b}_{lane}_dout")
                sel = (bank == b)
                m.submodules[f"spram_{b}_{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=q.addr[:14],
                    i_DATAIN=q.data[SPRAM_BITS * lane:SPRAM_BITS * (lane + 1)],
                    i_MASKWREN=Const(0xF, 4),
                    i_WREN=write & sel,
                    i_CHIPSELECT=q_valid & sel,
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0),
                    i_SLEEP=Const(0),
                    i_POWEROFF=Const(1),   # active low: powered
                    o_DATAOUT=dout,
                )
                lane_outs.append(dout)
            outs.append(Cat(*lane_outs))
        with m.Switch(bank_q):
            for b, word in enumerate(outs):
                with m.Case(b):
                    m.d.comb += rdata.eq(word)
        return m
