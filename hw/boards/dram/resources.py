"""What the LiteDRAM controller costs on its own: Yosys ``synth_ecp5`` on the generated core alone.

nextpnr reports the whole design; the bitstream report (:mod:`hw.boards.build`) lists the controller
separately from this run: the core's Verilog (pads, PHY, controller, ``wb_ctrl`` CSRs) synthesised
with the same Yosys, the cell counts cached beside the core (``synth_stat.txt``).
"""

from __future__ import annotations

import subprocess

__all__ = ["controller_cells"]


def controller_cells(core, env: dict) -> dict[str, int]:
    """Yosys cell counts of ``core`` (a :class:`hw.boards.dram.gen.DramCore`) synthesised alone for the ECP5.

    ``env`` holds ``YOSYS`` (:func:`hw.boards.build.tool_env`). Returns the summary of
    :func:`hw.boards.build._synth_summary` (``lut``, ``ff``, ``carry``, ``dsp``, ``bram``, ``lutram``) plus
    ``io`` (TRELLIS_IO).

    Raises
    ------
    RuntimeError
        If Yosys fails (with the end of its log).
    """
    from hw.boards.build import _synth_summary, _yosys_cells

    stat = core.directory / "synth_stat.txt"
    if not stat.exists():
        script = (f"read_verilog {core.verilog}; synth_ecp5 -top {core.name}; "
                  f"tee -q -o {stat}.tmp stat")
        proc = subprocess.run([env["YOSYS"], "-q", "-p", script], capture_output=True, text=True, env=env,
                              cwd=core.directory)
        if proc.returncode:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise RuntimeError(f"Yosys failed on the LiteDRAM core {core.verilog}:\n{tail}")
        (core.directory / "synth_stat.txt.tmp").rename(stat)
    cells = _yosys_cells(stat)
    return {**_synth_summary("ecp5", cells), "io": cells.get("TRELLIS_IO", 0)}
