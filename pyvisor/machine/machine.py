"""Machine: builds a VM from a MachineConfig (memory, kernel, boot structures, devices,
vCPUs), runs one thread per vCPU, lets a script pause, inspect and change it, and turns the
way the guest stops into an Outcome.

The pieces live beside it: `run_control` (the pause protocol), `vcpu_runner` (the per-exit
loop), `hooks` (Python callbacks on ports and MMIO), `stats`, and `pyvisor.debug` (the
`Cpu` handle and breakpoints). Machine only builds them and wires them together.
"""
from __future__ import annotations

import os
# _signal: the C module; `signal` only adds enums, and enum costs every start 3 ms here
import _signal as signal
import threading
import time
from collections import deque
from collections.abc import Callable

from .._native import ffi, lib
from ..debug.breakpoints import Breakpoint, DebugTable, Watchpoint
from ..debug.cpu import Cpu
from ..debug.page_watch import PageWatches
from ..devices.bus import MmioBus, PioBus
from ..devices.legacy.acpi_pm import PM_BASE, PM_LENGTH, PM_TMR, SCI_IRQ, AcpiPm
from ..devices.legacy.debugcon import DEBUGCON_PORT, DebugConsole
from ..devices.legacy.exit_device import EXIT_PORT, ExitDevice
from ..devices.legacy.fw_cfg import FW_CFG_PORT, FW_CFG_PORTS, FwCfg, build_items
from .sleep import Sleep
from ..devices.legacy.i8042 import COMMAND_PORT, DATA_PORT, KBD_IRQ, I8042
from ..devices.legacy.rtc import RTC_INDEX_PORT, RTC_IRQ, CmosRtc
from ..devices.legacy.rtc import PORT_COUNT as RTC_PORT_COUNT
from ..devices.legacy.serial import COM1_BASE, COM1_IRQ, PORT_COUNT, Uart16550
from ..devices.io_loop import IoLoop
from ..devices.pci.root import CONFIG_ADDRESS_PORT, PciRoot
from ..devices.pci.root import PORT_COUNT as PCI_PORT_COUNT
from ..errors import ConfigError, KvmUnavailableError, PyvisorError
from ..kvm.backend import detect_backend
from ..kvm.system import REQUIRED_CAPS, Kvm
from ..log import get_logger
from ..sandbox import seccomp
from ..memory.guest_memory import GuestMemory
from ..memory.layout import MemoryLayout
from ..memory.slots import MemorySlots
from ..units import format_size
from .virtio_devices import attach_virtio_devices
from ..x86.vcpu_setup import configure_cpu, configure_lapic
from .boot import enter_kernel, prepare_boot
from .config import MachineConfig
from .console_pipe import ConsolePipe, OutputRing
from .hooks import Hook, RangeHooks, current_cpu
from .coalesced_ring import CoalescedRing
from .native_ports import fill_port_table
from .outcome import TIMEOUT_STATUS, Outcome, signalled
from .run_control import KICK_SIGNAL, RunControl
from .vcpu_runner import EXIT_NAMES, Routing, VcpuRunner

TYPE_CHECKING = False
if TYPE_CHECKING:   # imported where used: a machine that never snapshots never loads them
    from ..console import Console
    from ..devices.legacy.hpet import Hpet
    from ..snapshot.engine import Snapshot, Snapshotter
    from .hooks import HookCallback
    from .stats import MachineStats

log = get_logger("pyvisor.machine")

# Three pages KVM needs for VT-x real-mode support, and its identity-map page, just
# below the 4 GiB boundary where no RAM or device lives (the addresses QEMU uses).
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000
# How often a waiting caller looks at signals that arrived (handlers only set a flag).
_WAIT_SLICE = 0.05


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

    Scripting: `start()`, `pause()`, `resume()`, `wait()`, `vcpus` (registers, memory,
    single steps), `on_pio` / `on_mmio` / `on_exit` hooks, breakpoints and watchpoints,
    `stats`. Every call is safe from any thread; hooks run on the vCPU threads.
    """

    _restoring = False   # set by a restore from a snapshot file: memory and state come from it

    def __init__(self, config: MachineConfig | None = None, **options):
        self.config = config or MachineConfig.build(**options)
        self.outcome: Outcome | None = None
        self._output = OutputRing(self.config.console_limit)
        self._sinks: list[Callable[[bytes], None]] = []
        self._output_fd: int | None = None
        self._console: Console | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._torn_down = False
        self._teardown_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._signal: int | None = None
        self._save_dir: int | None = None   # Ctrl-A s saves here
        self._save_refused: str | None = None   # why the sandbox leaves Ctrl-A s no writes
        # Guards outcome and events; re-entrant since _finish may run inside wait().
        self._changed = threading.Condition(threading.RLock())
        self._events: deque[Outcome] = deque()
        self.kvm: Kvm | None = None
        self.vm = None
        self.memory: GuestMemory | None = None
        self.rtc: CmosRtc | None = None
        self.hpet: Hpet | None = None
        self.sleep = Sleep(self)           # ACPI S3
        self.console_pipe: ConsolePipe | None = None
        self.io_loop: IoLoop | None = None
        self.pci_functions: list = []
        self.vcpus: list[Cpu] = []
        self._runners: list[VcpuRunner] = []
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
        self.slots = MemorySlots(self.vm.set_user_memory_region, self.memory.regions)
        self.vm.set_tss_addr(TSS_ADDR)
        self.vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        self.vm.create_irqchip()
        self.vm.create_pit2()

        supported_cpuid = self.kvm.supported_cpuid()
        if not self._restoring:
            self.boot = prepare_boot(cfg, self.memory, self.layout, supported_cpuid)
            self.kernel = self.boot.image

        self._build_devices()

        supported_msrs = self.kvm.msr_index_list()
        for index in range(cfg.cpus):
            vcpu = self.vm.create_vcpu(index)
            configure_cpu(vcpu, supported_cpuid, cfg.cpus, supported_msrs)
            configure_lapic(vcpu)
        if not self._restoring:
            enter_kernel(self.vm.vcpus[0], self.boot)
        self._build_control()
        self._snapshots: Snapshotter | None = None

    def _build_devices(self) -> None:
        console = self.config.console
        if console not in ("stdio", "virtio", "none"):
            try:
                self._output_fd = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                          | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot open console file {console!r}: {e.strerror}") from None
            from ..output_sink import FdSink   # the terminal's console imports it too

            self._sinks.append(FdSink(self._output_fd, f"console file {console}").write)
        self.pio_bus = PioBus()
        self.mmio_bus = MmioBus()
        vm = self.vm
        self.console_pipe = ConsolePipe(COM1_BASE, self._emit)
        self.uart = Uart16550(irq=lambda level: vm.irq_line(COM1_IRQ, level),
                              output=self.console_pipe.write,
                              fast_path=self.console_pipe.set_fast_path)
        self.i8042 = i8042 = I8042(request_reset=self._reset_requested,
                                   irq=lambda level: vm.irq_line(KBD_IRQ, level))
        def rtc_irq(level: bool) -> None:
            if self.hpet is not None:          # its legacy replacement routing may mute it
                self.hpet.rtc_line(level)
            else:
                vm.irq_line(RTC_IRQ, level)
            if level:
                self.sleep.wake("RTC alarm")

        self.rtc = CmosRtc(irq=rtc_irq)
        self.acpi_pm = AcpiPm(request_poweroff=self._poweroff_requested,
                              request_reset=self._reset_requested,
                              sci=lambda level: vm.irq_line(SCI_IRQ, level),
                              request_suspend=self.sleep.suspend,
                              power_button=lambda: self.sleep.wake("power button"))
        self.pci = PciRoot()
        bus = self.pio_bus
        bus.register(COM1_BASE, PORT_COUNT, self.uart, "serial (COM1)")
        if not self.config.testdev:    # pc-testdev's byte view covers 0xE8-0xEB, as in QEMU
            bus.register(DEBUGCON_PORT, 1, DebugConsole(self.console_pipe.write), "debug console")
        bus.register(EXIT_PORT, 1, ExitDevice(self._exit_requested), "exit device")
        bus.register(DATA_PORT, 1, i8042.data_port, "i8042 data")
        bus.register(COMMAND_PORT, 1, i8042.command_port, "i8042 command/status")
        bus.register(RTC_INDEX_PORT, RTC_PORT_COUNT, self.rtc, "CMOS RTC")
        bus.register(PM_BASE, PM_LENGTH, self.acpi_pm, "ACPI PM block")
        bus.register(CONFIG_ADDRESS_PORT, PCI_PORT_COUNT, self.pci, "PCI configuration")
        bus.register(FW_CFG_PORT, FW_CFG_PORTS,
                     FwCfg(build_items(self.config.mem, self.config.cpus, self.layout.e820())),
                     "fw_cfg")
        if self.config.testdev:
            from ..devices.legacy import pc_testdev

            testdev = pc_testdev.PcTestdev(pc_testdev.PageFlusher(self.memory.regions).flush)
            bus.register(pc_testdev.SCRATCH_PORT, pc_testdev.PORTS, testdev, "pc-testdev")
            bus.register(pc_testdev.IRQ_PORT, pc_testdev.IRQ_LINES,
                         pc_testdev.IrqLines(vm.irq_line), "pc-testdev IRQ lines")
            self.mmio_bus.register(pc_testdev.IOMEM_BASE, pc_testdev.IOMEM_SIZE, testdev,
                                   "pc-testdev memory")
        if self.config.hpet:
            from ..devices.legacy.hpet import HPET_BASE, HPET_SIZE, Hpet

            self.hpet = Hpet(vm.irq_line)
            self.mmio_bus.register(HPET_BASE, HPET_SIZE, self.hpet, "HPET")
        self.io_loop = IoLoop()
        self.pci_functions = attach_virtio_devices(self.config, self)
        self._console_input = self.uart.receive
        if self.config.console == "virtio":
            from ..devices.virtio.console import VirtioConsole

            self._console_input = next(f.device.receive for f in self.pci_functions
                                       if isinstance(f.device, VirtioConsole))

    def _build_control(self) -> None:
        """The scripting side: pause protocol, hooks, breakpoints, one runner per vCPU."""
        vcpus = self.vm.vcpus
        self._coalesced = CoalescedRing.open(self.kvm, self.vm, self.kvm.vcpu_mmap_size())
        for vcpu in vcpus:
            vcpu.exit.ports = self.console_pipe.ports
            if self._coalesced is not None:
                vcpu.exit.coalesced = self._coalesced.native
        self._control = RunControl(vcpus)
        self._pio_hooks = RangeHooks("port", self.pio_bus.read, self.pio_bus.write,
                                     self._reroute)
        self._mmio_hooks = RangeHooks("MMIO", self.mmio_bus.read, self.mmio_bus.write,
                                      self._reroute)
        self._exit_hooks: dict[int, list[Callable]] = {}
        self._reroute()
        self.vcpus = [Cpu(v, self.memory, self._accessible, self._step) for v in vcpus]
        page_watches = PageWatches(self.slots, self.memory, self.mmio_bus,
                                   on_hit=lambda p: self._runners[current_cpu().index].page_watch_hit(p))
        self.debug = DebugTable(native_debug=self.backend.name != "pvm",
                                translate=self.vcpus[0].translate, memory=self.memory,
                                page_watches=page_watches)
        self._runners = [VcpuRunner(v, cpu, self._control, lambda: self._routing, self.debug,
                                    self._exit_hooks, self.memory, self.backend,
                                    finish=self._finish, report_event=self._report_event,
                                    coalesced=self._coalesced)
                         for v, cpu in zip(vcpus, self.vcpus)]

    def _reroute(self) -> None:
        """Point the vCPU loops at the buses, or at hooks in front of them; a hook on the
        UART's ports turns the native UART shortcut off."""
        pio = self._pio_hooks or self.pio_bus
        mmio = self._mmio_hooks or self.mmio_bus
        uart_hooked = self._pio_hooks.covers(COM1_BASE, COM1_BASE + PORT_COUNT - 1)
        coalesce = fill_port_table(self.console_pipe.ports, self.pio_bus, self._pio_hooks,
                                   None if self.config.testdev else DEBUGCON_PORT,
                                   PM_BASE + PM_TMR, self.acpi_pm.timer_origin_ns,
                                   deferrable=(RTC_INDEX_PORT,))
        if self._coalesced is not None:
            self._coalesced.set_ports(coalesce)
        self._routing = Routing(pio.read, pio.write, mmio.read, mmio.write,
                                ffi.NULL if uart_hooked else self.console_pipe.native)

    # --- console --------------------------------------------------------------------------
    def _emit(self, data: bytes) -> None:
        """Guest console output (UART, debug console, virtio console), on the pump thread:
        kept in a bounded ring (capture_output) and sent to the sinks."""
        if self.config.capture_output:
            self._output.append(data)
        for sink in self._sinks:
            sink(data)

    def on_output(self, callback: Callable[[bytes], None]) -> None:
        """Stream console output to callback (on the console thread) as it arrives."""
        def sink(data: bytes) -> None:
            try:
                callback(data)
            except Exception:
                log.exception("console output callback failed; it gets no more output")
                self._sinks.remove(sink)
        self._sinks.append(sink)

    @property
    def console_output(self) -> bytes:
        """The guest's console output (the last config.console_limit bytes of it)."""
        return self._output.data()

    @property
    def console_text(self) -> str:
        return self.console_output.decode("utf-8", "replace")

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
        """Record how the run ended (the first reason wins) and stop every vCPU. Never
        called from a signal handler (those only set self._signal)."""
        with self._changed:
            if self.outcome is None:
                self.outcome = outcome
            self._changed.notify_all()
        self._control.stop()

    def _report_event(self, event: Outcome) -> None:
        """A vCPU hit a breakpoint or watchpoint with no callback: pause, tell wait()."""
        self._control.pause()
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def stop(self, kind: str = "stopped", status: int = 0, detail: str = "") -> None:
        """Stop the machine for good (from any thread); wait() then returns this Outcome."""
        self._finish(Outcome(kind, status, detail or "stopped by the library"))

    # --- running --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """"created", "running", "paused" or "stopped"."""
        if self.outcome is not None:
            return "stopped"
        if not self._started:
            return "created"
        return "paused" if self._control.pausing else "running"

    def start(self, paused: bool = False) -> None:
        """Start the vCPU threads and return at once; with paused, they wait for resume()
        before the guest runs its first instruction."""
        with self._start_lock:   # a debugger attaching may start it from its own thread
            if self._started or self.outcome is not None:
                raise PyvisorError("this machine has already run; build a new one")
            self._started = True
        _install_kick_handler()
        if self.config.console in ("stdio", "virtio"):
            # Where Ctrl-A s saves snapshots: opened now, so the sandbox can allow writes
            # there and nowhere else.
            self._save_dir = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if self.config.seccomp:   # everything else is open by now
            if self._save_dir is not None:
                from ..sandbox import landlock

                # Landlock keeps every thread's writes beneath the save directory; where
                # it cannot, the filter forbids writes and Ctrl-A s says why.
                self._save_refused = landlock.install(self._save_dir)
            seccomp.install(save_dir_fd=None if self._save_refused else self._save_dir)
        if paused:
            self._control.pausing = True
        if self.config.console in ("stdio", "virtio"):
            from ..console import Console   # the terminal's: not for console none or a file

            stdin_fd = 0 if _fd_open(0) else None
            self._console = Console(self.io_loop, stdin_fd, 1, on_input=self._console_input,
                                    on_quit=lambda: self._finish(Outcome("quit", 0, "Ctrl-A x")),
                                    on_save=self._save_from_console)
            self._sinks.append(self._console.write)
            self._console.start()
        # The vCPUs first, so the guest's first instruction waits for no other thread to
        # start: the pump and the I/O thread take what is queued for them by then.
        for runner in self._runners:
            thread = threading.Thread(target=runner.main, name=f"vcpu{runner.vcpu.index}")
            self._threads.append(thread)
            thread.start()
        self.console_pipe.start()
        self.io_loop.start()

    def pause(self) -> None:
        """Stop every vCPU at an instruction boundary and return once they all are
        (idempotent: a pause a hook or a breakpoint asked for is waited for too), with the
        console output they wrote delivered. Called from a hook, it takes effect on that
        hook's vCPU as soon as the hook returns."""
        if self.state in ("running", "paused"):
            self._control.pause()
            if self._control.current_vcpu() is None:   # waited for: every vCPU is parked
                self.console_pipe.sync()

    def resume(self) -> None:
        """Let a paused machine run on (start it, if it was only created). Debug events
        not yet taken by wait() are dropped: the pause they caused is over."""
        if self.state == "created":
            self.start()
        elif self.state == "paused":
            with self._changed:
                self._events.clear()
            self._control.resume()

    def wait(self, timeout: float | None = None, events: bool = True) -> Outcome | None:
        """Until the guest stops (its Outcome), or pauses itself on a breakpoint or
        watchpoint nobody handled (an Outcome of that kind, `point` the Breakpoint or
        Watchpoint; the machine stays paused). None if timeout seconds pass first, with the
        machine left as it is. With events=False only the end counts, and debug events
        stay queued for another waiter (a debugger on its own thread)."""
        if not self._started and self.outcome is None:
            raise PyvisorError("start the machine first")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._changed:
                while True:
                    if self._signal is not None:
                        signo, self._signal = self._signal, None
                        self._finish(signalled(signo))
                    if self.outcome is not None:
                        break
                    if events and self._events and self._control.all_parked:
                        return self._events.popleft()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._changed.wait(_WAIT_SLICE if left is None else min(left, _WAIT_SLICE))
        except BaseException:
            # KeyboardInterrupt in library use: never leave vCPU threads running behind.
            self._finish(Outcome("signal", 128 + signal.SIGINT, "interrupted"))
            self._teardown()
            raise
        self._teardown()
        return self.outcome

    def run(self, timeout: float | None = None, handle_signals: bool = False,
            paused: bool = False, events: bool = True) -> Outcome:
        """start(paused) and wait(events=events) until the guest stops: the console
        quits, a signal arrives (with handle_signals, from the main thread) or timeout
        seconds pass (the guest is then stopped: kind "timeout")."""
        with self._start_lock:
            started = self._started
        if not started or self.outcome is not None:
            self.start(paused=paused)   # else a debugger that attached first started it
        previous = self._install_signal_handlers() if handle_signals else {}
        try:
            outcome = self.wait(timeout, events=events)
            if outcome is None:
                self._finish(Outcome("timeout", TIMEOUT_STATUS,
                                     f"the guest was still running after {timeout:g} s"))
                outcome = self.wait(events=events)
            return outcome
        finally:
            for signo, handler in previous.items():
                signal.signal(signo, handler)

    def _install_signal_handlers(self) -> dict:
        def on_signal(signo, _frame):
            self._signal = signo   # wait() acts on it: no lock is taken in a handler

        return {signo: signal.signal(signo, on_signal) for signo in (signal.SIGINT, signal.SIGTERM)}

    def _teardown(self) -> None:
        """Once stopped: join the vCPU threads, stop device threads, drain the console."""
        with self._teardown_lock:   # a second waiter returns only once it is all done
            if self._torn_down or not self._started:
                return
            self._torn_down = True
            self._stop_threads()

    def _stop_threads(self) -> None:
        self._control.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self.io_loop.stop()   # first: no console input is handled once the terminal is restored
        self.console_pipe.finish()
        log.info("console: %d bytes from the UART fast path, %d LSR reads served natively",
                 self.console_pipe.fast_bytes, self.console_pipe.native.lsr_reads)
        if self._console is not None:
            self._console.stop()

    # --- scripting --------------------------------------------------------------------------
    def _accessible(self, index: int) -> bool:
        """May vCPU index's state be read or changed now (it is out of KVM_RUN)?"""
        if self.state in ("created", "stopped"):
            return True
        return self._control.is_parked(index) or self._control.on_vcpu_thread(index)

    def _step(self, index: int, count: int, timeout: float | None) -> Outcome | None:
        if self.state == "running" and not self._control.on_vcpu_thread(index):
            raise PyvisorError("pause the machine before stepping")
        if self.state == "stopped":
            raise PyvisorError("the machine has stopped")
        runner = self._runners[index]
        return self._control.run_on(index, lambda: runner.step(count), timeout)

    def _while_paused(self, change: Callable[[], object]) -> object:
        """Make a change that needs every vCPU out of KVM_RUN; a running machine is paused
        for it and resumed after."""
        if self.state != "running" or self._control.current_vcpu() is not None:
            return change()
        self._control.pause()
        try:
            return change()
        finally:
            self._control.resume()

    def on_pio(self, first: int, last: int | None = None,
               callback: HookCallback | None = None):
        """Hook ports first..last: `callback(cpu, port, size, value, is_write)`; usable as
        a decorator. Return a value to handle the access (the value read), None to pass it
        on to the device."""
        return self._hook(self._pio_hooks, first, last, callback)

    def on_mmio(self, base: int, length: int = 1, callback: HookCallback | None = None):
        """Hook guest-physical base..base+length-1, like on_pio."""
        return self._hook(self._mmio_hooks, base, base + length - 1, callback)

    def _hook(self, hooks: RangeHooks, first: int, last: int | None,
              callback: HookCallback | None):
        last = first if last is None else last

        def register(cb: HookCallback) -> Hook:
            return self._while_paused(lambda: hooks.add(first, last, cb))

        if callback is None:
            return lambda cb: (register(cb), cb)[1]
        return register(callback)

    def on_exit(self, reason: str, callback: Callable | None = None):
        """Call `callback(cpu, reason)` on exits of that kind ("hlt", "shutdown", "debug",
        "internal_error", "system_event", ...) before pyvisor handles them; a true return
        means handled (the vCPU carries on). Port and MMIO exits take on_pio/on_mmio."""
        name = reason.lower()
        if name in ("io", "mmio"):
            raise ValueError(f"on_exit({reason!r}): hook ports and MMIO with on_pio/on_mmio")
        if name not in EXIT_NAMES:
            raise ValueError(f"on_exit: unknown exit {reason!r}; known: {', '.join(sorted(EXIT_NAMES))}")

        def register(cb: Callable) -> Callable:
            self._while_paused(lambda: self._exit_hooks.setdefault(EXIT_NAMES[name], []).append(cb))
            return cb

        return register if callback is None else register(callback)

    def add_breakpoint(self, address: int, kind: str = "hw",
                       callback: Callable | None = None) -> Breakpoint:
        """Break at guest-virtual address on every vCPU: `callback(cpu, bp)`, or with no
        callback the machine pauses and wait() reports it."""
        return self._while_paused(lambda: self.debug.add_breakpoint(address, kind, callback))

    def add_watchpoint(self, address: int, length: int = 8, access: str = "write",
                       callback: Callable | None = None) -> Watchpoint:
        """A hardware watchpoint on guest-virtual address..address+length-1 ("write" or
        "rw"); reported after the accessing instruction, like a breakpoint."""
        return self._while_paused(
            lambda: self.debug.add_watchpoint(address, length, access, callback))

    def remove(self, point: Breakpoint | Watchpoint) -> None:
        self._while_paused(point.remove)

    def run_until(self, address: int, timeout: float | None = None) -> Cpu:
        """Start or resume, pause when a vCPU reaches address, and return that vCPU."""
        bp = self.add_breakpoint(address)
        try:
            self.resume()
            event = self.wait(timeout)
        finally:
            self._while_paused(bp.remove)
        if event is None:
            self.pause()
            raise TimeoutError(f"no vCPU reached {address:#x} within {timeout:g} s")
        if event.kind == "breakpoint" and event.address == address:
            return self.vcpus[event.vcpu]
        raise PyvisorError(f"the machine stopped before reaching {address:#x}: "
                           f"{event.describe()}")

    @property
    def stats(self) -> MachineStats:
        """Exits by reason, port and MMIO region; time in KVM_RUN and in pyvisor."""
        from .stats import collect_stats   # asked for once the guest has run

        return collect_stats(self.vm.vcpus, self._runners, self.mmio_bus.registrations(),
                             0 if self._coalesced is None else self._coalesced.drained)

    # --- snapshots (pyvisor.snapshot) ------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The whole machine as it is now, in memory (paused, or from a hook with one
        vCPU); many may be held at once."""
        return self._snapshotter().capture()

    def restore(self, snap: Snapshot) -> None:
        """Back to snap, in place (only pages written since are copied); stays paused."""
        self._snapshotter().restore(snap)

    def save(self, path: str, dir_fd: int | None = None) -> int:
        """Write the machine (paused) to a snapshot file (relative to dir_fd, if given);
        returns its size in bytes."""
        from ..snapshot import file as snapshot_file

        return snapshot_file.save(self, path, dir_fd)

    @classmethod
    def restore_from(cls, path: str, **options) -> "Machine":
        """A new machine from a snapshot file, ready to start where the saved one paused
        (options: console, capture_output, console_limit, kvm_path, force)."""
        from ..snapshot import file as snapshot_file

        return snapshot_file.restore(cls, path, **options)

    def _save_from_console(self) -> None:
        """Ctrl-A s: save to pyvisor-DATE-TIME.snap in the working directory, on a thread
        of its own (the pause waits for device work, which runs on the I/O thread)."""
        if self._save_refused is not None:
            self._console.write(f"\r\n[pyvisor: cannot save a snapshot: the seccomp filter "
                                f"forbids writing files, since {self._save_refused}; "
                                f"pyvisor run --seccomp off can save]\r\n".encode())
            return

        def save() -> None:
            name = time.strftime("pyvisor-%Y%m%d-%H%M%S.snap")
            was_running = self.state == "running"
            try:
                self.pause()
                self.save(name, dir_fd=self._save_dir)
                message = f"saved {os.path.abspath(name)}"
            except PyvisorError as e:
                message = f"cannot save a snapshot: {e}"
            finally:
                if was_running:
                    self.resume()
            self._console.write(f"\r\n[pyvisor: {message}]\r\n".encode())

        threading.Thread(target=save, name="console-save", daemon=True).start()

    def _snapshotter(self) -> Snapshotter:
        if self._snapshots is None:
            from ..snapshot.engine import Snapshotter

            self._snapshots = Snapshotter(self.kvm, self.vm, self.memory, self.slots,
                                          self.pio_bus, self.mmio_bus, state=lambda: self.state,
                                          accessible=self._accessible,
                                          current_vcpu=self._control.current_vcpu,
                                          settle_pause=self._control.pause)
        return self._snapshots

    # --- cleanup --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the guest, then release every fd, mapping and device thread; safe to
        call twice. Nothing is unmapped while a vCPU thread may still touch it."""
        self.sleep.close()
        if self._started and self.outcome is None:
            self._finish(Outcome("stopped", 0, "the machine was closed"))
        if self._started:
            self._teardown()
        if self.rtc is not None:
            self.rtc.close()
        if self.hpet is not None:
            self.hpet.close()
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
        if self._save_dir is not None:
            os.close(self._save_dir)
            self._save_dir = None

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
