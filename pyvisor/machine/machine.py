"""Machine: builds a VM from a MachineConfig (memory, kernel, boot structures, devices,
vCPUs), runs one thread per vCPU and turns the way the guest stops into an Outcome."""
from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from typing import Callable

from .._native import ffi, lib
from ..console import Console
from ..devices.bus import MmioBus, PioBus
from ..devices.legacy.acpi_pm import PM_BASE, PM_LENGTH, SCI_IRQ, AcpiPm
from ..devices.legacy.debugcon import DEBUGCON_PORT, DebugConsole
from ..devices.legacy.exit_device import EXIT_PORT, ExitDevice
from ..devices.legacy.i8042 import COMMAND_PORT, DATA_PORT, I8042
from ..devices.legacy.rtc import RTC_INDEX_PORT, RTC_IRQ, CmosRtc
from ..devices.legacy.rtc import PORT_COUNT as RTC_PORT_COUNT
from ..devices.legacy.serial import COM1_BASE, COM1_IRQ, PORT_COUNT, Uart16550
from ..devices.io_loop import IoLoop
from ..devices.pci.root import CONFIG_ADDRESS_PORT, PciRoot
from ..devices.virtio.console import VirtioConsole
from ..devices.pci.root import PORT_COUNT as PCI_PORT_COUNT
from ..errors import ConfigError, KvmUnavailableError, PyvisorError
from ..kvm.backend import detect_backend
from ..kvm.system import Kvm
from ..kvm.vcpu import EXIT_REASON_NAMES, Vcpu
from ..memory.guest_memory import GuestMemory
from ..memory.layout import MemoryLayout
from ..units import format_size
from .virtio_devices import attach_virtio_devices
from ..x86.vcpu_setup import configure_cpu, configure_lapic
from .boot import enter_kernel, prepare_boot
from .config import MachineConfig
from .console_pipe import ConsolePipe
from .outcome import FAULT_STATUS, TIMEOUT_STATUS, Outcome
from .report import INTERNAL_ERROR_NAMES, build_report

log = logging.getLogger("pyvisor.machine")

# Three pages KVM needs for VT-x real-mode support, and its identity-map page, just
# below the 4 GiB boundary where no RAM or device lives (the addresses QEMU uses).
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000
# Signal used to interrupt a vCPU thread blocked in KVM_RUN.
KICK_SIGNAL = int(signal.SIGRTMIN) + 2

REQUIRED_CAPS = {
    "KVM_CAP_USER_MEMORY": lib.KVM_CAP_USER_MEMORY,
    "KVM_CAP_IRQCHIP": lib.KVM_CAP_IRQCHIP,
    "KVM_CAP_PIT2": lib.KVM_CAP_PIT2,
    "KVM_CAP_EXT_CPUID": lib.KVM_CAP_EXT_CPUID,
    "KVM_CAP_MP_STATE": lib.KVM_CAP_MP_STATE,
    "KVM_CAP_IMMEDIATE_EXIT": lib.KVM_CAP_IMMEDIATE_EXIT,
    "KVM_CAP_SET_TSS_ADDR": lib.KVM_CAP_SET_TSS_ADDR,
}

_kick_installed = False


def _install_kick_handler() -> None:
    global _kick_installed
    if not _kick_installed:
        if lib.pv_install_kick_handler(KICK_SIGNAL) < 0:
            raise PyvisorError("cannot install the vCPU kick signal handler")
        _kick_installed = True


class Machine:
    """A virtual machine built from a MachineConfig (or the same keyword arguments).

    >>> with Machine(kernel="guests/out/hello.elf", mem="64M") as m:
    ...     outcome = m.run(timeout=30)
    ...     print(m.console_text)
    """

    def __init__(self, config: MachineConfig | None = None, **options):
        self.config = config or MachineConfig.build(**options)
        self.outcome: Outcome | None = None
        self._output = bytearray()
        self._sinks: list[Callable[[bytes], None]] = []
        self._output_fd: int | None = None
        self._console: Console | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._done = threading.Event()
        self._finish_lock = threading.Lock()
        self._ran = False
        self.kvm: Kvm | None = None
        self.vm = None
        self.memory: GuestMemory | None = None
        self.rtc: CmosRtc | None = None
        self.console_pipe: ConsolePipe | None = None
        self.io_loop: IoLoop | None = None
        self.pci_functions: list = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # --- construction ---------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        self.backend = detect_backend()
        self.kvm = Kvm(cfg.kvm_path)
        missing = [n for n, cap in REQUIRED_CAPS.items() if not self.kvm.check_extension(cap)]
        if missing:
            raise KvmUnavailableError(f"{cfg.kvm_path} lacks {', '.join(missing)}")
        max_cpus = self.kvm.max_vcpus()
        if cfg.cpus > max_cpus:
            raise ConfigError(f"--cpus {cfg.cpus} is more than this host's KVM allows ({max_cpus})")
        self.layout = MemoryLayout(cfg.mem)
        self.memory = GuestMemory(self.layout)
        self.vm = self.kvm.create_vm()
        for slot, (gpa, size, host_addr) in enumerate(self.memory.regions):
            self.vm.set_user_memory_region(slot, gpa, size, host_addr)
        self.vm.set_tss_addr(TSS_ADDR)
        self.vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        self.vm.create_irqchip()
        self.vm.create_pit2()

        supported_cpuid = self.kvm.supported_cpuid()
        self.boot = prepare_boot(cfg, self.memory, self.layout, supported_cpuid)
        self.kernel = self.boot.image

        self._build_devices()

        supported_msrs = self.kvm.msr_index_list()
        for index in range(cfg.cpus):
            vcpu = self.vm.create_vcpu(index)
            configure_cpu(vcpu, supported_cpuid, cfg.cpus, supported_msrs)
            configure_lapic(vcpu)
        enter_kernel(self.vm.vcpus[0], self.boot)

    def _build_devices(self) -> None:
        console = self.config.console
        if console not in ("stdio", "virtio", "none"):
            try:
                self._output_fd = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                          | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot open console file {console!r}: {e.strerror}") from None
            fd = self._output_fd
            self._sinks.append(lambda data: os.write(fd, data))
        self.pio_bus = PioBus()
        self.mmio_bus = MmioBus()
        vm = self.vm
        self.console_pipe = ConsolePipe(COM1_BASE, self._emit)
        self.uart = Uart16550(irq=lambda level: vm.irq_line(COM1_IRQ, level),
                              output=self.console_pipe.write,
                              fast_path=self.console_pipe.set_fast_path)
        i8042 = I8042(request_reset=self._reset_requested)
        self.rtc = CmosRtc(irq=lambda level: vm.irq_line(RTC_IRQ, level))
        self.acpi_pm = AcpiPm(request_poweroff=self._poweroff_requested,
                              request_reset=self._reset_requested,
                              sci=lambda level: vm.irq_line(SCI_IRQ, level))
        self.pci = PciRoot()
        bus = self.pio_bus
        bus.register(COM1_BASE, PORT_COUNT, self.uart, "serial (COM1)")
        bus.register(DEBUGCON_PORT, 1, DebugConsole(self.console_pipe.write), "debug console")
        bus.register(EXIT_PORT, 1, ExitDevice(self._exit_requested), "exit device")
        bus.register(DATA_PORT, 1, i8042.data_port, "i8042 data")
        bus.register(COMMAND_PORT, 1, i8042.command_port, "i8042 command/status")
        bus.register(RTC_INDEX_PORT, RTC_PORT_COUNT, self.rtc, "CMOS RTC")
        bus.register(PM_BASE, PM_LENGTH, self.acpi_pm, "ACPI PM block")
        bus.register(CONFIG_ADDRESS_PORT, PCI_PORT_COUNT, self.pci, "PCI configuration")
        self.io_loop = IoLoop()
        self.pci_functions = attach_virtio_devices(self.config, self)
        self._console_input = next(
            (f.device.receive for f in self.pci_functions if isinstance(f.device, VirtioConsole)),
            self.uart.receive)

    # --- console --------------------------------------------------------------------------
    def _emit(self, data: bytes) -> None:
        """Guest console output (UART, debug console): captured and sent to the sinks."""
        if self.config.capture_output:
            self._output += data
        for sink in self._sinks:
            sink(data)

    @property
    def console_output(self) -> bytes:
        """Everything the guest wrote to its consoles (when capture_output is on)."""
        return bytes(self._output)

    @property
    def console_text(self) -> str:
        return self._output.decode("utf-8", "replace")

    def send_input(self, data: bytes) -> None:
        """Type into the guest's console: hvc0 with console "virtio", else the UART."""
        self._console_input(data)

    # --- ending ---------------------------------------------------------------------------
    def _reset_requested(self) -> None:
        self._finish(Outcome("reset", 0, "the guest reset the machine"))

    def _poweroff_requested(self) -> None:
        self._finish(Outcome("poweroff", 0, "the guest powered off"))

    def _exit_requested(self, status: int) -> None:
        self._finish(Outcome("exit", status, f"the guest wrote to the exit device (status {status})"))

    def _finish(self, outcome: Outcome) -> None:
        """Record how the run ended (the first reason wins) and stop every vCPU."""
        with self._finish_lock:
            if self.outcome is None:
                self.outcome = outcome
            self._stopping = True
        for vcpu in self.vm.vcpus:
            vcpu.request_immediate_exit()
        me = threading.get_ident()
        for thread in self._threads:
            if thread.ident != me and thread.is_alive():
                try:
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)
                except ProcessLookupError:
                    pass  # it ended between the check and the kick
        self._done.set()

    def stop(self, kind: str = "stopped", status: int = 0, detail: str = "") -> None:
        """Stop a running machine from another thread (library use)."""
        self._finish(Outcome(kind, status, detail))

    # --- running --------------------------------------------------------------------------
    def run(self, timeout: float | None = None, handle_signals: bool = False) -> Outcome:
        """Run until the guest stops, the console quits, a signal arrives (with
        handle_signals, from the main thread) or timeout seconds pass."""
        if self._ran:
            raise PyvisorError("this machine has already run; build a new one")
        self._ran = True
        _install_kick_handler()
        previous = self._install_signal_handlers() if handle_signals else {}
        try:
            if self.config.console in ("stdio", "virtio"):
                stdin_fd = 0 if _fd_open(0) else None
                self._console = Console(self.io_loop, stdin_fd, 1, on_input=self._console_input,
                                        on_quit=lambda: self._finish(Outcome("quit", 0, "Ctrl-A x")))
                self._sinks.append(self._console.write)
                self._console.start()
            self.console_pipe.start()
            self.io_loop.start()
            for vcpu in self.vm.vcpus:
                thread = threading.Thread(target=self._vcpu_thread, args=(vcpu,),
                                          name=f"vcpu{vcpu.index}")
                self._threads.append(thread)
                thread.start()
            if not self._done.wait(timeout):
                self._finish(Outcome("timeout", TIMEOUT_STATUS,
                                     f"the guest was still running after {timeout:g} s"))
            for thread in self._threads:
                thread.join()
        finally:
            self.io_loop.stop()   # first: no console input is handled once the terminal is restored
            self.console_pipe.finish()
            log.info("console: %d bytes from the UART fast path, %d LSR reads served natively",
                     self.console_pipe.fast_bytes, self.console_pipe.native.lsr_reads)
            if self._console is not None:
                self._console.stop()
            for signo, handler in previous.items():
                signal.signal(signo, handler)
        return self.outcome

    def _install_signal_handlers(self) -> dict:
        def on_signal(signo, _frame):
            name = signal.Signals(signo).name
            self._finish(Outcome("signal", 128 + signo, f"terminated by {name}"))

        return {signo: signal.signal(signo, on_signal) for signo in (signal.SIGINT, signal.SIGTERM)}

    def _vcpu_thread(self, vcpu: Vcpu) -> None:
        try:
            outcome = self._vcpu_loop(vcpu)
        except PyvisorError as e:
            outcome = Outcome("error", FAULT_STATUS, str(e))
        except Exception as e:  # a pyvisor bug: report it, never leave the VM hanging
            log.exception("vCPU %d thread failed", vcpu.index)
            outcome = Outcome("error", FAULT_STATUS, f"internal error on vCPU {vcpu.index}: {e!r}")
        if outcome is not None:
            self._finish(outcome)

    def _vcpu_loop(self, vcpu: Vcpu) -> Outcome | None:
        """The per-exit path: everything here is paid on every port or MMIO access."""
        run, complete = lib.pv_run, lib.pv_complete_read
        fd, kvm_run, ex, uart = vcpu.fd, vcpu.kvm_run, vcpu.exit, self.console_pipe.native
        pio_read, pio_write = self.pio_bus.read, self.pio_bus.write
        mmio_read, mmio_write = self.mmio_bus.read, self.mmio_bus.write
        EXIT_IO, EXIT_MMIO, EXIT_INTR = lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO, lib.KVM_EXIT_INTR
        EINTR, EAGAIN = -errno.EINTR, -errno.EAGAIN
        while not self._stopping:
            ret = run(fd, kvm_run, ex, uart)
            if ret < 0:
                if ret == EINTR or ret == EAGAIN:
                    continue
                return Outcome("error", FAULT_STATUS, f"KVM_RUN failed on vCPU {vcpu.index}: "
                                                      f"{os.strerror(-ret)}")
            reason = ex.reason
            if reason == EXIT_IO:
                if ex.count != 1:
                    self._string_pio(ex)
                elif ex.is_write:
                    pio_write(ex.addr, ex.size, ex.value)
                else:
                    complete(ex, pio_read(ex.addr, ex.size))
            elif reason == EXIT_MMIO:
                if ex.is_write:
                    mmio_write(ex.addr, ex.size, ex.value)
                else:
                    complete(ex, mmio_read(ex.addr, ex.size))
            elif reason != EXIT_INTR:
                outcome = self._unusual_exit(vcpu, reason)
                if outcome is not None:
                    return outcome
        return None

    def _string_pio(self, ex) -> None:
        """rep ins/outs: KVM hands over `count` elements at once in the data area."""
        size, port, bus = ex.size, ex.addr, self.pio_bus
        data = ffi.buffer(ex.data, size * ex.count)
        for i in range(ex.count):
            element = slice(i * size, (i + 1) * size)
            if ex.is_write:
                bus.write(port, size, int.from_bytes(data[element], "little"))
            else:
                data[element] = bus.read(port, size).to_bytes(size, "little")

    def _unusual_exit(self, vcpu: Vcpu, reason: int) -> Outcome | None:
        """Exits that are not device accesses: the guest is stopping, or broke."""
        ex = vcpu.exit
        if reason == lib.KVM_EXIT_SHUTDOWN:
            return self._fault(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)",
                               "the guest hit an exception it could not handle and the CPU shut down")
        if reason == lib.KVM_EXIT_INTERNAL_ERROR:
            what = INTERNAL_ERROR_NAMES.get(ex.suberror, f"suberror {ex.suberror}")
            data = " ".join(f"{ex.idata[i]:#x}" for i in range(ex.ndata))
            return self._fault(vcpu, f"KVM internal error: {what} (KVM_EXIT_INTERNAL_ERROR)",
                               f"suberror {ex.suberror}" + (f", data {data}" if data else ""))
        if reason == lib.KVM_EXIT_FAIL_ENTRY:
            return self._fault(vcpu, "VM entry failed (KVM_EXIT_FAIL_ENTRY)",
                               f"hardware entry failure reason {ex.hw_reason:#x}")
        if reason == lib.KVM_EXIT_SYSTEM_EVENT:
            if ex.event_type == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
                return Outcome("poweroff", 0, "the guest powered off")
            if ex.event_type == lib.KVM_SYSTEM_EVENT_RESET:
                return Outcome("reset", 0, "the guest reset the machine")
            return self._fault(vcpu, f"system event {ex.event_type} (KVM_EXIT_SYSTEM_EVENT)")
        if reason == lib.KVM_EXIT_IRQ_WINDOW_OPEN:
            return None
        name = EXIT_REASON_NAMES.get(reason, str(reason))
        return self._fault(vcpu, f"unexpected exit KVM_EXIT_{name}")

    def _fault(self, vcpu: Vcpu, reason: str, detail: str = "") -> Outcome:
        report = build_report(vcpu, self.memory, reason, detail, self.backend)
        return Outcome("fault", FAULT_STATUS, reason, report)

    # --- cleanup --------------------------------------------------------------------------
    def close(self) -> None:
        """Release every fd, mapping and device thread; safe to call twice."""
        if self.rtc is not None:
            self.rtc.close()
        if self.console_pipe is not None:
            self.console_pipe.close()
        if self.io_loop is not None:
            self.io_loop.close()
        for function in self.pci_functions:
            function.close()
        self.pci_functions = []
        if self.vm is not None:
            self.vm.close()
        if self.kvm is not None:
            self.kvm.close()
        if self.memory is not None:
            self.memory.close()
        if self._output_fd is not None:
            os.close(self._output_fd)
            self._output_fd = None

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        cfg = self.config
        return (f"{cfg.kernel}: {format_size(cfg.mem)}, {cfg.cpus} vCPU(s), "
                f"backend {self.backend.name}")


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
