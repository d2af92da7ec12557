"""16550A UART, as probed and driven by Linux's 8250 driver and by our tiny kernels.

Transmission is instantaneous: a byte written to THR goes straight to `output`, so THR and
the transmitter are always empty (LSR.THRE|TEMT) and the THRE interrupt fires again right
after every write. Received bytes come from the I/O thread through `receive()`; they
queue behind the 16-byte FIFO in a backlog (up to RX_BACKLOG_LIMIT bytes) because the
console has no flow control, so the guest sees DR, and the RX interrupt, until it has read
every byte. The guest cannot count FIFO entries; the FIFO shows only through the RX trigger
level, so the queue is one deque and its head is what the FIFO presents.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..changes import CountingLock
from ..state import DeviceStateError, capture, restore_fields

COM1_BASE = 0x3F8
COM1_IRQ = 4
PORT_COUNT = 8

RX_BACKLOG_LIMIT = 1 << 20

# Register offsets (DLAB = 0 names; with LCR.DLAB set, 0 and 1 are DLL and DLM).
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_ERBFI = 0x01   # received data available
IER_ETBEI = 0x02   # transmitter holding register empty
IER_ELSI = 0x04    # receiver line status
IER_EDSSI = 0x08   # modem status

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_RX_TIMEOUT = 0x0C
IIR_FIFO_ENABLED = 0xC0

FCR_ENABLE = 0x01
FCR_TRIGGER_SHIFT = 6

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40

MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80

# Outside loopback the far end is always there: carrier, data set ready, clear to send
# (what QEMU reports), so a getty without CLOCAL or a driver using CRTSCTS does not hang.
_LINES_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS

_RX_TRIGGER = (1, 4, 8, 14)

# bytes objects for every value, so transmitting a byte allocates nothing.
_BYTE = tuple(bytes((i,)) for i in range(256))


class Uart16550:
    """COM-port UART: register it on the PioBus at COM1_BASE for PORT_COUNT ports.

    `irq(level)` models the INTR pin: it is called, with the UART's lock held, only when
    the level changes, so it must not call back into the UART. Like QEMU, MCR.OUT2 does not
    gate the pin, so guests that never set OUT2 still get interrupts. `output(data)` gets
    each transmitted byte, from the vCPU thread that wrote THR. Registers are 8 bits; a
    wider access reaches only the addressed register, with the low byte.

    `fast_path(thr, lsr)`, if given, is told (lock held, on changes only) when a THR write
    would do nothing but transmit, and when an LSR read would have no side effect and read
    THRE|TEMT: the vCPU loop may then serve those two registers without calling the UART
    (the native shim does, see struct pv_uart), which is what keeps a verbose boot's console
    off the Python path.

    A FIFO reset (FCR bit 1) does not drop queued input: the queue is the host side of the
    line, and dropping it would lose typed-ahead or piped input depending on when it arrived
    relative to the guest's driver setup.
    """

    def __init__(self, irq: Callable[[bool], None], output: Callable[[bytes], None],
                 *, rx_limit: int = RX_BACKLOG_LIMIT,
                 fast_path: Callable[[bool, bool], None] | None = None) -> None:
        self._irq = irq
        self._output = output
        self._rx_limit = rx_limit
        self._fast_path = fast_path
        self._fast = (False, False)
        # Counted (a restore leaves an untouched UART alone): the shim's THR and LSR
        # shortcuts change nothing here, being taken only while exact.
        self._lock = self.state_changes = CountingLock()
        self._rx: deque[int] = deque()
        self._level = False
        self._power_on()
        with self._lock:
            self._update_irq()

    def _power_on(self) -> None:
        self._rx.clear()
        self._rbr = 0
        self._ier = 0
        self._fcr = 0
        self._rx_trigger = 1
        self._lcr = 0
        self._mcr = 0
        self._scr = 0
        self._dll = 0x0C   # 9600 baud, as QEMU
        self._dlm = 0
        self._overrun = False
        self._thr_pending = False
        self._msr_delta = 0

    def reset(self) -> None:
        """Back to the power-on register state, dropping queued input and the INTR line."""
        with self._lock:
            self._power_on()
            self._update_irq()

    # --- snapshots ------------------------------------------------------------------------
    _STATE = ("_rbr", "_ier", "_fcr", "_rx_trigger", "_lcr", "_mcr", "_scr", "_dll", "_dlm",
              "_overrun", "_thr_pending", "_msr_delta")

    def snapshot_state(self) -> dict:
        """The registers, the receive FIFO and the INTR line."""
        with self._lock.held():
            state = capture(self, self._STATE)
            state["rx"] = bytes(self._rx)
            return state

    def restore_state(self, state: dict) -> None:
        with self._lock.held():
            restore_fields(self, state, self._STATE, "serial")
            if not isinstance(state.get("rx"), bytes):
                raise DeviceStateError("serial: the saved state has no receive FIFO")
            self._rx = deque(state["rx"][-self._rx_limit:])
            # The shortcuts and the line as published stay what KVM and the shim have
            # now: only a difference goes out.
            self._update_irq()

    def receive(self, data: bytes) -> None:
        """Queue input from the host (the I/O thread). Beyond the backlog limit bytes are
        dropped and LSR.OE reports the overrun."""
        with self._lock:
            self._enqueue(data)
            self._update_irq()

    # --- guest side -----------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == LSR:
                lsr = LSR_THRE | LSR_TEMT
                if self._rx:
                    lsr |= LSR_DR
                if self._overrun:
                    lsr |= LSR_OE
                    self._overrun = False
                    self._update_irq()
                return lsr
            if offset == RBR:
                if self._lcr & LCR_DLAB:
                    return self._dll
                if self._rx:
                    self._rbr = self._rx.popleft()
                    self._update_irq()
                return self._rbr
            if offset == IIR:
                iid = self._interrupt_id()
                if iid == IIR_THRI:
                    self._thr_pending = False
                    self._update_irq()
                return (iid | IIR_FIFO_ENABLED) if self._fcr & FCR_ENABLE else iid
            if offset == IER:
                return self._dlm if self._lcr & LCR_DLAB else self._ier
            if offset == LCR:
                return self._lcr
            if offset == MCR:
                return self._mcr
            if offset == MSR:
                msr = self._modem_lines() | self._msr_delta
                if self._msr_delta:
                    self._msr_delta = 0
                    self._update_irq()
                return msr
            return self._scr   # SCR, the last of the eight

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        # Plain transmit, the hot path: output outside the lock so a slow terminal never
        # holds up the I/O thread. LCR/MCR are read unlocked; only a racing guest
        # write to them on another vCPU could change the outcome, as on hardware.
        if offset == THR and not (self._lcr & LCR_DLAB or self._mcr & MCR_LOOP):
            self._output(_BYTE[value])
            with self._lock:
                self._thr_pending = True
                self._update_irq()
            return
        with self._lock:
            if offset == THR:
                if self._lcr & LCR_DLAB:
                    self._dll = value
                    return
                self._enqueue(_BYTE[value])   # loopback: the byte comes straight back
                self._thr_pending = True
                self._update_irq()
            elif offset == IER:
                if self._lcr & LCR_DLAB:
                    self._dlm = value
                    return
                value &= 0x0F
                if (self._ier ^ value) & IER_ETBEI:
                    # THR is always empty, so enabling ETBEI raises THRE at once
                    # (Linux's startup test checks that it re-asserts after IER 0 -> 2).
                    self._thr_pending = bool(value & IER_ETBEI)
                self._ier = value
                self._update_irq()
            elif offset == FCR:
                # FIFO-enable clear programs nothing else (16550A datasheet).
                self._fcr = value & 0xC9 if value & FCR_ENABLE else 0
                self._rx_trigger = (_RX_TRIGGER[value >> FCR_TRIGGER_SHIFT]
                                    if value & FCR_ENABLE else 1)
                self._update_irq()
            elif offset == LCR:
                self._lcr = value
                self._update_irq()
            elif offset == MCR:
                before = self._modem_lines()
                self._mcr = value & 0x1F
                after = self._modem_lines()
                # Delta bits for CTS/DSR/DCD on any change, TERI on RI's trailing edge.
                self._msr_delta |= ((((before ^ after) >> 4) & (MSR_DCTS | MSR_DDSR | MSR_DDCD))
                                    | (((before & ~after) >> 4) & MSR_TERI))
                self._update_irq()
            elif offset == SCR:
                self._scr = value
            # LSR and MSR writes (factory test registers) are ignored, as in QEMU.

    # --- internals (lock held) ------------------------------------------------------------

    def _enqueue(self, data: bytes) -> None:
        room = self._rx_limit - len(self._rx)
        if len(data) > room:
            data = data[:max(room, 0)]
            self._overrun = True
        self._rx.extend(data)

    def _modem_lines(self) -> int:
        """MSR bits 7:4: in loopback, the MCR outputs wired back (DCD=OUT2, RI=OUT1,
        DSR=DTR, CTS=RTS), which is what Linux's autoconfig loopback test reads."""
        mcr = self._mcr
        if mcr & MCR_LOOP:
            return ((mcr & (MCR_OUT1 | MCR_OUT2)) << 4 | (mcr & MCR_RTS) << 3
                    | (mcr & MCR_DTR) << 5)
        return _LINES_CONNECTED

    def _interrupt_id(self) -> int:
        """Highest-priority pending source: line status > RX data > THRE > modem status.
        Below the FIFO trigger level RX data reports as a character timeout, which a real
        16550A raises a few character times later; reporting it at once keeps latency low."""
        ier = self._ier
        if ier & IER_ELSI and self._overrun:
            return IIR_RLSI
        if ier & IER_ERBFI and self._rx:
            return IIR_RX_TIMEOUT if len(self._rx) < self._rx_trigger else IIR_RDI
        if ier & IER_ETBEI and self._thr_pending:
            return IIR_THRI
        if ier & IER_EDSSI and self._msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        """After every state change: which shortcuts are exact, then the INTR pin.

        In that order: input from the I/O thread raises the pin, and a vCPU already
        in its interrupt handler must find the LSR shortcut off, or it would read "no
        data", return, and never see another edge for the bytes waiting in the queue."""
        if self._fast_path is not None:
            fast = (not (self._lcr & LCR_DLAB or self._mcr & MCR_LOOP or self._ier & IER_ETBEI),
                    not (self._rx or self._overrun))
            if fast != self._fast:
                self._fast = fast
                self._fast_path(*fast)
        level = self._interrupt_id() != IIR_NO_INT
        if level != self._level:
            self._level = level
            self._irq(level)
