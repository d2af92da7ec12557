import threading

import pytest

from pyvisor.devices.legacy.serial import (
    DLL, DLM, FCR, IER, IIR, LCR, LSR, MCR, MSR, RBR, SCR, THR, Uart16550)


class Uart:
    """A UART with its INTR pin and output recorded, plus byte-wide register helpers."""

    def __init__(self, **kw):
        self.irqs: list[bool] = []
        self.out = bytearray()
        self.dev = Uart16550(self.irqs.append, self.out.extend, **kw)

    def r(self, off):
        return self.dev.pio_read(off, 1)

    def w(self, off, value):
        self.dev.pio_write(off, 1, value)


@pytest.fixture
def u():
    return Uart()


def test_power_on_state(u):
    assert u.r(IER) == 0
    assert u.r(IIR) == 0x01
    assert u.r(LCR) == 0
    assert u.r(MCR) == 0
    assert u.r(LSR) == 0x60
    assert u.r(MSR) == 0xB0
    assert u.irqs == []


def test_transmit_goes_straight_to_output(u):
    for b in b"hi\n\x00\xff":
        u.w(THR, b)
    assert bytes(u.out) == b"hi\n\x00\xff"
    assert u.r(LSR) == 0x60


def test_transmit_masks_to_a_byte(u):
    u.dev.pio_write(THR, 2, 0x1241)
    assert bytes(u.out) == b"A"


def test_dlab_switches_offsets_0_and_1(u):
    u.w(LCR, 0x83)
    u.w(DLL, 0x01)
    u.w(DLM, 0x02)
    assert (u.r(DLL), u.r(DLM)) == (0x01, 0x02)
    assert u.out == b""              # the DLL write did not transmit
    u.w(LCR, 0x03)
    assert u.r(LCR) == 0x03
    assert u.r(IER) == 0              # IER untouched by the DLM write
    u.w(THR, 0x41)
    assert u.out == b"A"
    u.w(LCR, 0x80)
    assert (u.r(DLL), u.r(DLM)) == (0x01, 0x02)


def test_scratch_register(u):
    for v in (0x00, 0x55, 0xAA, 0xFF):
        u.w(SCR, v)
        assert u.r(SCR) == v


def test_linux_ier_probe(u):
    """serial8250 autoconfig: IER 0 reads back 0, IER 0x0F reads back 0x0F."""
    u.w(IER, 0)
    assert u.r(IER) & 0x0F == 0
    u.w(IER, 0x0F)
    assert u.r(IER) & 0x0F == 0x0F
    u.w(IER, 0xFF)
    assert u.r(IER) == 0x0F   # the upper bits do not exist on a 16550A


def test_linux_loopback_probe(u):
    u.w(MCR, 0x1A)                    # LOOP | OUT2 | RTS
    assert u.r(MSR) & 0xF0 == 0x90    # DCD (from OUT2) | CTS (from RTS)
    u.w(MCR, 0x00)
    assert u.r(MSR) & 0xF0 == 0xB0


@pytest.mark.parametrize("mcr,lines", [
    (0x10, 0x00), (0x11, 0x20), (0x12, 0x10), (0x14, 0x40), (0x18, 0x80), (0x1F, 0xF0)])
def test_loopback_wiring(u, mcr, lines):
    u.w(MCR, mcr)
    assert u.r(MSR) & 0xF0 == lines
    assert u.r(MCR) == mcr


def test_msr_delta_bits_and_trailing_edge_ri(u):
    u.w(MCR, 0x1F)                    # all lines up in loopback: from 0xB0 only RI rises,
    assert u.r(MSR) == 0xF0           # and a rising RI sets no delta
    u.w(MCR, 0x10)                    # all down
    # CTS, DSR, DCD changed; RI fell (trailing edge) -> TERI.
    assert u.r(MSR) == 0x0F
    assert u.r(MSR) == 0x00           # deltas clear on read
    u.w(MCR, 0x14)                    # RI rises: no TERI
    assert u.r(MSR) == 0x40


def test_fifo_identification(u):
    u.w(FCR, 0x01)
    assert u.r(IIR) == 0xC1
    u.w(FCR, 0x21)                    # 64-byte bit: a 16550A has no such thing
    assert u.r(IIR) & 0xE0 == 0xC0
    u.w(LCR, 0x80)                    # IIR is still at offset 2 with DLAB set
    assert u.r(IIR) == 0xC1
    u.w(LCR, 0x00)
    u.w(FCR, 0x00)
    assert u.r(IIR) == 0x01


def test_linux_autoconfig_sequence_identifies_16550a(u):
    """The register dance of serial8250 autoconfig() + autoconfig_16550a(), checked the way
    the driver checks it."""
    # IER test
    save = u.r(IER)
    u.w(IER, 0)
    s2 = u.r(IER) & 0x0F
    u.w(IER, 0x0F)
    s3 = u.r(IER) & 0x0F
    u.w(IER, save)
    assert (s2, s3) == (0, 0x0F)
    # loopback test
    save_mcr = u.r(MCR)
    u.w(MCR, 0x1A)
    assert u.r(MSR) & 0xF0 == 0x90
    u.w(MCR, save_mcr)
    # FIFO type
    u.w(LCR, 0xBF)
    u.w(2, 0)                         # EFR on a 16650: FCR here
    u.w(LCR, 0)
    u.w(FCR, 0x01)
    assert u.r(IIR) >> 6 == 3
    # 16550A variants: EFR probes read IIR at offset 2, which must be non-zero.
    u.w(LCR, 0x80)
    assert u.r(2) != 0
    u.w(LCR, 0xBF)
    assert u.r(2) != 0
    # NS16550 (EXCR1) check: the LOOP bit must not appear to toggle at offset 2.
    u.w(LCR, 0)
    st1 = u.r(MCR)
    u.w(LCR, 0xE0)
    st2 = u.r(2)
    assert not (st1 ^ st2) & 0x10
    u.w(LCR, 0)
    u.w(MCR, st1 ^ 0x10)
    u.w(LCR, 0xE0)
    st2 = u.r(2)
    u.w(LCR, 0)
    u.w(MCR, st1)
    assert not (st1 ^ st2) & 0x10
    # TI16750 check: bit 5 never set.
    u.w(FCR, 0x21)
    assert u.r(IIR) & 0xE0 == 0xC0
    u.w(FCR, 0x01)
    # XScale UUE check: IER bit 6 does not stick.
    u.w(IER, 0x40)
    assert not u.r(IER) & 0x40


def test_thre_interrupt_on_enable_cleared_by_iir_read(u):
    u.w(IER, 0x02)
    assert u.irqs == [True]
    assert u.r(IIR) == 0x02
    assert u.irqs == [True, False]
    assert u.r(IIR) == 0x01           # reading IIR cleared it
    assert u.r(LSR) & 0x60 == 0x60


def test_thre_reasserts_on_ier_toggle(u):
    """Linux's startup test: IER=THRI, read IIR, IER=0, IER=THRI, read IIR again."""
    u.w(FCR, 0x01)
    u.w(IER, 0x02)
    assert u.r(IIR) == 0xC2
    u.w(IER, 0x00)
    u.w(IER, 0x02)
    assert u.r(IIR) == 0xC2
    u.w(IER, 0x00)
    assert u.irqs == [True, False, True, False]


def test_thre_after_each_transmit(u):
    u.w(IER, 0x02)
    u.r(IIR)                          # ack
    u.w(THR, 0x41)
    assert u.irqs == [True, False, True]
    assert u.r(IIR) == 0x02
    u.w(THR, 0x42)
    u.w(THR, 0x43)                    # still pending: no new edge, no extra call
    assert u.irqs == [True, False, True, False, True]
    assert u.out == b"ABC"


def test_thre_not_reported_while_etbei_clear(u):
    u.w(THR, 0x41)
    assert u.r(IIR) == 0x01
    assert u.irqs == []


def test_rx_data_and_dr(u):
    u.dev.receive(b"ab")
    assert u.r(LSR) == 0x61
    assert u.irqs == []               # ERBFI off
    assert u.r(RBR) == ord("a")
    assert u.r(LSR) & 1
    assert u.r(RBR) == ord("b")
    assert u.r(LSR) == 0x60
    assert u.r(RBR) == ord("b")       # empty: the last byte again


def test_rx_interrupt_level(u):
    u.w(IER, 0x01)
    assert u.irqs == []
    u.dev.receive(b"x")
    assert u.irqs == [True]
    u.dev.receive(b"yz")              # already high: no call
    assert u.irqs == [True]
    assert u.r(IIR) == 0x04
    assert u.r(IIR) == 0x04           # reading IIR does not clear RX data
    assert u.r(RBR) == ord("x")
    assert u.r(RBR) == ord("y")
    assert u.irqs == [True]
    assert u.r(RBR) == ord("z")
    assert u.irqs == [True, False]
    assert u.r(IIR) == 0x01


def test_rx_interrupt_when_enabled_after_data(u):
    u.dev.receive(b"x")
    u.w(IER, 0x01)
    assert u.irqs == [True]
    u.w(IER, 0x00)
    assert u.irqs == [True, False]


def test_rx_trigger_level_and_timeout_id(u):
    u.w(FCR, 0x81)                    # FIFO on, trigger at 8
    u.w(IER, 0x01)
    u.dev.receive(b"1234567")
    assert u.r(IIR) == 0xCC           # below the trigger: character timeout
    u.dev.receive(b"8")
    assert u.r(IIR) == 0xC4
    u.w(FCR, 0x00)
    assert u.r(IIR) == 0x04


def test_backlog_behind_fifo_keeps_all_input(u):
    data = bytes(range(256)) * 4      # far more than the 16-byte FIFO
    u.dev.receive(data)
    got = bytearray()
    while u.r(LSR) & 1:
        got.append(u.r(RBR))
    assert bytes(got) == data


def test_fifo_reset_keeps_host_input(u):
    u.dev.receive(b"abc")
    u.w(FCR, 0x07)
    u.w(FCR, 0x00)
    assert u.r(RBR) == ord("a")


def test_backlog_overflow_sets_oe_and_line_status_interrupt():
    u = Uart(rx_limit=4)
    u.w(IER, 0x05)                    # ERBFI | ELSI
    u.dev.receive(b"abcdef")
    assert u.irqs == [True]
    assert u.r(IIR) == 0x06           # line status outranks RX data
    assert u.r(LSR) == 0x63           # DR | OE
    assert u.r(LSR) == 0x61           # OE clears on read
    assert u.r(IIR) == 0x04
    assert bytes(u.r(RBR) for _ in range(4)) == b"abcd"
    assert u.r(LSR) == 0x60
    assert u.irqs == [True, False]


def test_interrupt_priorities(u):
    u.w(MCR, 0x10)                    # loopback: changes MSR lines -> deltas
    u.w(MCR, 0x00)
    u.dev.receive(b"x")
    u.w(IER, 0x0F)
    assert u.irqs == [True]
    assert u.r(IIR) == 0x04           # RX data > THRE > modem status
    u.r(RBR)
    assert u.r(IIR) == 0x02           # then THRE, cleared by this read
    assert u.r(IIR) == 0x00           # then modem status
    assert u.r(MSR) & 0x0F            # reading MSR clears it
    assert u.r(IIR) == 0x01
    assert u.irqs == [True, False]


def test_modem_status_interrupt(u):
    u.w(IER, 0x08)
    u.w(MCR, 0x10)                    # lines drop in loopback
    assert u.irqs == [True]
    assert u.r(MSR) == 0x0B           # DCTS | DDSR | DDCD
    assert u.irqs == [True, False]


def test_loopback_returns_transmitted_bytes(u):
    u.w(MCR, 0x10)
    u.w(THR, 0x5A)
    u.w(THR, 0xA5)
    assert u.out == b""
    assert u.r(LSR) & 1
    assert (u.r(RBR), u.r(RBR)) == (0x5A, 0xA5)
    u.w(MCR, 0x00)
    u.w(THR, 0x41)
    assert u.out == b"A"


def test_out2_does_not_gate_the_interrupt(u):
    u.w(MCR, 0x00)
    u.w(IER, 0x02)
    assert u.irqs == [True]


def test_reset(u):
    u.w(LCR, 0x83)
    u.w(DLL, 1)
    u.w(LCR, 0x03)
    u.w(SCR, 0x77)
    u.w(MCR, 0x0B)
    u.w(FCR, 0xC7)
    u.w(IER, 0x03)
    u.dev.receive(b"abc")
    assert u.irqs == [True]
    u.dev.reset()
    assert u.irqs == [True, False]
    assert (u.r(IER), u.r(IIR), u.r(LCR), u.r(MCR), u.r(LSR), u.r(MSR), u.r(SCR)) == \
        (0, 0x01, 0, 0, 0x60, 0xB0, 0)
    u.w(LCR, 0x80)
    assert (u.r(DLL), u.r(DLM)) == (0x0C, 0)


def test_receive_from_another_thread(u):
    u.w(IER, 0x01)
    chunks = [bytes([i % 251]) * 7 for i in range(200)]
    expected = b"".join(chunks)

    def feed():
        for c in chunks:
            u.dev.receive(c)

    t = threading.Thread(target=feed)
    t.start()
    got = bytearray()
    while len(got) < len(expected):
        if u.r(LSR) & 1:
            got.append(u.r(RBR))
    t.join()
    assert bytes(got) == expected
    # Transitions alternate and the final level matches the empty queue.
    assert all(a != b for a, b in zip(u.irqs, u.irqs[1:]))
    assert u.irqs[-1] is False


class FastPathUart(Uart):
    """A Uart whose fast-path publications are recorded, and checked against the model:
    whenever a shortcut is published as exact, taking it must equal calling the UART."""

    def __init__(self):
        self.fast: list[tuple[bool, bool]] = []
        super().__init__(fast_path=lambda thr, lsr: self.fast.append((thr, lsr)))

    @property
    def now(self):
        return self.fast[-1] if self.fast else (False, False)


def test_fast_path_published_at_power_on():
    u = FastPathUart()
    assert u.fast == [(True, True)]      # DLAB, loopback and THRE interrupt off; no input
    assert u.r(LSR) == 0x60


@pytest.mark.parametrize("off, value", [(LCR, 0x80), (MCR, 0x10), (IER, 0x02)])
def test_transmit_shortcut_off_while_thr_does_more(off, value):
    u = FastPathUart()
    u.w(off, value)
    assert u.now == (False, True)
    u.w(off, 0)
    assert u.now == (True, True)


def test_transmit_shortcut_stays_with_rx_interrupts():
    u = FastPathUart()
    u.w(IER, 0x01 | 0x04 | 0x08)          # RX, line status, modem status: THR writes stay pure
    assert u.now == (True, True)


def test_lsr_shortcut_off_while_input_or_overrun_pending():
    u = FastPathUart()
    u.dev.receive(b"ab")
    assert u.now == (True, False)
    assert u.r(LSR) & 0x01
    u.r(RBR)
    assert u.now == (True, False)
    u.r(RBR)
    assert u.now == (True, True)
    small = FastPathUart.__new__(FastPathUart)
    small.fast = []
    Uart.__init__(small, fast_path=lambda t, l: small.fast.append((t, l)), rx_limit=1)
    small.dev.receive(b"xy")                 # overrun
    small.r(RBR)
    assert small.now == (True, False)        # OE still to be reported by an LSR read
    assert small.r(LSR) & 0x02
    assert small.now == (True, True)


def test_loopback_input_turns_lsr_shortcut_off():
    u = FastPathUart()
    u.w(MCR, 0x10)
    u.w(THR, 0x41)
    assert u.now == (False, False)
    assert u.r(RBR) == 0x41
    assert u.now == (False, True)


def test_lsr_shortcut_off_before_the_rx_interrupt_rises():
    """Input raises INTR from the I/O thread; a vCPU that takes the interrupt at once
    must not read LSR through a shortcut still saying "no data" (the edge would be lost)."""
    seen_at_irq = []
    u = FastPathUart()
    u.dev._irq = lambda level: seen_at_irq.append((level, u.now))
    u.w(IER, 0x01)
    u.dev.receive(b"x")
    assert seen_at_irq == [(True, (True, False))]
