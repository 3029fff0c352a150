"""Opening a board: the serial link (or its simulation), and the transport that runs a program on it."""

from __future__ import annotations

from sw.compiler import Program
from sw.transport import Transport

from .transport import StagedTransport


def connect_board(port, **serial_kw):
    """A :class:`sw.backends.serial.SerialBackend` to the board at ``port``, its configuration read from the board.

    ``port`` is a device (``/dev/ttyUSB1``), a serial-like object, or
    ``sim:<board>``: that board's top in Verilator behind a simulated UART
    (:func:`sim.link_sim.open_sim_port`; a few kilobytes per second).
    ``serial_kw`` go to :class:`sw.backends.serial.SerialBackend`.
    """
    from sw.backends import open_backend

    return open_backend("serial", port=port, **serial_kw)


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
