"""Transports to an engine: :class:`VerilatorBackend` (simulation). See :mod:`sw.transport`."""

from .verilator import VerilatorBackend

__all__ = ["VerilatorBackend"]
