"""The interface between the host driver and an engine, wherever the engine runs.

The driver talks only to a :class:`Transport`: memory in words of
``EngineConfig.rows`` bytes, 32-bit registers indexed by :class:`hw.isa.Reg`,
and :meth:`Transport.wait_done`. The simulator backend
(:class:`sim.verilator_backend.VerilatorBackend`) and a board backend
implement it, so the same driver runs against the simulated gateware and the
hardware.
"""

from __future__ import annotations

import abc

from hw.isa import Reg, Status
from hw.link.protocol import PIXEL_BYTES

__all__ = ["TransportError", "EngineTimeout", "Transport", "expand_pixels"]


class TransportError(RuntimeError):
    """The link to the engine failed (simulator died, bad address, protocol error...)."""


class EngineTimeout(TransportError):
    """The engine did not finish within the allowed cycles or time.

    Attributes
    ----------
    status : int or None
        The last value of the awaited register (``STATUS``), when known.
    cycles : int or None
        Cycles waited, when the backend counts them.
    """

    def __init__(self, message: str, *, status: int | None = None, cycles: int | None = None):
        super().__init__(message)
        self.status = status
        self.cycles = cycles


def expand_pixels(pixels: bytes, word_bytes: int) -> bytes:
    """Pixels of :data:`~hw.link.protocol.PIXEL_BYTES` bytes -> words of ``word_bytes``, the other lanes zero:
    what the board's ``WRITE_PIX`` stores (:mod:`hw.link.bridge`)."""
    import numpy as np

    n = len(pixels)
    if n % PIXEL_BYTES:
        raise TransportError(f"{n} bytes is not a whole number of {PIXEL_BYTES}-byte pixels")
    if word_bytes <= PIXEL_BYTES:
        raise TransportError(f"{PIXEL_BYTES}-byte pixels need words wider than a pixel, not {word_bytes} bytes")
    words = np.zeros((n // PIXEL_BYTES, word_bytes), dtype=np.uint8)
    words[:, :PIXEL_BYTES] = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(-1, PIXEL_BYTES)
    return words.tobytes()


class Transport(abc.ABC):
    """Memory, registers and completion of one engine.

    Addresses are word addresses; a word is :attr:`word_bytes` bytes
    (``EngineConfig.rows``). Usable as a context manager (``close()`` on exit).
    """

    #: Width of a memory word in bytes.
    word_bytes: int

    @abc.abstractmethod
    def write_mem(self, addr_words: int, data: bytes) -> None:
        """Write ``data`` (a whole number of words) at word ``addr_words``.

        Raises
        ------
        TransportError
            If the range is outside the memory or ``data`` is not whole words.
        """

    @abc.abstractmethod
    def read_mem(self, addr_words: int, n_words: int) -> bytes:
        """Read ``n_words`` words from word ``addr_words``.

        Raises
        ------
        TransportError
            If the range is outside the memory.
        """

    def write_pixels(self, addr_words: int, pixels: bytes) -> None:
        """Write a picture of :data:`~hw.link.protocol.PIXEL_BYTES`-byte pixels, pixel ``i`` as the word at
        ``addr_words + i``: its bytes in lanes 0..2, zero in the others (the engine's input layout of a
        3-channel picture, :func:`hw.layout.pack_activation`).

        The default expands the words here and calls :meth:`write_mem`; a board backend sends the pixels
        as they are (``WRITE_PIX``: a quarter less on the link with 4-byte words).

        Raises
        ------
        TransportError
            If ``pixels`` is not whole pixels, the words are not wider than a pixel, or the range is outside
            the memory.
        """
        words = expand_pixels(pixels, self.word_bytes)
        self.write_mem(addr_words, words)

    @abc.abstractmethod
    def write_reg(self, reg: Reg | int, value: int) -> None:
        """Write a 32-bit register."""

    @abc.abstractmethod
    def read_reg(self, reg: Reg | int) -> int:
        """Read a 32-bit register."""

    def wait_done(self, timeout: float = 60.0, *, max_cycles: int | None = None) -> int:
        """Wait until ``STATUS.BUSY`` clears; return the final ``STATUS``.

        The default polls :meth:`read_reg`; backends do better (the simulator
        clocks the design until ``irq`` or ``BUSY`` clears without a round trip
        per poll).

        Parameters
        ----------
        timeout : float
            Wall-clock seconds.
        max_cycles : int or None
            Simulated-cycle budget (backends that count cycles).

        Raises
        ------
        EngineTimeout
            If the engine is still busy when either limit is reached.
        """
        import time

        deadline = time.monotonic() + timeout
        while True:
            status = self.read_reg(Reg.STATUS)
            if not status & Status.BUSY:
                return status
            if time.monotonic() > deadline:
                raise EngineTimeout(f"engine still busy after {timeout} s (STATUS={status:#x})",
                                    status=status)
            time.sleep(0.001)

    def cycles(self) -> int | None:
        """Clock cycles since the engine came out of reset, where the backend knows them."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link (stop the simulator). Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
