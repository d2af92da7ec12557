"""One gdb client's view of a machine: the packets of the remote protocol (all-stop mode)
mapped onto the scripting API (pause/resume/wait, the vCPU handles, breakpoints).

vCPU i is gdb thread i + 1. While gdb is connected the machine stays paused except
between a continue (or step) and its stop reply; the session never leaves it paused when
gdb goes: detach and a dropped connection both remove gdb's breakpoints and resume.
The session has no socket: `handle` answers one packet, `resume` runs the guest until a
stop reply is due, asking `poll_client` whether gdb interrupted or went away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...errors import PyvisorError
from ...log import get_logger
from ...machine.vcpu_runner import StepAborted
from . import registers
from .protocol import (ProtocolError, escape_binary, hex_decode, hex_encode, parse_hex,
                       unescape_binary)

log = get_logger("pyvisor.gdbstub")

PACKET_SIZE = 0x4000            # advertised; the longest reply we build
MAX_MEMORY = (PACKET_SIZE - 8) // 2   # bytes of one m reply (hex doubles them)
PAGE = 0x1000
POLL_SECONDS = 0.05             # how often a running guest is checked for a stop
STEP_SLICE_SECONDS = 0.2        # a step that takes longer checks for gdb's Ctrl-C

# Signal numbers of gdb's include/gdb/signals.h used in stop replies.
SIGINT, SIGTRAP, SIGKILL, SIGSEGV = 2, 5, 9, 11

DEBUG_STOPS = ("breakpoint", "watchpoint")
EXITS = ("exit", "reset", "poweroff", "quit")   # the guest ended normally: W, not X
WATCH_ACCESS = {2: "write", 3: "rw", 4: "rw"}       # x86 cannot watch reads alone
WATCH_REASON = {2: "watch", 3: "rwatch", 4: "awatch"}
WATCH_LENGTHS = (8, 4, 2, 1)
MAX_WATCH_BYTES = 512           # one gdb watchpoint, in pieces of at most 8 bytes

E_GENERAL = b"E01"
E_FAULT = b"E14"                # EFAULT: memory not mapped


@dataclass(frozen=True)
class Resume:
    """What a c/s/vCont packet asks for: single-step one vCPU (the others stay paused,
    which all-stop gdb accepts), or continue them all. With `within` (vCont's range
    step, `r`), the step goes on while RIP stays in [start, end)."""
    step: int | None
    within: tuple[int, int] | None = None


@dataclass
class _Point:
    ztype: int                  # 0 sw break, 1 hw break, 2 write, 3 read, 4 access watch
    handles: list               # the Breakpoint/Watchpoint objects it took


def watch_chunks(address: int, length: int) -> list[tuple[int, int]]:
    """Split a watched range into naturally aligned pieces of 1, 2, 4 or 8 bytes, the
    only ranges a debug register can watch."""
    chunks = []
    while length > 0:
        size = next(s for s in WATCH_LENGTHS if s <= length and address % s == 0)
        chunks.append((address, size))
        address += size
        length -= size
    return chunks


class Session:
    """The protocol state of one connection; `machine` is the scripting API's Machine."""

    def __init__(self, machine) -> None:
        self.m = machine
        self.no_ack = False
        self.gdb_features: set[str] = set()
        self.g_thread = 0           # vCPU index for g/G/p/P/m/M
        self.c_thread = -1          # vCPU index for c/s, -1: all
        self.points: dict[tuple[int, int, int], _Point] = {}
        self.last_stop = self._thread_stop(SIGTRAP, 0)
        self.closing = False        # after D or k: the connection ends after the reply
        self._sw_is_hw = False      # the backend turned a software breakpoint into hw

    # --- attach and detach --------------------------------------------------------------
    def attach(self) -> None:
        """gdb expects a stopped target when it connects."""
        state = self.m.state
        if state == "created":
            self.m.start(paused=True)
        elif state == "running":
            self.m.pause()
            self.last_stop = self._thread_stop(SIGINT, self.g_thread)

    def detach(self) -> None:
        """Leave the guest as if gdb had never come: no breakpoints, running."""
        for point in list(self.points.values()):
            self._remove(point)
        self.points.clear()
        if self.m.state == "paused":
            self.m.resume()

    # --- one packet ---------------------------------------------------------------------
    def handle(self, payload: bytes) -> bytes | Resume | None:
        """The reply to one packet, a Resume when the reply is the next stop, or None
        for a packet that has no reply."""
        if not payload:
            return b""
        try:
            return self._dispatch(payload)
        except (ProtocolError, registers.RegisterError, OverflowError) as e:
            log.debug("gdb packet %r: %s", payload[:40], e)
            return E_GENERAL
        except PyvisorError as e:
            log.info("gdb packet %r: %s", payload[:40], e)
            return E_GENERAL

    def _dispatch(self, p: bytes) -> bytes | Resume | None:
        head = p[:1]
        if head == b"?":
            return self.last_stop
        if head == b"g":
            return hex_encode(registers.read_all(self._cpu(self.g_thread)))
        if head == b"G":
            registers.write_all(self._cpu(self.g_thread), hex_decode(p[1:]))
            return b"OK"
        if head == b"p":
            return hex_encode(registers.read_one(self._cpu(self.g_thread), parse_hex(p[1:])))
        if head == b"P":
            number, _, value = p[1:].partition(b"=")
            registers.write_one(self._cpu(self.g_thread), parse_hex(number), hex_decode(value))
            return b"OK"
        if head == b"m":
            addr, length = self._addr_length(p[1:])
            data = self._read_memory(addr, min(length, MAX_MEMORY))
            return hex_encode(data) if data or not length else E_FAULT
        if head in (b"M", b"X"):
            spec, sep, data = p[1:].partition(b":")
            if not sep:
                raise ProtocolError("memory write without ':'")
            addr, length = self._addr_length(spec)
            data = hex_decode(data) if head == b"M" else unescape_binary(data)
            if len(data) != length:
                raise ProtocolError(f"{length} bytes announced, {len(data)} sent")
            return self._write_memory(addr, data)
        if head in (b"c", b"s", b"C", b"S"):
            return self._resume_packet(p)
        if head in (b"Z", b"z"):
            return self._point_packet(p)
        if head == b"H":
            return self._set_thread(p[1:2], p[2:])
        if head == b"T":
            return b"OK" if self._thread_index(p[1:]) is not None else E_GENERAL
        if head == b"D":
            self.closing = True
            return b"OK"
        if head == b"k":            # no reply: gdb does not wait for one
            self.closing = True
            self.m.stop(kind="quit", status=0, detail="gdb killed the machine")
            return None
        if head == b"q":
            return self._query(p)
        if p == b"QStartNoAckMode":
            self.no_ack = True      # from the next packet on; this OK is still acked
            return b"OK"
        if p.startswith(b"vCont"):
            return self._vcont(p)
        return b""                  # unsupported: the empty reply, as the protocol says

    # --- queries ------------------------------------------------------------------------
    def _query(self, p: bytes) -> bytes:
        if p.startswith(b"qSupported"):
            offered = p.partition(b":")[2].split(b";")
            self.gdb_features = {f[:-1].decode("ascii", "replace") for f in offered
                                 if f.endswith(b"+")}
            reply = [f"PacketSize={PACKET_SIZE:x}", "qXfer:features:read+",
                     "QStartNoAckMode+", "vContSupported+"]
            reply += [f"{f}+" for f in ("swbreak", "hwbreak") if f in self.gdb_features]
            return ";".join(reply).encode("ascii")
        if p.startswith(b"qXfer:features:read:"):
            annex, _, span = p[len(b"qXfer:features:read:"):].partition(b":")
            if annex != b"target.xml":
                return b"E00"
            offset, length = self._addr_length(span)
            chunk = registers.TARGET_XML[offset:offset + min(length, PACKET_SIZE // 2)]
            more = offset + len(chunk) < len(registers.TARGET_XML)
            return (b"m" if more else b"l") + escape_binary(chunk)
        if p == b"qfThreadInfo":
            return b"m" + b",".join(b"%x" % (i + 1) for i in range(len(self.m.vcpus)))
        if p == b"qsThreadInfo":
            return b"l"
        if p == b"qC":
            return b"QC%x" % (self.g_thread + 1)
        if p.startswith(b"qAttached"):
            return b"1"             # an existing machine: quitting gdb detaches, not kills
        if p.startswith(b"qThreadExtraInfo,"):
            index = self._thread_index(p[len(b"qThreadExtraInfo,"):])
            if index is None:
                return E_GENERAL
            return hex_encode(f"vCPU {index}".encode("ascii"))
        if p == b"qSymbol::":
            return b"OK"
        return b""

    # --- threads ------------------------------------------------------------------------
    def _thread_index(self, text: bytes) -> int | None:
        """vCPU index of a gdb thread id; None if there is no such vCPU."""
        tid = parse_hex(text)
        return tid - 1 if 1 <= tid <= len(self.m.vcpus) else None

    def _set_thread(self, op: bytes, text: bytes) -> bytes:
        if text == b"-1":
            if op != b"c":
                return E_GENERAL
            self.c_thread = -1
            return b"OK"
        if text == b"0":            # any thread: keep the one we have
            return b"OK"
        index = self._thread_index(text)
        if index is None:
            return E_GENERAL
        if op == b"g":
            self.g_thread = index
        elif op == b"c":
            self.c_thread = index
        else:
            return E_GENERAL
        return b"OK"

    def _cpu(self, index: int):
        return self.m.vcpus[index]

    # --- memory -------------------------------------------------------------------------
    @staticmethod
    def _addr_length(text: bytes) -> tuple[int, int]:
        addr, sep, length = text.partition(b",")
        if not sep:
            raise ProtocolError(f"expected addr,length: {text[:40]!r}")
        return parse_hex(addr), parse_hex(length)

    def _read_memory(self, addr: int, length: int) -> bytes:
        """Guest-virtual memory through the page tables of the selected vCPU; a range
        running into an unmapped page gives what precedes it, as gdb allows."""
        cpu = self._cpu(self.g_thread)
        try:
            return cpu.read_virt(addr, length)
        except (PyvisorError, ValueError):
            pass
        data = bytearray()
        while length:
            n = min(length, PAGE - addr % PAGE)
            try:
                data += cpu.read_virt(addr, n)
            except (PyvisorError, ValueError):
                break
            addr += n
            length -= n
        return bytes(data)

    def _write_memory(self, addr: int, data: bytes) -> bytes:
        if not data:
            return b"OK"            # gdb's probe for X support
        try:
            self._cpu(self.g_thread).write_virt(addr, data)
        except (PyvisorError, ValueError):
            return E_FAULT
        return b"OK"

    # --- breakpoints and watchpoints ----------------------------------------------------
    def _point_packet(self, p: bytes) -> bytes:
        fields = p[1:].split(b";", 1)[0].split(b",")
        if len(fields) != 3:
            raise ProtocolError(f"expected type,addr,kind: {p[:40]!r}")
        ztype, addr, kind = (parse_hex(f) for f in fields)
        if ztype > 4:
            return b""
        key = (ztype, addr, kind)
        if p[:1] == b"z":
            point = self.points.pop(key, None)
            if point is not None:
                self._remove(point)
            return b"OK"
        if key in self.points:      # Z is idempotent
            return b"OK"
        try:
            self.points[key] = self._insert(ztype, addr, kind)
        except (PyvisorError, ValueError) as e:
            log.info("gdb %s at %#x: %s", "breakpoint" if ztype < 2 else "watchpoint", addr, e)
            return E_GENERAL
        return b"OK"

    def _insert(self, ztype: int, addr: int, length: int) -> _Point:
        if ztype < 2:
            kind = "sw" if ztype == 0 and not self._sw_is_hw else "hw"
            bp = self.m.add_breakpoint(addr, kind=kind)
            if ztype == 0 and bp.kind == "hw":
                self._sw_is_hw = True
            return _Point(ztype, [bp])
        if not 0 < length <= MAX_WATCH_BYTES:
            raise ValueError(f"a watchpoint of {length} bytes (at most {MAX_WATCH_BYTES})")
        handles = []
        try:
            for chunk_addr, size in watch_chunks(addr, length):
                handles.append(self.m.add_watchpoint(chunk_addr, length=size,
                                                     access=WATCH_ACCESS[ztype]))
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        return _Point(ztype, handles)

    @staticmethod
    def _remove(point: _Point) -> None:
        for handle in point.handles:
            handle.remove()

    def _point_of(self, handle) -> _Point | None:
        """gdb's point a Breakpoint or Watchpoint of the machine belongs to, if any."""
        return next((p for p in self.points.values() if handle in p.handles), None)

    # --- resuming -----------------------------------------------------------------------
    def _resume_packet(self, p: bytes) -> Resume:
        """c [addr], s [addr], C sig[;addr], S sig[;addr]: the signal is dropped (a vCPU
        has no pending signals); an address moves the thread's rip first."""
        head, args = p[:1], p[1:]
        if head in (b"C", b"S"):
            args = args.partition(b";")[2]
        index = self.c_thread if self.c_thread >= 0 else self.g_thread
        if args:
            self._cpu(index).regs.rip = parse_hex(args)
        return Resume(step=index if head in (b"s", b"S") else None)

    def _vcont(self, p: bytes) -> bytes | Resume:
        if p == b"vCont?":
            return b"vCont;c;C;s;S;r"
        if not p.startswith(b"vCont;"):
            return b""
        step = None
        continues = False
        for action in p[len(b"vCont;"):].split(b";"):
            verb, _, thread = action.partition(b":")
            if verb[:1] in (b"s", b"S", b"r"):
                if step is None:
                    index = self.g_thread if not thread or thread == b"-1" \
                        else self._thread_index(thread)
                    if index is None:
                        return E_GENERAL
                    within = self._addr_length(verb[1:]) if verb[:1] == b"r" else None
                    step = Resume(step=index, within=within)
            elif verb[:1] in (b"c", b"C"):
                continues = True
            else:
                return E_GENERAL
        if step is None and not continues:
            return E_GENERAL
        return step or Resume(step=None)

    def resume(self, action: Resume, poll_client: Callable[[], str | None]) -> bytes | None:
        """Run the guest as asked until it stops; the stop reply, or None when gdb went
        away meanwhile (then the guest keeps running, detached). poll_client returns
        "interrupt" for a Ctrl-C, "gone" for a closed connection, else None."""
        if action.step is not None:
            reply = self._step(action.step, action.within, poll_client)
        else:
            reply = self._continue(poll_client)
        if reply is not None:
            self.last_stop = reply
        return reply

    def _step(self, index: int, within: tuple[int, int] | None,
              poll_client: Callable[[], str | None]) -> bytes | None:
        """One instruction on one vCPU, or as many as keep RIP within the range. A vCPU
        that cannot finish its instruction (halted, waiting for an interrupt or a SIPI)
        is retried slice by slice until gdb interrupts."""
        cpu = self._cpu(index)
        while True:
            try:
                outcome = cpu.step(1, timeout=STEP_SLICE_SECONDS)
            except StepAborted:
                outcome = None
                stepped = False
            else:
                stepped = True
            if stepped and outcome is None:   # the instruction may have hit a watchpoint
                outcome = self.m.wait(timeout=0)
            if outcome is not None:
                return self.stop_reply(outcome)
            if stepped and (within is None or not within[0] <= cpu.regs.rip < within[1]):
                return self._thread_stop(SIGTRAP, index)
            event = poll_client()
            if event == "gone":
                self.detach()
                return None
            if event == "interrupt":
                return self._thread_stop(SIGINT, index)

    def _continue(self, poll_client: Callable[[], str | None]) -> bytes | None:
        self.m.resume()
        while True:
            event = poll_client()
            if event == "gone":
                self.detach()
                return None
            if event == "interrupt":
                self.m.pause()
                return self._thread_stop(SIGINT, self.g_thread)
            outcome = self.m.wait(timeout=POLL_SECONDS)
            if outcome is not None:
                return self.stop_reply(outcome)

    def _thread_stop(self, signal: int, index: int, extra: str = "") -> bytes:
        return f"T{signal:02x}thread:{index + 1:x};{extra}".encode("ascii")

    def stop_reply(self, outcome) -> bytes:
        """T for a debug stop (the vCPU becomes gdb's current thread), W or X for the end."""
        if outcome.kind in DEBUG_STOPS:
            index = outcome.vcpu
            self.g_thread = index
            extra = ""
            point = self._point_of(outcome.point)   # None: a point a script set
            if point is not None and point.ztype >= 2:
                extra = f"{WATCH_REASON[point.ztype]}:{outcome.address:x};"
            elif point is not None:
                reason = ("swbreak", "hwbreak")[point.ztype]
                if reason in self.gdb_features:
                    extra = f"{reason}:;"
            return self._thread_stop(SIGTRAP, index, extra)
        self.closing = True
        if outcome.kind in EXITS:
            return b"W%02x" % (outcome.status & 0xFF)
        return b"X%02x" % (SIGSEGV if outcome.kind == "fault" else SIGKILL)
