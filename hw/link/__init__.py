"""The host link: a framed protocol over the board's UART (see :mod:`hw.link.protocol`).

:mod:`~hw.link.protocol`
    the frame format, op and status codes, CRC and limits: the one definition
    the gateware and the driver (:mod:`sw.backends.serial`) share;
:mod:`~hw.link.uart`
    :class:`UARTTx`, :class:`UARTRx`;
:mod:`~hw.link.bridge`
    :class:`LinkBridge`: frames to CSR and memory accesses, and the answers;
:mod:`~hw.link.link`
    :class:`UARTLink`: UART pins to the bridge's initiators;
:mod:`~hw.link.usb`
    ``UsbLink``: the same frames over high-speed USB (LUNA, the optional ``usb`` extra; imported
    on its own, not here).
"""

from .bridge import LinkBridge
from .link import UARTLink
from .uart import UARTRx, UARTTx

__all__ = ["LinkBridge", "UARTLink", "UARTRx", "UARTTx"]
