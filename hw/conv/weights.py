"""The weight/parameter streamer: the blob from memory, parameters to the banks, tiles to the array."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..bus import MemPortSignature
from ..isa import ADDR_BITS, DIM_BITS, EngineConfig, param_tile_layout
from ..prefetch import prefetch_reads
from .plan import plan_layout

__all__ = ["WeightReader", "WeightRouter", "weight_column_layout"]


def weight_column_layout(config: EngineConfig) -> data.StructLayout:
    """One column of a weight tile for the array: ``rows`` int8 weights, the column, the buffer."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), config.rows),
        "col": range(config.cols),
        "buf": 1,
    })


class WeightReader(wiring.Component):
    """Reads an op's weight blob from memory, once per pass, into a FIFO; ``words`` is the FIFO's read side.

    On ``restart`` (the plan's ``init``) it starts at ``wblob``: for each output-channel tile, the tile's
    block of ``blob_cot_words`` words once per pass. It issues a read only when the FIFO has room for
    every word in flight, so it always takes the memory's answers.
    """

    FIFO_DEPTH = 32

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "restart": In(1),
            "wblob": In(ADDR_BITS),
            "plan": In(plan_layout(config)),
            "mem": Out(MemPortSignature(config.rows, config.mem_addr_bits)),
            "words": Out(stream.Signature(8 * config.rows)),
        })

    def elaborate(self, platform):
        m = Module()
        plan, mem = self.plan, self.mem
        active = Signal()
        cot = Signal(DIM_BITS)
        pass_index = Signal(2 * DIM_BITS)
        word = Signal(ADDR_BITS)
        cot_base = Signal(ADDR_BITS)
        issue = prefetch_reads(m, mem, self.words, active=active, addr=cot_base + word, depth=self.FIFO_DEPTH,
                               width=8 * self._cfg.rows)
        with m.If(self.restart):
            m.d.sync += [active.eq(1), cot.eq(0), pass_index.eq(0), word.eq(0), cot_base.eq(self.wblob)]
        with m.Elif(issue):
            with m.If(word == plan.blob_cot_words - 1):
                m.d.sync += word.eq(0)
                with m.If(pass_index == plan.passes_per_cot - 1):
                    m.d.sync += [pass_index.eq(0), cot.eq(cot + 1), cot_base.eq(cot_base + plan.blob_cot_words)]
                    with m.If(cot == plan.n_cot - 1):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += pass_index.eq(pass_index + 1)
            with m.Else():
                m.d.sync += word.eq(word + 1)
        return m


class WeightRouter(wiring.Component):
    """Sends each pass's block of blob ``words``: its parameters into the bank's parameter registers,
    its weight tiles column by column into the array's two weight buffers (``tile_load``).

    Bookkeeping with the address generator: ``tiles_ready[b]`` says buffer ``b`` holds the tile it
    wants next (cleared when it ``released`` the buffer; a released buffer cools down until the
    array's last vector using it has passed), ``params_ready[b]`` says bank ``b``'s parameters are
    loaded (cleared when a pass claims the bank, ``bank_claimed``); parameters for a bank wait until
    the bank is drained (``bank_busy``).
    """

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "words": In(stream.Signature(8 * config.rows)),
            "restart": In(1),
            "blob_cot_words": In(ADDR_BITS),
            "released": In(stream.Signature(1, always_ready=True)),
            "bank_claimed": In(stream.Signature(1, always_ready=True)),
            "bank_busy": In(2),
            "params": Out(data.ArrayLayout(param_tile_layout(config.cols), 2)),
            "params_ready": Out(2),
            "tiles_ready": Out(2),
            "tile_load": Out(stream.Signature(weight_column_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C, PW = cfg.rows, cfg.cols, cfg.param_words
        tiles_ready, params_ready = self.tiles_ready, self.params_ready
        # After its release, a buffer may be rewritten only when the last vector that used it has
        # crossed the array.
        cooldown = [Signal(range(R + C + 8), name=f"cooldown{b}") for b in range(2)]
        release = self.released
        tile_done = Signal()                # the last column of a tile went into buffer load_buf
        load_buf = Signal()
        with m.If(release.valid):
            m.d.sync += tiles_ready.bit_select(release.payload, 1).eq(0)
        with m.If(tile_done):
            m.d.sync += tiles_ready.bit_select(load_buf, 1).eq(1)
        for b in range(2):
            with m.If(release.valid & (release.payload == b)):
                m.d.sync += cooldown[b].eq(R + C + 6)
            with m.Elif(cooldown[b] != 0):
                m.d.sync += cooldown[b].eq(cooldown[b] - 1)

        word = Signal(ADDR_BITS)            # word within the pass's block
        bank = Signal()                     # the bank whose parameters come next
        col = Signal(range(C))
        in_params = word < PW
        can_param = ~self.bank_busy.bit_select(bank, 1) & ~params_ready.bit_select(bank, 1)
        can_tile = (col != 0) | (~tiles_ready.bit_select(load_buf, 1) & (Mux(load_buf, cooldown[1], cooldown[0]) == 0))
        words = self.words
        m.d.comb += words.ready.eq(Mux(in_params, can_param, can_tile))
        take = words.valid & words.ready
        for r in range(R):
            m.d.comb += self.tile_load.payload.data[r].eq(words.payload[8 * r:8 * r + 8].as_signed())
        m.d.comb += [self.tile_load.payload.col.eq(col), self.tile_load.payload.buf.eq(load_buf)]
        with m.If(self.restart):
            m.d.sync += [word.eq(0), bank.eq(0), col.eq(0), load_buf.eq(0), tiles_ready.eq(0), params_ready.eq(0)]
        with m.Elif(take):
            with m.If(word == self.blob_cot_words - 1):
                m.d.sync += [word.eq(0), bank.eq(~bank)]
            with m.Else():
                m.d.sync += word.eq(word + 1)
            with m.If(in_params):
                for b in range(2):
                    with m.If(bank == b):
                        m.d.sync += self.params[b].as_value().word_select(
                            word[:max(1, (PW - 1).bit_length())], 8 * R).eq(words.payload)
                with m.If(word == PW - 1):
                    m.d.sync += params_ready.bit_select(bank, 1).eq(1)
            with m.Else():
                m.d.comb += self.tile_load.valid.eq(1)
                m.d.sync += col.eq(col + 1)
                with m.If(col == C - 1):
                    m.d.comb += tile_done.eq(1)
                    m.d.sync += load_buf.eq(~load_buf)
        with m.If(self.bank_claimed.valid):
            m.d.sync += params_ready.bit_select(self.bank_claimed.payload, 1).eq(0)
        return m
