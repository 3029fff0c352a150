"""Generate the reference tables of docs/ISA.md from hw/isa.py (the one definition).

``python -m hw.docgen`` rewrites the part of docs/ISA.md between the
``<!-- generated -->`` markers; ``python -m hw.docgen --check`` fails when the
file is out of date (a test runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import data

from . import isa

#: Tile width used for the parameter-tile table (the layout scales with cols).
_DOC_COLS = 2
DOC = Path(__file__).resolve().parent.parent / "docs" / "ISA.md"
BEGIN, END = "<!-- generated: python -m hw.docgen -->", "<!-- end generated -->"


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a bare ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _describe(shape) -> str:
    """A field's type as the tables print it."""
    if isinstance(shape, type) and issubclass(shape, isa.enum.Enum):
        return f"{shape.__name__} ({Shape.cast(shape).width} bits)"
    if isinstance(shape, data.ArrayLayout):
        return f"{shape.length} x {_describe(shape.elem_shape)}"
    if isinstance(shape, data.StructLayout):
        return "{" + ", ".join(f"{name}: {_describe(field.shape)}" for name, field in shape) + "}"
    s = Shape.cast(shape)
    return f"signed({s.width})" if s.signed else f"unsigned({s.width})"


def _fields(layout: data.StructLayout, prefix: str = "", base: int = 0):
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.StructLayout):
            yield from _fields(shape, f"{prefix}{name}.", base + field.offset)
            continue
        yield f"{prefix}{name}", base + field.offset, Shape.cast(shape).width, _describe(shape)


def _layout_table(title: str, layout: data.StructLayout, base: int = 0) -> list[str]:
    lines = [f"### {title}", "", f"{layout.size} bits.", "", "| field | bits | type |", "| --- | --- | --- |"]
    for name, off, width, desc in _fields(layout):
        lines.append(f"| `{name}` | {base + off}..{base + off + width - 1} | {desc} |")
    return lines + [""]


def generate() -> str:
    out = [BEGIN, "", "## Reference (generated from `hw/isa.py`)", ""]
    out += [f"Commands are {isa.CMD_BYTES} bytes, little-endian; bits past a layout's size are zero.", ""]
    out += ["### Opcodes", "", "| opcode | value |", "| --- | --- |"]
    out += [f"| `{op.name}` | {op.value} |" for op in isa.Opcode] + [""]
    for op, layout in isa.COMMAND_LAYOUTS.items():
        out += _layout_table(f"{op.name} command", layout)
    out += ["### Error codes (STATUS bits 8..11)", "", "| code | value |", "| --- | --- |"]
    out += [f"| `{e.name}` | {e.value} |" for e in isa.ErrorCode] + [""]
    out += ["### Registers (32 bits, CSR word index)", "", "| register | index | access | meaning |",
            "| --- | --- | --- | --- |"]
    out += [f"| `{r.name}` | {r.index} | {r.access} | {_cell(r.doc)} |" for r in isa.REGISTERS] + [""]
    out += ["### CTRL bits", "", "| bit | value |", "| --- | --- |"]
    out += [f"| `{b.name}` | {int(b):#x} |" for b in isa.Ctrl] + [""]
    out += _layout_table("STATUS register", isa.StatusLayout)
    out += ["### Profile record (per command, little-endian u32 each)", "", "| byte offset | field |", "| --- | --- |"]
    out += [f"| {field.offset // 8} | `{name}` |" for name, field in isa.ProfileRecord] + [""]
    out += _layout_table(f"Parameters of a tile of C output channels (here C = {_DOC_COLS})",
                         isa.param_tile_layout(_DOC_COLS))
    out.append(END)
    return "\n".join(out)


def update(check: bool = False) -> bool:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the generated-section markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + generate() + tail
    if check:
        return new == text
    DOC.write_text(new)
    return True


if __name__ == "__main__":
    if "--check" in sys.argv:
        ok = update(check=True)
        print("docs/ISA.md is up to date" if ok else "docs/ISA.md is out of date: run python -m hw.docgen")
        sys.exit(0 if ok else 1)
    update()
    print(f"updated {DOC}")
