"""The engine's contract with the host: configuration, register map, command set.

This module is the single definition of everything the gateware, the host
driver, the compiler and the golden model's ISA interpreter agree on. The
gateware decodes the layouts below with ``amaranth.lib.data``; the host packs
them with :func:`pack_command` (the same layouts, as integers).

Memory model
------------
External memory is an array of *words* of ``rows`` bytes (one byte per
input-channel lane of the systolic array). Activations, weights, commands and
profiling records all live there; addresses are word addresses. The layout of
tensors and weight blobs is in :mod:`hw.layout`.

Commands
--------
A command is 64 bytes (``CMD_BITS`` = 512 bits, little-endian), stored at
``CMD_ADDR + i * cmd_words``. The host writes ``CMD_ADDR`` and ``CMD_COUNT``
and sets ``CTRL.START``; the engine runs the list and raises ``STATUS.DONE``,
or stops at the first bad command with ``STATUS.ERROR``, the error code and
``CMD_INDEX``, and is ready for the next start. See ``docs/ISA.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "ENGINE_ID", "VERSION", "CMD_BITS", "CMD_BYTES", "EngineConfig",
    "Opcode", "ErrorCode", "Reg", "Ctrl", "Status",
    "LoadSpec", "ConvCmd", "FireCmd", "PoolCmd", "GapCmd", "COMMAND_LAYOUTS",
    "pack_command", "unpack_command", "PROFILE_RECORD_BYTES", "PROFILE_FIELDS", "check_command", "load_words",
    "load_read_span", "write_span", "buffer_regions", "CONFIG0_READ_PORTS_BIT",
    "MAX_KERNEL", "MAX_STRIDE", "MAX_DILATION", "MAX_PAD", "ACC_BITS", "INT8_MIN", "INT8_MAX", "WEIGHT_MAX",
    "MULT_BITS", "M0_BITS",
    "SHIFT_BITS", "MAX_SHIFT",
    "ChannelParams", "param_tile_layout", "StatusLayout", "ProfileRecord", "RegisterSpec", "REGISTERS",
]

# --- arithmetic constants (the one definition; quant.arith imports them) -------------------------

#: Accumulator width: products and sums wrap modulo 2**32 exactly as the hardware's adders do.
ACC_BITS = 32
INT8_MIN, INT8_MAX = -128, 127
#: Weights are symmetric: -128 is never produced, so |w| <= 127.
WEIGHT_MAX = 127
#: Bits of the fixed-point multiplier m0's fraction (a Q0.31 number in [0.5, 1)).
MULT_BITS = 31
#: Width of the stored multiplier m0 (a signed int32).
M0_BITS = 32
#: Width of the requantizer's right shift.
SHIFT_BITS = 5
#: Largest right shift the requantizer implements.
MAX_SHIFT = (1 << SHIFT_BITS) - 1

#: Identification register value: ASCII "KNDL".
ENGINE_ID = 0x4B4E444C
#: Bumped whenever the command set or the register map changes: (major, minor).
VERSION = (1, 2)  # 1.1: kernels up to 7x7, strides up to 4; 1.2: loads overlap the previous command

CMD_BITS = 512
CMD_BYTES = CMD_BITS // 8

# Field widths shared by the layouts and by the validation in the decoder.
DIM_BITS = 12     # heights, widths, channel counts: up to 4095
CB_BITS = 12      # channel blocks of `rows` channels: up to 4095
ADDR_BITS = 32    # external word addresses in commands (the engine checks them against mem_addr_bits)
IBUF_ADDR_BITS = 16
#: Largest kernel side, stride, dilation and padding (a side) a CONV command takes: the kernel,
#: dilation and left-padding fields are 3 bits wide, the top padding a signed 4-bit field (band-local).
MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_DILATION = 7
MAX_PAD = 7
#: CONFIG0 bit that says the activation buffer has a second read port (EngineConfig.ibuf_read_ports == 2).
CONFIG0_READ_PORTS_BIT = 31

#: The fields of the per-command profiling record, each a little-endian u32, in order:
#: where a command's cycles went (the layout is :data:`ProfileRecord`).
PROFILE_FIELDS = (
    "cycles",        # from the end of the previous command (or START) to the end of this one's last write
    "active",        # cycles in which an activation vector entered the array
    "load",          # cycles of the band load (and pool-on-load)
    "op0",           # first micro-op after the load: CONV's convolution, FIRE's squeeze, POOL's store, GAP's average
    "op1",           # FIRE's expand 1x1
    "op2",           # FIRE's expand 3x3
    "wait_weights",  # cycles the array idled for a weight tile that had not arrived
    "wait_bank",     # cycles a pass waited for its accumulator bank to drain (or its parameters)
)
#: The profiling record as the engine writes it to memory: one u32 counter per field, in order.
ProfileRecord = data.StructLayout({name: unsigned(32) for name in PROFILE_FIELDS})
PROFILE_RECORD_BYTES = ProfileRecord.size // 8

#: The requantization parameters of one output channel, as the requantizer takes them.
ChannelParams = data.StructLayout({
    "bias": signed(ACC_BITS),  # effective bias (input zero point folded in)
    "m0": signed(M0_BITS),     # fixed-point multiplier
    "shift": unsigned(SHIFT_BITS),
})

#: A stored shift: one byte per channel, the low SHIFT_BITS used.
_ShiftByte = data.StructLayout({"value": unsigned(SHIFT_BITS), "unused": unsigned(8 - SHIFT_BITS)})


@functools.cache     # asked for by every command the ISA interpreter decodes (EngineConfig.param_words)
def param_tile_layout(cols: int) -> data.StructLayout:
    """The parameters of one tile of ``cols`` output channels as stored at the head of each tile's
    weight-blob block (``hw.layout.pack_conv_blob``): ``cols`` int32 biases, then ``cols`` int32
    multipliers, then ``cols`` shift bytes, little-endian."""
    return data.StructLayout({
        "bias": data.ArrayLayout(ChannelParams["bias"].shape, cols),
        "m0": data.ArrayLayout(ChannelParams["m0"].shape, cols),
        "shift": data.ArrayLayout(_ShiftByte, cols),
    })


@functools.cache
def _param_tile_bits(cols: int) -> int:
    return param_tile_layout(cols).size


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Geometry of one engine instance.

    Parameters
    ----------
    rows : int
        Rows of the systolic array: input-channel lanes. Also the width in
        bytes of an activation word and of the memory port. A power of two >= 2.
    cols : int
        Columns: output channels computed at once. A power of two >= ``rows``.
    ibuf_depth : int
        Activation buffer depth in words (``rows`` bytes each).
    acc_depth : int
        Pixels per accumulator bank (two banks of ``acc_depth x cols`` int32):
        the longest pixel run that shares one weight tile.
    mem_addr_bits : int
        Width of a word address on the memory port.
    pool_max_cb : int
        Most channel blocks a max-pool-on-load can handle (its line state).
    ibuf_read_ports : int
        Read ports of the activation buffer: 2 gives the load unit its own, so a pooling band load
        overlaps the previous command's convolution (twice the buffer's block RAM); with 1 only copying
        loads overlap.
    """

    rows: int = 8
    cols: int = 16
    ibuf_depth: int = 16384
    acc_depth: int = 512
    mem_addr_bits: int = 24
    pool_max_cb: int = 64
    ibuf_read_ports: int = 2

    def __post_init__(self):
        if not (isinstance(self.rows, int) and 2 <= self.rows <= 64 and _is_pow2(self.rows)):
            raise ValueError(f"rows must be a power of two in [2, 64] (it is the memory word width in bytes), "
                             f"got {self.rows!r}")
        if not (isinstance(self.cols, int) and _is_pow2(self.cols) and self.rows <= self.cols <= 128):
            raise ValueError(f"cols must be a power of two in [rows={self.rows}, 128] (output tiles are "
                             f"addressed by shifting), got {self.cols!r}")
        if not (_is_pow2(self.ibuf_depth) and 64 <= self.ibuf_depth <= 1 << IBUF_ADDR_BITS):
            raise ValueError(f"ibuf_depth must be a power of two in [64, {1 << IBUF_ADDR_BITS}], "
                             f"got {self.ibuf_depth!r}")
        if not (_is_pow2(self.acc_depth) and 16 <= self.acc_depth <= 4096):
            raise ValueError(f"acc_depth must be a power of two in [16, 4096], got {self.acc_depth!r}")
        if not (8 <= self.mem_addr_bits <= ADDR_BITS):
            raise ValueError(f"mem_addr_bits must be in [8, {ADDR_BITS}], got {self.mem_addr_bits!r}")
        if not (_is_pow2(self.pool_max_cb) and 1 <= self.pool_max_cb <= 1 << CB_BITS):
            raise ValueError(f"pool_max_cb must be a power of two in [1, 256], got {self.pool_max_cb!r}")
        if self.ibuf_read_ports not in (1, 2):
            raise ValueError(f"ibuf_read_ports must be 1 or 2, got {self.ibuf_read_ports!r}")

    # Derived sizes, in memory words.
    @property
    def word_bytes(self) -> int:
        return self.rows

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    @property
    def cmd_words(self) -> int:
        return CMD_BYTES // self.rows if self.rows <= CMD_BYTES else 1

    @property
    def tile_words(self) -> int:
        """Words of one weight tile (rows x cols int8): one word per column."""
        return self.cols

    @property
    def param_words(self) -> int:
        """Words of one output-channel tile's parameters (:func:`param_tile_layout`)."""
        return _param_tile_bits(self.cols) // (8 * self.rows)

    @property
    def profile_words(self) -> int:
        return max(1, PROFILE_RECORD_BYTES // self.rows)

    @property
    def psum_bits(self) -> int:
        """Width of a column's partial sum inside the array: ``rows`` int8 x int8 products."""
        return 16 + max(1, math.ceil(math.log2(self.rows))) + 1

    @property
    def groups(self) -> int:
        """Output words per pixel per output-channel tile."""
        return self.cols // self.rows

    def config_words(self) -> tuple[int, int, int]:
        """The values of the CONFIG0..CONFIG2 registers: what the driver checks."""
        c0 = (self.rows | (self.cols << 8) | (self.mem_addr_bits << 16) | (int(math.log2(self.pool_max_cb)) << 24)
              | ((self.ibuf_read_ports - 1) << CONFIG0_READ_PORTS_BIT))
        return c0, self.ibuf_depth, self.acc_depth

    @classmethod
    def from_config_words(cls, c0: int, c1: int, c2: int) -> EngineConfig:
        return cls(rows=c0 & 0xFF, cols=(c0 >> 8) & 0xFF, mem_addr_bits=(c0 >> 16) & 0xFF,
                   pool_max_cb=1 << ((c0 >> 24) & 0x1F), ibuf_depth=c1, acc_depth=c2,
                   ibuf_read_ports=1 + ((c0 >> CONFIG0_READ_PORTS_BIT) & 1))


class Opcode(enum.Enum, shape=4):
    """Command opcodes. 0 is deliberately unused: zeroed memory is an error, not a no-op."""

    CONV = 1  # load a band (optionally max-pooled on the way in), convolve, write to memory
    FIRE = 2  # load a band, squeeze 1x1 into the buffer, expand 1x1 and 3x3 into memory (concat)
    POOL = 3  # load a band through the max-pool, write it to memory
    GAP = 4   # load a tensor, average every channel over all pixels, write one pixel


class ErrorCode(enum.Enum, shape=4):
    NONE = 0
    BAD_OPCODE = 1     # opcode not in Opcode
    ZERO_SIZE = 2      # a height, width, row or channel count of zero
    IBUF_OVERFLOW = 3  # a region does not fit the activation buffer (or two regions overlap)
    BAD_KERNEL = 4     # kernel 0 (the field holds 1..7), dilation 0
    BAD_STRIDE = 5     # stride not 1..4
    BAD_CHANNELS = 6   # channel counts that the layout cannot place (e.g. expand1x1 not a multiple of rows)
    BAD_POOL = 7       # pool kernel not 2 or 3, padding >= kernel, or too many channel blocks
    BAD_ADDRESS = 8    # an address beyond the memory port's reach
    BAD_SHAPE = 9      # inconsistent shapes (e.g. a band with more output rows than input rows)
    BAD_PIXEL_STRIDE = 10  # a pixel stride smaller than the pixel (src_pix or dst_pix < its blocks)


@dataclasses.dataclass(frozen=True)
class RegisterSpec:
    """One 32-bit register of the CSR bus: its name, word index, access and meaning."""

    name: str
    index: int
    access: str  # "R", "W" or "RW"
    doc: str


#: The register map, the one declaration: :class:`Reg`, the gateware's register file and the
#: table in docs/ISA.md (``hw.docgen``) come from it.
REGISTERS = (
    RegisterSpec("ID", 0, "R", "ENGINE_ID"),
    RegisterSpec("VERSION", 1, "R", "major << 16 | minor"),
    RegisterSpec("CONFIG0", 2, "R", "rows | cols << 8 | mem_addr_bits << 16 | log2(pool_max_cb) << 24 "
                 "| (ibuf_read_ports - 1) << 31"),
    RegisterSpec("CONFIG1", 3, "R", "ibuf_depth (words)"),
    RegisterSpec("CONFIG2", 4, "R", "acc_depth (pixels per bank)"),
    RegisterSpec("CTRL", 5, "W", "Ctrl bits (self-clearing strobes)"),
    RegisterSpec("STATUS", 6, "R", "Status (layout StatusLayout)"),
    RegisterSpec("CMD_ADDR", 7, "RW", "word address of the first command"),
    RegisterSpec("CMD_COUNT", 8, "RW", "number of commands to run"),
    RegisterSpec("CMD_INDEX", 9, "R", "index of the command running, or of the one that failed"),
    RegisterSpec("PROF_ADDR", 10, "RW",
                 "word address for per-command profile records (when CTRL.PROFILE was set at START)"),
    RegisterSpec("CYCLES", 11, "R", "cycles since the last START (stops when the run ends)"),
    RegisterSpec("ACTIVE", 12, "R", "cycles in which an activation vector entered the array"),
    RegisterSpec("SCRATCH", 13, "RW", "free for the host (link tests)"),
)

#: Register map: 32-bit registers at word indices on the CSR bus (from :data:`REGISTERS`).
Reg = enum.IntEnum("Reg", [(spec.name, spec.index) for spec in REGISTERS], module=__name__)


class Ctrl(enum.IntFlag):
    START = 1 << 0    # run CMD_COUNT commands from CMD_ADDR (ignored while busy)
    CLEAR = 1 << 1    # clear DONE and ERROR (and the error code)
    PROFILE = 1 << 2  # with START: write one profile record per command at PROF_ADDR + i * profile_words


#: The STATUS register.
StatusLayout = data.StructLayout({
    "busy": 1,
    "done": 1,
    "error": 1,
    "reserved": 5,
    "error_code": ErrorCode,  # of the failing command
    "unused": 20,
})


class Status(enum.IntFlag):
    """STATUS bits as the host reads them (the layout is :data:`StatusLayout`)."""

    BUSY = 1 << StatusLayout["busy"].offset
    DONE = 1 << StatusLayout["done"].offset
    ERROR = 1 << StatusLayout["error"].offset

    @staticmethod
    def error_code(status: int) -> ErrorCode:
        return ErrorCode(StatusLayout.from_bits(status & ((1 << StatusLayout.size) - 1)).error_code)


# --- command layouts ---------------------------------------------------------------------------

#: The band load shared by every command: ``src_rows x src_w`` pixels of ``cb``
#: words each (pixel ``p`` at ``src + p * src_pix``, which reads one part of a
#: concatenated tensor), into the activation buffer at ``ibuf``;
#: optionally max-pooled on the way in (stride 2, kernel ``pool_k``, the band's
#: pooled row ``py`` covering source rows ``2*py - pool_pad_t ...``).
LoadSpec = data.StructLayout({
    "src": ADDR_BITS,
    "src_rows": DIM_BITS,
    "src_w": DIM_BITS,
    "cb": CB_BITS,
    "src_pix": CB_BITS,    # words from one source pixel to the next (0: cb, contiguous)
    "ibuf": IBUF_ADDR_BITS,
    "pool": 1,
    "pool_k": 2,
    "pool_pad_t": 2,
    "pool_pad_l": 2,
})

#: The per-convolution quantization constants that are per tensor (the
#: per-channel ones, bias, m0 and shift, are in the weight blob).
QuantSpec = data.StructLayout({
    "zp_in": signed(8),    # fed for padded taps
    "zp_out": signed(8),
    "act_min": signed(8),  # clamp (ReLU: zp_out)
    "act_max": signed(8),
})

ConvCmd = data.StructLayout({
    "opcode": Opcode,
    "load": LoadSpec,
    "in_h": DIM_BITS,      # the tensor in the buffer (after pooling, if any)
    "in_w": DIM_BITS,
    "kh": 3, "kw": 3,      # 1..7
    "sy": 3, "sx": 3,      # 1..4
    "dil": 3,              # 1..7
    "pad_t": signed(4),    # input row of output row 0, tap 0 is -pad_t (band-local)
    "pad_l": 3,            # 0..7
    "out_h": DIM_BITS,
    "out_w": DIM_BITS,
    "cout": DIM_BITS,
    "quant": QuantSpec,
    "wblob": ADDR_BITS,    # weight blob (hw.layout.pack_conv_blob)
    "dst": ADDR_BITS,      # first output word (the band's first pixel, channel offset included)
    "dst_pix": CB_BITS,    # words per output pixel in the destination tensor (concat placement)
})

FireCmd = data.StructLayout({
    "opcode": Opcode,
    "load": LoadSpec,
    "in_h": DIM_BITS,      # squeeze rows in the buffer: out_h plus the halo rows
    "in_w": DIM_BITS,
    "halo_top": 1,         # 1 when the band has a row above it (not the image's first band)
    "out_h": DIM_BITS,     # output rows of the band
    "squeeze": DIM_BITS,   # channels
    "expand1": DIM_BITS,   # channels, a multiple of rows
    "expand3": DIM_BITS,   # channels
    "sq_ibuf": IBUF_ADDR_BITS,  # where the squeeze output lives in the buffer
    "zp_in": signed(8), "zp_sq": signed(8), "zp_out": signed(8),
    "sq_min": signed(8), "sq_max": signed(8), "out_min": signed(8), "out_max": signed(8),
    "w_sq": ADDR_BITS, "w_e1": ADDR_BITS, "w_e3": ADDR_BITS,
    "dst": ADDR_BITS,      # first output word of the band; expand3 follows expand1 in each pixel
})

PoolCmd = data.StructLayout({
    "opcode": Opcode,
    "load": LoadSpec,      # load.pool must be 1
    "out_h": DIM_BITS,
    "out_w": DIM_BITS,
    "dst": ADDR_BITS,
    "dst_pix": CB_BITS,
})

GapCmd = data.StructLayout({
    "opcode": Opcode,
    "load": LoadSpec,      # load.pool must be 0; every loaded pixel is averaged
    "m0": M0_BITS,         # requantization of sum(x - zp_in): s_in / (n * s_out)
    "shift": SHIFT_BITS,
    "zp_in": signed(8),
    "zp_out": signed(8),
    "dst": ADDR_BITS,
})

COMMAND_LAYOUTS = {
    Opcode.CONV: ConvCmd,
    Opcode.FIRE: FireCmd,
    Opcode.POOL: PoolCmd,
    Opcode.GAP: GapCmd,
}

for _op, _layout in COMMAND_LAYOUTS.items():
    assert _layout.size <= CMD_BITS, f"{_op.name} command is {_layout.size} bits, more than {CMD_BITS}"


def _check_fits(layout, fields: dict, path=""):
    for name, value in fields.items():
        shape = layout[name].shape
        if isinstance(value, dict):
            _check_fits(shape, value, f"{path}{name}.")
        elif isinstance(value, int) and not isinstance(value, enum.Enum):
            shape = Shape.cast(shape)
            lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
            if not lo <= value < hi:
                raise ValueError(f"command field {path}{name}={value} does not fit {shape}")


def pack_command(opcode: Opcode, **fields) -> bytes:
    """Pack a command into its 64 little-endian bytes.

    Every value is checked against its field's shape, so the host never sends
    a silently truncated command. Fields left out are zero.
    """
    layout = COMMAND_LAYOUTS[opcode]
    _check_fits(layout, fields)
    value = layout.const({"opcode": opcode, **fields}).as_value().value
    return value.to_bytes(CMD_BYTES, "little")


def unpack_command(raw: bytes):
    """Decode 64 command bytes into ``(Opcode, data.Const)`` (``(None, raw int)`` for a bad opcode)."""
    value = int.from_bytes(raw[:CMD_BYTES], "little")
    try:
        op = Opcode(value & 0xF)
    except ValueError:
        return None, value
    return op, COMMAND_LAYOUTS[op].from_bits(value & ((1 << COMMAND_LAYOUTS[op].size) - 1))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def load_words(op: Opcode, c) -> int:
    """Words a command's band load writes into the activation buffer."""
    ld = c.load
    if not ld.pool:
        return ld.src_rows * ld.src_w * ld.cb
    h, w = (c.out_h, c.out_w) if op == Opcode.POOL else (c.in_h, c.in_w)
    return h * w * ld.cb


def load_read_span(c) -> tuple[int, int]:
    """The memory words ``[lo, hi)`` a command's band load may read (the memory fence's side of the next
    command): ``src_rows * src_w`` pixels at the pixel stride (a bound: the last pixel's tail is unread)."""
    ld = c.load
    return ld.src, ld.src + ld.src_rows * ld.src_w * (ld.src_pix or ld.cb)


def write_span(config: EngineConfig, op: Opcode, c) -> tuple[int, int]:
    """The memory words ``[lo, hi)`` a command may write (``write_words``: its output pixels at the
    output pixel stride); the next command's load waits while its :func:`load_read_span` meets it."""
    R = config.rows
    if op == Opcode.CONV:
        return c.dst, c.dst + c.out_h * c.out_w * c.dst_pix
    if op == Opcode.FIRE:
        return c.dst, c.dst + c.out_h * c.in_w * (_cdiv(c.expand1, R) + _cdiv(c.expand3, R))
    if op == Opcode.POOL:
        return c.dst, c.dst + c.out_h * c.out_w * c.dst_pix
    return c.dst, c.dst + c.load.cb


def buffer_regions(config: EngineConfig, op: Opcode, c) -> list[tuple[int, int]]:
    """The activation-buffer words ``[lo, hi)`` a command reads while the next command's load may run
    beside it: its band; for FIRE only its squeeze output (no load runs beside its squeeze, the only reader
    of its band). The next command's load waits while the band it writes meets one of them."""
    if op == Opcode.FIRE:
        return [(c.sq_ibuf, c.sq_ibuf + c.in_h * c.in_w * _cdiv(c.squeeze, config.rows))]
    lo = c.load.ibuf
    return [(lo, lo + load_words(op, c))]


def check_command(config: EngineConfig, raw: bytes) -> ErrorCode:
    """The error code the engine reports for a command (``ErrorCode.NONE`` when it runs).

    This is the specification of the decoder's checks, in the order the
    gateware applies them (``hw.engine.Engine._check``); the compiler runs it
    on every command it emits, and a test compares it with the gateware on
    random bad commands.
    """
    op, c = unpack_command(raw)
    if op is None:
        return ErrorCode.BAD_OPCODE
    R, depth, A = config.rows, config.ibuf_depth, config.mem_addr_bits
    ld = c.load

    def addr_bad(a):
        return (a >> A) != 0

    if ld.src_rows == 0 or ld.src_w == 0 or ld.cb == 0:
        return ErrorCode.ZERO_SIZE
    pool_bad = ld.pool and (ld.pool_k not in (2, 3) or ld.pool_pad_t > 1 or ld.pool_pad_l > 1
                            or ld.cb > config.pool_max_cb)
    if pool_bad or (op == Opcode.POOL and not ld.pool) or (op == Opcode.GAP and ld.pool):
        return ErrorCode.BAD_POOL
    if ld.src_pix != 0 and ld.src_pix < ld.cb:
        return ErrorCode.BAD_PIXEL_STRIDE
    if addr_bad(ld.src):
        return ErrorCode.BAD_ADDRESS
    ld_end = ld.ibuf + load_words(op, c)
    if ld_end > depth:
        return ErrorCode.IBUF_OVERFLOW
    if op == Opcode.CONV:
        if 0 in (c.in_h, c.in_w, c.out_h, c.out_w, c.cout):
            return ErrorCode.ZERO_SIZE
        if 0 in (c.kh, c.kw, c.dil):
            return ErrorCode.BAD_KERNEL
        if not (1 <= c.sy <= MAX_STRIDE and 1 <= c.sx <= MAX_STRIDE):
            return ErrorCode.BAD_STRIDE
        if c.dst_pix < _cdiv(c.cout, R):
            return ErrorCode.BAD_PIXEL_STRIDE
        if not ld.pool and (c.in_h != ld.src_rows or c.in_w != ld.src_w):
            return ErrorCode.BAD_SHAPE
        if addr_bad(c.wblob) or addr_bad(c.dst):
            return ErrorCode.BAD_ADDRESS
    elif op == Opcode.FIRE:
        if 0 in (c.in_h, c.in_w, c.out_h, c.squeeze, c.expand1, c.expand3):
            return ErrorCode.ZERO_SIZE
        if c.expand1 % R:
            return ErrorCode.BAD_CHANNELS
        if ((not ld.pool and (c.in_h != ld.src_rows or c.in_w != ld.src_w))
                or c.out_h + c.halo_top > c.in_h or c.in_h > c.out_h + c.halo_top + 1):
            return ErrorCode.BAD_SHAPE
        sq_end = c.sq_ibuf + c.in_h * c.in_w * _cdiv(c.squeeze, R)
        if sq_end > depth or (c.sq_ibuf < ld_end and sq_end > ld.ibuf):
            return ErrorCode.IBUF_OVERFLOW
        if addr_bad(c.w_sq) or addr_bad(c.w_e1) or addr_bad(c.w_e3) or addr_bad(c.dst):
            return ErrorCode.BAD_ADDRESS
    elif op == Opcode.POOL:
        if c.out_h == 0 or c.out_w == 0:
            return ErrorCode.ZERO_SIZE
        if c.dst_pix < ld.cb:
            return ErrorCode.BAD_PIXEL_STRIDE
        if addr_bad(c.dst):
            return ErrorCode.BAD_ADDRESS
    elif op == Opcode.GAP and addr_bad(c.dst):
        return ErrorCode.BAD_ADDRESS
    return ErrorCode.NONE
