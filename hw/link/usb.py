"""The host link over high-speed USB (issue 11): the UART link's frames through a LUNA device.

::

    ULPI PHY ── USBDevice ── bulk OUT 0x01 ──► AsyncFIFO ──► LinkBridge ──► AnswerFramer ──► AsyncFIFO ──► bulk IN 0x81
                  (usb, 60 MHz from the PHY)      usb -> sync     (sync)         (sync)        sync -> usb

The byte stream on the two bulk endpoints is exactly the UART's (:mod:`hw.link.protocol`):
:class:`UsbLink` has :class:`~hw.link.link.UARTLink`'s members toward the board (``csr``,
``mem``, ``active``, ``errors``, ``rx_byte``) and no pins of its own, so a board core takes
either. What USB adds:

* **Answer boundaries.** A bulk IN transfer ends with a short packet. :class:`AnswerFramer`
  follows the answers' own framing and marks each answer's last byte (``last``); LUNA's IN
  endpoint then sends what it holds at once, and follows a transfer that ended on a whole
  512-byte packet with a zero-length packet. With 4-byte words that never happens: every
  answer is 12 bytes, or 14 + a payload of whole words (2 mod 4); with 2-byte words a
  ``READ_MEM`` of 498 bytes is exactly 512.
* **Resync.** The UART's line break is the vendor request
  :data:`~hw.link.protocol.USB_REQUEST_RESYNC` (host to device, no data stage) on the
  control endpoint: it reaches the bridge's ``abort`` (the frame in progress is dropped and
  answered ``TRUNCATED``), and is counted on ``errors``. The frame timeout stays as on the UART.
* **No loss.** The OUT endpoint NAKs when its buffer is full: a request byte is never dropped,
  so ``errors`` only counts resyncs.
"""

import types

from amaranth.hdl import ClockDomain, Module, ResetSignal, Signal
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.cdc import PulseSynchronizer, ResetSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from hw.bus import CsrSignature

from . import protocol as P
from .bridge import LinkBridge

__all__ = ["AnswerFramer", "UsbStreamLink", "UsbLink", "usb_byte_layout", "usb_descriptors", "usb_rates",
           "REQUEST_BYTES_PER_CYCLE", "ANSWER_BYTES_PER_CYCLE", "USB_HS_BULK_BYTES_PER_S"]

#: The link's rates in ``sync`` cycles, the bridge's (``tests/test_usb_link.py`` measures both): a request
#: byte every other cycle; a ``READ_MEM`` answer 4 bytes every 14 cycles (a memory read, then the bytes one
#: every other cycle through the answer register).
REQUEST_BYTES_PER_CYCLE = 1 / 2
ANSWER_BYTES_PER_CYCLE = 4 / 14
#: High-speed bulk's ceiling: 13 packets of 512 bytes per 125 us microframe (USB 2.0, table 5-10).
USB_HS_BULK_BYTES_PER_S = 13 * 512 * 8000


def usb_rates(clk_hz: float) -> tuple[float, float]:
    """Bytes per second of the USB link at a ``sync`` clock of ``clk_hz``: (requests, answers), the bridge's
    rate or high-speed bulk's ceiling, whichever is lower (host turnaround not counted)."""
    return (min(clk_hz * REQUEST_BYTES_PER_CYCLE, USB_HS_BULK_BYTES_PER_S),
            min(clk_hz * ANSWER_BYTES_PER_CYCLE, USB_HS_BULK_BYTES_PER_S))


def usb_byte_layout() -> data.StructLayout:
    """A byte toward the IN endpoint, and whether it ends an answer."""
    return data.StructLayout({"data": 8, "last": 1})


class AnswerFramer(wiring.Component):
    """Pass answer bytes through, marking the last byte of each answer frame (``o.payload.last``).

    It counts the bytes of the frame from its ``SYNC``: the header's ``length`` (bytes 8 and 9) says
    where it ends: at byte 11 (``length`` 0: ``SYNC``, header, header CRC) or at byte 13 + ``length``
    (payload and its CRC). The bridge only sends whole, well-formed answers, each from its ``SYNC``,
    so the count needs no hunt. Combinational: no latency, ``i.ready`` is ``o.ready``.
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(usb_byte_layout()))

    def elaborate(self, platform):
        m = Module()
        pos = Signal(range(P.FRAME_OVERHEAD + P.MAX_PAYLOAD + P.CRC_BYTES))
        end = Signal.like(pos, init=P.FRAME_OVERHEAD - 1)   # >= 11: never matches a header position
        len_lo = Signal(8)
        last = pos == end
        m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                     self.o.payload.data.eq(self.i.payload), self.o.payload.last.eq(last)]
        with m.If(self.i.valid & self.o.ready):
            m.d.sync += pos.eq(pos + 1)
            with m.If(pos == 1 + P.HEADER_BYTES - 2):           # length, low byte
                m.d.sync += len_lo.eq(self.i.payload)
            with m.If(pos == 1 + P.HEADER_BYTES - 1):           # length, high byte: where the frame ends
                length = self.i.payload.as_unsigned() << 8 | len_lo
                with m.If(length == 0):
                    m.d.sync += end.eq(P.FRAME_OVERHEAD - 1)
                with m.Else():
                    m.d.sync += end.eq(length + P.FRAME_OVERHEAD + P.CRC_BYTES - 1)
            with m.If(last):
                m.d.sync += pos.eq(0)
        return m


class UsbStreamLink(wiring.Component):
    """The USB link's ``sync`` part: request bytes into a :class:`LinkBridge`, answer bytes out with
    each answer's last byte marked (:class:`AnswerFramer`).

    Parameters
    ----------
    **bridge
        The :class:`~hw.link.bridge.LinkBridge` parameters.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Request bytes (from the bulk OUT endpoint).
    o : ``Out(stream.Signature(usb_byte_layout()))``
        Answer bytes, ``last`` on the final byte of each answer (to the bulk IN endpoint).
    abort : ``In(1)``
        Drop the frame in progress (the host's resync request).
    csr, mem, active
        The bridge's.

    Timing: the bridge's (at most one byte every other cycle each way).
    """

    def __init__(self, **bridge):
        self._bridge = LinkBridge(**bridge)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(usb_byte_layout())),
            "abort": In(1),
            "csr": Out(CsrSignature),
            "mem": Out(self._bridge.mem.signature),
            "active": Out(1),
        })

    @property
    def bridge(self) -> LinkBridge:
        return self._bridge

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = self._bridge
        m.submodules.framer = framer = AnswerFramer()
        wiring.connect(m, wiring.flipped(self.i), br.i)
        wiring.connect(m, br.o, framer.i)
        wiring.connect(m, framer.o, wiring.flipped(self.o))
        wiring.connect(m, br.csr, wiring.flipped(self.csr))
        wiring.connect(m, br.mem, wiring.flipped(self.mem))
        m.d.comb += [br.abort.eq(self.abort), self.active.eq(br.active)]
        return m


def usb_descriptors(*, vid: int = P.USB_VID, pid: int = P.USB_PID, max_packet: int = P.USB_MAX_PACKET):
    """The device's descriptors: one vendor-class interface with the bulk OUT and IN endpoints."""
    from usb_protocol.emitters import DeviceDescriptorCollection

    descriptors = DeviceDescriptorCollection()
    with descriptors.DeviceDescriptor() as d:
        d.idVendor, d.idProduct = vid, pid
        d.iManufacturer, d.iProduct, d.iSerialNumber = "kindling", "kindling CNN engine link", "0"
        d.bNumConfigurations = 1
    with descriptors.ConfigurationDescriptor() as c, c.InterfaceDescriptor() as i:
        i.bInterfaceNumber = 0
        i.bInterfaceClass = 0xFF        # vendor specific: libusb, no kernel driver
        for address in (P.USB_ENDPOINT, 0x80 | P.USB_ENDPOINT):
            with i.EndpointDescriptor() as e:
                e.bEndpointAddress, e.wMaxPacketSize = address, max_packet
    return descriptors


def _resync_handler():
    """A LUNA request handler: the vendor request ``USB_REQUEST_RESYNC`` acknowledged, with a ``resync``
    strobe (``usb`` domain) when its SETUP arrives."""
    from luna.gateware.usb.usb2.request import USBRequestHandler
    from usb_protocol.types import USBRequestType

    class ResyncHandler(USBRequestHandler):
        def __init__(self):
            super().__init__()
            self.resync = Signal()

        def elaborate(self, platform):
            m = Module()
            iface, setup = self.interface, self.interface.setup
            ours = (setup.type == USBRequestType.VENDOR) & (setup.request == P.USB_REQUEST_RESYNC)
            m.d.comb += self.resync.eq(setup.received & ours)
            with m.If(ours):
                m.d.comb += iface.claim.eq(1)
                with m.If(iface.status_requested):
                    m.d.comb += self.send_zlp()
            return m

    return ResyncHandler()


def _stall_other_requests():
    """Class, reserved and the other vendor requests: STALL."""
    from luna.gateware.usb.usb2.request import StallOnlyRequestHandler
    from usb_protocol.types import USBRequestType

    def condition(setup):
        vendor_other = (setup.type == USBRequestType.VENDOR) & (setup.request != P.USB_REQUEST_RESYNC)
        return (setup.type == USBRequestType.CLASS) | (setup.type == USBRequestType.RESERVED) | vendor_other

    return StallOnlyRequestHandler(condition)


class UsbLink(wiring.Component):
    """The USB link: a LUNA device on the board's ULPI PHY, carrying the frames of :mod:`hw.link.protocol`.

    The device runs in the ``usb`` domain this component creates (60 MHz, the PHY's clock through
    LUNA's ULPI translator; a simulation drives it); the bridge in ``sync``. Two asynchronous FIFOs
    cross between them, and a pulse synchronizer carries the resync request. The PHY's reset pin
    follows ``sync``'s reset.

    Parameters
    ----------
    bus : object or None
        The PHY: None requests the platform's ``ulpi`` resource at elaboration (a board); a LUNA
        ``UTMIInterface`` for a simulation (LUNA then runs at full speed, 12 Mbit/s of bits but the
        same packets and endpoints).
    fifo_depth : int
        Entries of each clock-crossing FIFO.
    **bridge
        The :class:`~hw.link.bridge.LinkBridge` parameters.

    Members
    -------
    csr : ``Out(CsrSignature)``, mem : ``Out(MemPortSignature)``
        The bridge's initiators.
    active : ``Out(1)``
        A frame is being received or answered.
    errors : ``Out(1)``
        Strobe: the host asked for a resync (USB flow control loses no byte).
    rx_byte : ``Out(1)``
        Strobe: a request byte entered the bridge.
    """

    def __init__(self, *, bus=None, fifo_depth: int = 16, **bridge):
        if not (isinstance(fifo_depth, int) and fifo_depth >= 4 and fifo_depth & (fifo_depth - 1) == 0):
            raise ValueError(f"fifo_depth must be a power of two >= 4, got {fifo_depth!r}")
        self._bus = bus
        self._fifo_depth = fifo_depth
        self.stream_link = UsbStreamLink(**bridge)
        super().__init__({
            "csr": Out(CsrSignature),
            "mem": Out(self.stream_link.mem.signature),
            "active": Out(1),
            "errors": Out(1),
            "rx_byte": Out(1),
        })

    @property
    def bridge(self) -> LinkBridge:
        return self.stream_link.bridge

    @staticmethod
    def _ulpi(m, platform):
        """The board's ULPI PHY for LUNA: its pins through I/O buffers, the reset pin left out. LUNA would
        drive that pin from the ``usb`` domain's reset, whose release needs the PHY's own clock; it follows
        ``sync``'s reset instead (held until the PLL locks), and the ``usb`` reset is released, synchronised,
        once the PHY's clock runs."""
        dirs = {"data": "io", "clk": "i", "dir": "i", "nxt": "i", "stp": "o", "rst": "o"}
        pins = platform.request("ulpi", 0, dir={name: "-" for name in dirs})
        bufs = {}
        for name, d in dirs.items():
            m.submodules[f"ulpi_{name}"] = bufs[name] = io.Buffer(d, getattr(pins, name))
        platform.add_clock_constraint(pins.clk.io, 60e6)   # the port, as the board's own 100 MHz input
        m.d.comb += bufs.pop("rst").o.eq(ResetSignal("sync"))
        return types.SimpleNamespace(**bufs)

    def _device(self, m, platform):
        """The LUNA device and its endpoints, in ``usb``."""
        from luna.usb2 import USBDevice, USBStreamInEndpoint, USBStreamOutEndpoint

        bus = self._bus if self._bus is not None else self._ulpi(m, platform)
        m.submodules.usb = usb = USBDevice(bus=bus)
        control = usb.add_standard_control_endpoint(usb_descriptors())
        resync = _resync_handler()
        control.add_request_handler(resync)
        control.add_request_handler(_stall_other_requests())
        out_ep = USBStreamOutEndpoint(endpoint_number=P.USB_ENDPOINT, max_packet_size=P.USB_MAX_PACKET)
        in_ep = USBStreamInEndpoint(endpoint_number=P.USB_ENDPOINT, max_packet_size=P.USB_MAX_PACKET)
        usb.add_endpoint(out_ep)
        usb.add_endpoint(in_ep)
        m.d.comb += [usb.connect.eq(1), usb.full_speed_only.eq(0)]
        return resync, out_ep, in_ep

    def elaborate(self, platform):
        m = Module()
        m.domains.usb = ClockDomain("usb")
        m.submodules.usb_reset = ResetSynchronizer(ResetSignal("sync"), domain="usb")
        resync, out_ep, in_ep = self._device(m, platform)
        m.submodules.link = link = self.stream_link
        depth = self._fifo_depth
        m.submodules.rx_fifo = rx = AsyncFIFO(width=8, depth=depth, w_domain="usb", r_domain="sync")
        m.submodules.tx_fifo = tx = AsyncFIFO(width=9, depth=depth, w_domain="sync", r_domain="usb")
        m.submodules.resync = sync_pulse = PulseSynchronizer(i_domain="usb", o_domain="sync")
        m.d.comb += [
            rx.w_data.eq(out_ep.stream.payload), rx.w_en.eq(out_ep.stream.valid), out_ep.stream.ready.eq(rx.w_rdy),
            link.i.payload.eq(rx.r_data), link.i.valid.eq(rx.r_rdy), rx.r_en.eq(link.i.ready),
            tx.w_data.eq(link.o.payload.as_value()), tx.w_en.eq(link.o.valid), link.o.ready.eq(tx.w_rdy),
            in_ep.stream.payload.eq(tx.r_data[:8]), in_ep.stream.last.eq(tx.r_data[8]),
            in_ep.stream.valid.eq(tx.r_rdy), tx.r_en.eq(in_ep.stream.ready),
            sync_pulse.i.eq(resync.resync), link.abort.eq(sync_pulse.o),
            self.active.eq(link.active), self.errors.eq(sync_pulse.o),
            self.rx_byte.eq(link.i.valid & link.i.ready),
        ]
        wiring.connect(m, link.csr, wiring.flipped(self.csr))
        wiring.connect(m, link.mem, wiring.flipped(self.mem))
        return m
