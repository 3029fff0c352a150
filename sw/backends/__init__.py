"""Transports to an engine (:mod:`sw.transport`), opened by name: :func:`open_backend`.

=============  ==============================================  =========================================
name           what                                            options (keyword arguments)
=============  ==============================================  =========================================
``golden``     the golden model in Python (no cycle counts)    :class:`~sw.backends.golden.GoldenBackend`
``verilator``  the engine simulated by Verilator (cycles)      :class:`~sim.verilator_backend.VerilatorBackend`
``serial``     a board on its serial link                      :func:`open_serial`
=============  ==============================================  =========================================

A serial port is a device (``/dev/ttyUSB1``), a pyserial-like object, or
``<scheme>:<name>`` from :data:`PORT_SCHEMES`: ``sim:<board>`` is the board's
top simulated in Verilator behind its UART (:func:`sim.link_sim.open_sim_port`);
``usb`` (or ``usb:VVVV:PPPP``) is a board's USB link through PyUSB
(:func:`sw.backends.usb.open_usb_port`).

The simulator backends sit above ``sw`` in the package order
(``hw`` <- ``quant`` <- ``sw`` <- ``sim`` <- ``tools``): the registry names
every backend by ``module:attribute`` and imports it when it is first opened,
the way entry points work, so that ``sw`` never imports ``sim``
(``tests/test_backends.py`` resolves every entry).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

from hw.isa import EngineConfig

__all__ = ["BACKENDS", "PORT_SCHEMES", "BackendEntry", "backend_names", "open_backend", "open_port", "open_serial"]


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    """A backend: ``target`` is ``"module:attribute"`` of the class or function that opens it."""

    target: str
    summary: str

    def load(self):
        """The class or function that opens the backend (its module imported now)."""
        return _load(self.target)


#: Every backend, by name.
BACKENDS: dict[str, BackendEntry] = {
    "golden": BackendEntry("sw.backends.golden:GoldenBackend", "the golden model in Python (no cycle counts)"),
    "verilator": BackendEntry("sim.verilator_backend:VerilatorBackend",
                              "the engine simulated by Verilator (cycle-exact)"),
    "serial": BackendEntry("sw.backends:open_serial", "a board on its serial link (a device, or sim:<board>)"),
}

#: Serial ports that are not devices: ``<scheme>:<name>`` -> ``"module:function"`` opening a pyserial-like port.
PORT_SCHEMES: dict[str, str] = {
    "sim": "sim.link_sim:open_sim_port",
    "usb": "sw.backends.usb:open_usb_port",   # also bare: "usb" is the first 1209:0001 device
}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_names() -> list[str]:
    """The registered backend names."""
    return list(BACKENDS)


def open_backend(name: str, **options):
    """Open the backend ``name``; ``options`` are the keyword arguments of its class or function.

    Raises
    ------
    ValueError
        For an unknown name or an option the backend does not take (one line, naming the choices).
    TransportError
        If the backend cannot be opened (a simulator that does not start, a board that does not answer).
    """
    entry = BACKENDS.get(name)
    if entry is None:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    factory = entry.load()
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise ValueError(f"backend {name!r}: {e}") from None
    return factory(**options)


def open_port(port):
    """A pyserial-like port for ``port``: a ``<scheme>:<name>`` of :data:`PORT_SCHEMES` opened, else ``port``.

    Raises
    ------
    sw.backends.serial.LinkError
        If the scheme's port cannot be opened (the message names the port; the cause is chained).
    """
    scheme, sep, _ = port.partition(":") if isinstance(port, str) else ("", "", "")
    if scheme not in PORT_SCHEMES or not (sep or scheme == "usb"):
        return port
    from sw.transport import TransportError

    from .serial import LinkError

    try:
        return _load(PORT_SCHEMES[scheme])(port)
    except TransportError:
        raise
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LinkError(f"{port}: {reason}") from e


def open_serial(port, config: EngineConfig | None = None, **serial_kw):
    """A :class:`~sw.backends.serial.SerialBackend` to the board at ``port`` (see :func:`open_port`).

    ``config`` None reads the board's configuration from the board;
    ``serial_kw`` go to :class:`~sw.backends.serial.SerialBackend`. A
    simulated board (``sim:``) is slow: the timeout defaults to 2 s and a
    ``WAIT`` to 20,000 cycles. A USB port (``usb``) keeps the backend's defaults.
    """
    from .serial import SerialBackend

    opened = open_port(port)
    if isinstance(port, str) and port.startswith("sim:"):
        serial_kw.setdefault("timeout", 2.0)
        serial_kw.setdefault("wait_cycles", 20_000)
    try:
        return SerialBackend(opened, config, **serial_kw)
    except BaseException:
        if hasattr(opened, "close"):
            opened.close()
        raise
