"""The host end of the USB link (issue 11): a pyserial-like port over the board's bulk endpoints.

:class:`UsbPipe` carries the byte stream of :mod:`hw.link.protocol` over the
vendor-class device of :mod:`hw.link.usb` (bulk OUT 0x01: requests, bulk IN
0x81: answers, one IN transfer per answer) with PyUSB and libusb, and gives it
the pyserial surface :class:`sw.backends.serial.SerialBackend` uses: ``read``
with ``timeout``, ``in_waiting``, ``write``, ``reset_input_buffer`` and
``break_condition`` (raising it sends the resync vendor request: the board
drops the frame in progress, as a UART line break makes it). The backend runs
unchanged over it: ``kindling ... --backend serial --port usb`` (the first
1209:0001 device) or ``--port usb:VVVV:PPPP``.

Every failure of the device is an :class:`OSError` (PyUSB's ``USBError`` is
one), which the backend turns into its one-line :class:`LinkError`; opening
fails with a :class:`LinkError` that says what is missing (PyUSB, libusb, the
device, the permission).
"""

from __future__ import annotations

import contextlib
import math
import time

from hw.link import protocol as P

from .serial import LinkError

__all__ = ["UsbPipe", "open_usb_port", "parse_usb_port", "SerialTimeoutException"]

#: Bytes asked of libusb per IN read: whole packets, so that a packet never overflows it.
READ_CHUNK = 32 * P.USB_MAX_PACKET
#: Bound of :meth:`UsbPipe.reset_input_buffer`'s drain.
DRAIN_S = 0.1


class SerialTimeoutException(OSError):
    """A write the device did not take in time. Named as pyserial's: :class:`SerialBackend` retries on it."""


def parse_usb_port(name: str) -> tuple[int, int]:
    """``usb`` -> (:data:`~hw.link.protocol.USB_VID`, :data:`~hw.link.protocol.USB_PID`); ``usb:VVVV:PPPP``
    (hexadecimal) -> that pair.

    Raises
    ------
    ValueError
        If ``name`` is neither.
    """
    if name == "usb":
        return P.USB_VID, P.USB_PID
    parts = name.split(":")
    try:
        if len(parts) == 3 and parts[0] == "usb" and all(len(p) == 4 for p in parts[1:]):
            return int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        pass
    raise ValueError("a USB port is 'usb' or 'usb:VVVV:PPPP' (hexadecimal vendor and product ids)")


class UsbPipe:
    """A pyserial-like port over a PyUSB device of the USB link (bulk OUT/IN :data:`~hw.link.protocol.USB_ENDPOINT`).

    Parameters
    ----------
    device : usb.core.Device
        The configured device, its interface 0 claimed (:func:`open_usb_port` does both).
    name : str
        How messages name the port (``usb:1209:0001``).
    write_timeout : float
        Seconds a bulk write may take before :class:`SerialTimeoutException`.
    """

    def __init__(self, device, *, name: str = "usb", write_timeout: float = 5.0):
        self._dev = device
        self.port = name
        self.timeout = 0.05
        self.write_timeout = write_timeout
        self._buf = bytearray()
        self._break = False

    @staticmethod
    def _ms(seconds) -> int:
        """libusb's timeout in milliseconds: at least 1 (0 would wait for ever)."""
        return max(1, math.ceil(1000 * seconds)) if seconds is not None else 1000

    def _fill(self, seconds) -> None:
        """One bulk IN read (an answer, or part of one) into the buffer; nothing if none comes in ``seconds``."""
        import usb.core

        with contextlib.suppress(usb.core.USBTimeoutError):
            self._buf += bytes(self._dev.read(0x80 | P.USB_ENDPOINT, READ_CHUNK, timeout=self._ms(seconds)))

    @property
    def in_waiting(self) -> int:
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: those buffered, else what one IN read brings within ``timeout``."""
        if not self._buf:
            self._fill(self.timeout)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def write(self, data: bytes) -> int:
        """Send ``data`` on bulk OUT. Raises :class:`SerialTimeoutException` if it is not taken in time."""
        import usb.core

        try:
            return self._dev.write(P.USB_ENDPOINT, bytes(data), timeout=self._ms(self.write_timeout))
        except usb.core.USBTimeoutError:
            raise SerialTimeoutException(f"{self.port}: bulk OUT not taken within {self.write_timeout} s") from None

    def reset_input_buffer(self) -> None:
        """Forget what came in: the buffer, and the answers the device holds (read for at most 0.1 s)."""
        self._buf.clear()
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            self._fill(0.001)
            if not self._buf:
                return
            self._buf.clear()

    @property
    def break_condition(self) -> bool:
        return self._break

    @break_condition.setter
    def break_condition(self, value: bool) -> None:
        """Raising it sends the resync request (the board drops the frame in progress); lowering it does nothing."""
        if value and not self._break:
            self._dev.ctrl_transfer(0x40, P.USB_REQUEST_RESYNC, 0, 0, None, timeout=self._ms(self.write_timeout))
        self._break = bool(value)

    def close(self) -> None:
        """Release the device. Idempotent."""
        if self._dev is not None:
            import usb.util

            usb.util.dispose_resources(self._dev)
            self._dev = None


def _find(name: str, vid: int, pid: int):
    """The first device VID:PID, configured and its interface claimed."""
    try:
        import usb.core
        import usb.util
    except ImportError:
        raise LinkError(f"{name}: the USB link needs PyUSB (pip install pyusb, or the project's usb extra)") from None
    try:
        dev = usb.core.find(idVendor=vid, idProduct=pid)
    except usb.core.NoBackendError:
        raise LinkError(f"{name}: PyUSB finds no libusb (install libusb-1.0)") from None
    if dev is None:
        raise LinkError(f"{name}: no USB device {vid:04x}:{pid:04x} (is the board on, with a LINK=usb bitstream, "
                        f"on a high-speed port?)")
    try:
        dev.set_configuration()
        usb.util.claim_interface(dev, 0)
    except usb.core.USBError as e:
        raise LinkError(_usb_reason(name, vid, pid, e)) from None
    return dev


def _usb_reason(name, vid, pid, e) -> str:
    if getattr(e, "errno", None) == 13:
        return f"{name}: permission denied on {vid:04x}:{pid:04x} (a udev rule giving your user the device?)"
    return f"{name}: cannot open {vid:04x}:{pid:04x}: {e}"


def open_usb_port(name: str) -> UsbPipe:
    """The board's USB link as a pyserial-like port, from ``usb`` or ``usb:VVVV:PPPP``.

    Raises
    ------
    LinkError
        If the name is malformed, PyUSB or libusb is missing, no such device is attached, or it cannot
        be opened (the message says which, on one line).
    """
    try:
        vid, pid = parse_usb_port(name)
    except ValueError as e:
        raise LinkError(f"{name}: {e}") from None
    return UsbPipe(_find(name, vid, pid), name=name)
