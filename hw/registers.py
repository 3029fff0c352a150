"""The register file: the CSR bus side of the engine, from the one register map in ``hw.isa``."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import CsrSignature
from .isa import ENGINE_ID, REGISTERS, VERSION, Ctrl, EngineConfig, Reg, StatusLayout

__all__ = ["RegisterFile"]


class RegisterFile(wiring.Component):
    """Serves ``csr`` from :data:`hw.isa.REGISTERS`: identification and configuration constants, the
    host's registers (``cmd_addr``, ``cmd_count``, ``prof_addr``, SCRATCH) and the sequencer's
    (``status``, ``cmd_index``, ``cycles``, ``active``). A CTRL write raises ``start`` and ``clear``
    for that cycle, with ``profile`` (CTRL.PROFILE) beside ``start``.
    """

    def __init__(self, config: EngineConfig):
        self._cfg = config
        super().__init__({
            "csr": In(CsrSignature),
            "status": In(StatusLayout),
            "cmd_index": In(32),
            "cycles": In(32),
            "active": In(32),
            "cmd_addr": Out(32),
            "cmd_count": Out(32),
            "prof_addr": Out(32),
            "start": Out(1),
            "clear": Out(1),
            "profile": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        csr = self.csr
        scratch = Signal(32)
        config0, config1, config2 = self._cfg.config_words()
        registers = {
            Reg.ID: ENGINE_ID, Reg.VERSION: (VERSION[0] << 16) | VERSION[1],
            Reg.CONFIG0: config0, Reg.CONFIG1: config1, Reg.CONFIG2: config2,
            Reg.STATUS: self.status, Reg.CMD_ADDR: self.cmd_addr, Reg.CMD_COUNT: self.cmd_count,
            Reg.CMD_INDEX: self.cmd_index, Reg.PROF_ADDR: self.prof_addr, Reg.CYCLES: self.cycles,
            Reg.ACTIVE: self.active, Reg.SCRATCH: scratch,
        }
        with m.If(csr.r_stb):
            m.d.sync += csr.r_data.eq(0)
            with m.Switch(csr.addr):
                for spec in REGISTERS:
                    if "R" in spec.access:
                        with m.Case(spec.index):
                            m.d.sync += csr.r_data.eq(registers[Reg[spec.name]])
        with m.If(csr.w_stb), m.Switch(csr.addr):
            with m.Case(int(Reg.CTRL)):
                m.d.comb += [self.start.eq(csr.w_data[Ctrl.START.bit_length() - 1]),
                             self.clear.eq(csr.w_data[Ctrl.CLEAR.bit_length() - 1])]
            for spec in REGISTERS:
                if spec.access == "RW":
                    with m.Case(spec.index):
                        m.d.sync += registers[Reg[spec.name]].eq(csr.w_data)
        m.d.comb += self.profile.eq(csr.w_data[Ctrl.PROFILE.bit_length() - 1])
        return m
