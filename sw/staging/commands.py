"""Command fields as the staging reads and rewrites them: moving a command's addresses into the board's range."""

from __future__ import annotations

from hw.isa import CMD_BYTES, COMMAND_LAYOUTS, Opcode
from sw.transport import TransportError


class StagingError(TransportError):
    """A command's memory does not fit the board, or a run the staging cannot carry out."""


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
