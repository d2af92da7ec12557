"""The listener: `tcp:HOST:PORT` on a loopback address or `unix:PATH`, one gdb client at a
time, served on a thread of its own so the vCPUs and the I/O loop never wait for gdb.

A second client is accepted and closed at once with a log line; a client that goes away
(detach, kill, a dropped connection, a protocol mess) ends its session and never takes
the server or the guest with it.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import stat
import threading
import time
from dataclasses import dataclass

from ...errors import ConfigError
from ...log import get_logger
from .protocol import Ack, BadPacket, Interrupt, Packet, PacketReader, frame
from .session import Resume, Session

log = get_logger("pyvisor.gdbstub")

IDLE_POLL_SECONDS = 0.25        # how often a stopped gdb session checks the machine ended
RECV_SIZE = 4096
SEND_TIMEOUT_SECONDS = 10
CLOSE_JOIN_SECONDS = 5
FINAL_ACK_SECONDS = 1
MAX_PENDING = 256               # packets a client may send ahead of our replies


@dataclass(frozen=True)
class Address:
    """Where the stub listens: family "tcp" with host and port, or "unix" with path."""
    family: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(spec: str) -> Address:
    """`tcp:HOST:PORT` (HOST a loopback address or localhost; [::1] for IPv6) or
    `unix:PATH`. Anything else is a ConfigError naming what is wrong."""
    family, sep, rest = spec.partition(":")
    if family == "unix" and sep and rest:
        return Address("unix", path=rest)
    if family != "tcp" or not sep:
        raise ConfigError(f"--gdb {spec!r}: expected tcp:HOST:PORT or unix:PATH")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--gdb {spec!r}: expected tcp:HOST:PORT with a port 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"--gdb {spec!r}: the gdb stub listens on loopback only "
                          "(127.0.0.1, ::1 or localhost)")
    return Address("tcp", host=host, port=int(port_text))


def _listen(address: Address) -> socket.socket:
    if address.family == "unix":
        _remove_stale_socket(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address.path   # (replaced below by the name it is bound under)
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target = (address.host, address.port)
    if address.family == "unix":
        # Bound and listening under another name, then renamed into place: the path never
        # exists without a listener behind it (clients wait for the path to appear), nor
        # with a mode other than 0600 (gdb drives the guest: only our user may connect).
        target = f"{address.path}.{os.getpid()}.tmp"
        if os.path.lexists(address.path):   # not a socket (a stale one was removed above)
            sock.close()
            raise ConfigError(f"--gdb {address}: cannot listen: {address.path} exists "
                              f"and is not a socket")
    try:
        sock.bind(target)
        if address.family == "unix":
            os.chmod(target, 0o600)
        sock.listen(1)
        if address.family == "unix":
            os.rename(target, address.path)
    except OSError as e:
        sock.close()
        if address.family == "unix":
            try:
                os.unlink(target)
            except OSError:
                pass
        raise ConfigError(f"--gdb {address}: cannot listen: {e.strerror or e}") from None
    sock.set_inheritable(False)
    return sock


def _remove_stale_socket(address: Address) -> None:
    """A socket file nobody listens on is left by an earlier run (the seccomp filter
    forbids unlink, so pyvisor cannot remove its own at exit): replace it. One that
    answers belongs to a live program, and anything else is not ours to remove."""
    try:
        if not stat.S_ISSOCK(os.lstat(address.path).st_mode):
            return                  # bind fails on it with a clear error
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"--gdb {address}: {e.strerror}") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address.path)
        except ConnectionRefusedError:
            pass
        except OSError as e:
            raise ConfigError(f"--gdb {address}: {e.strerror or e}") from None
        else:
            raise ConfigError(f"--gdb {address}: another program listens there")
    try:
        os.unlink(address.path)
    except OSError as e:
        raise ConfigError(f"--gdb {address}: cannot remove the old socket: {e.strerror}") from None


class GdbServer:
    """Listens at once (errors are ConfigErrors, before the guest starts); start() runs
    the accept loop on its thread; close() ends it and any session, leaving the guest
    running."""

    def __init__(self, machine, spec: str) -> None:
        self.machine = machine
        requested = parse_address(spec)
        self.listener = _listen(requested)
        if requested.family == "tcp":
            self.address = Address("tcp", host=requested.host,
                                   port=self.listener.getsockname()[1])
        else:
            self.address = requested
        self.wake_fd, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.closing = False
        self._released = False
        self._release_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="gdbstub", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """End the server; a session still busy after CLOSE_JOIN_SECONDS releases the
        sockets itself when it ends, so nothing is closed under its feet."""
        if self.closing:
            return
        self.closing = True
        with self._release_lock:
            if not self._released:   # else the server thread ended and closed the pipe
                os.write(self._wake_w, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=CLOSE_JOIN_SECONDS)
        if not self._thread.is_alive():
            self._release()

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self.listener.close()
        os.close(self.wake_fd)
        os.close(self._wake_w)
        if self.address.family == "unix":
            try:
                os.unlink(self.address.path)
            except OSError:
                pass                # the seccomp filter forbids it: the next run replaces it

    def __enter__(self) -> "GdbServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the server thread --------------------------------------------------------------
    def _serve(self) -> None:
        try:
            self._accept_loop()
        finally:
            if self.closing:
                self._release()

    def _accept_loop(self) -> None:
        while not self.closing and self.machine.state != "stopped":
            ready, _, _ = select.select([self.listener, self.wake_fd], [], [], IDLE_POLL_SECONDS)
            if self.closing or self.listener not in ready:
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            log.info("gdb connected on %s", self.address)
            try:
                _Connection(self, conn).run()
            except Exception:   # a stub bug must not leave the guest paused or kill the VMM
                log.exception("gdb session failed; the guest runs on")
                self._leave_running()
            finally:
                conn.close()
            log.info("gdb disconnected from %s", self.address)

    def _leave_running(self) -> None:
        try:
            if self.machine.state == "paused":
                self.machine.resume()
        except Exception:
            log.exception("cannot resume the guest after the gdb session")

    def refuse_extra_client(self) -> None:
        try:
            extra, _ = self.listener.accept()
        except OSError:
            return
        extra.close()
        log.warning("refused a second gdb connection on %s: one client at a time", self.address)


class _Connection:
    """The socket side of one session: framing, acks, retransmission, the interrupt."""

    def __init__(self, server: GdbServer, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        conn.settimeout(SEND_TIMEOUT_SECONDS)   # a client that stops reading is dropped
        self.session = Session(server.machine)
        self.reader = PacketReader()
        self.pending: list = []         # events read but not handled yet
        self.last_sent = b""
        self.gone = False

    def run(self) -> None:
        self.session.attach()
        while not self.gone and not self.session.closing and not self.server.closing:
            if not self.pending:
                if self.server.machine.state == "stopped":
                    return          # the guest ended while gdb sat at its prompt
                self._read(IDLE_POLL_SECONDS)
                continue
            event = self.pending.pop(0)
            if isinstance(event, Packet):
                self._packet(event.payload)
            elif isinstance(event, BadPacket):
                log.debug("gdb sent a bad packet: %s", event.reason)
                if not self.session.no_ack:
                    self._send_raw(b"-")
            elif isinstance(event, Ack) and not event.positive and self.last_sent:
                self._send_raw(self.last_sent)
            # Interrupt while stopped, and '+': nothing to do.
        if self.session.closing and not self.session.no_ack and not self.gone:
            self._await_ack()
        if self.server.machine.state != "stopped":
            self.session.detach()

    def _await_ack(self) -> None:
        """In ack mode gdb acknowledges our last reply (OK to D, W or X); closing before
        it arrives would make its '+' hit a closed socket."""
        deadline = time.monotonic() + FINAL_ACK_SECONDS
        while not self.gone and not any(isinstance(e, Ack) for e in self.pending):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._read(left)

    def _packet(self, payload: bytes) -> None:
        if not self.session.no_ack:
            self._send_raw(b"+")
        reply = self.session.handle(payload)
        if isinstance(reply, Resume):
            reply = self.session.resume(reply, self._poll_client)
        if reply is not None and not self.gone:
            self._send(reply)

    def _poll_client(self) -> str | None:
        """While the guest runs: "interrupt" on Ctrl-C, "gone" if gdb closed or the
        server closes; packets other than the interrupt wait for the stop."""
        if self.server.closing:
            return "gone"
        self._read(0)
        if self.gone:
            return "gone"
        for i, event in enumerate(self.pending):
            if isinstance(event, Interrupt):
                del self.pending[i]
                return "interrupt"
        return None

    def _read(self, timeout: float) -> None:
        watched = [self.conn, self.server.listener, self.server.wake_fd]
        ready, _, _ = select.select(watched, [], [], timeout)
        if self.server.listener in ready:
            self.server.refuse_extra_client()
        if self.conn not in ready:
            return
        try:
            data = self.conn.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            self.gone = True
            return
        self.pending += self.reader.feed(data)
        if len(self.pending) > MAX_PENDING:
            log.warning("gdb client sent %d packets without waiting for replies; dropping it",
                        len(self.pending))
            self.gone = True

    def _send(self, payload: bytes) -> None:
        packet = frame(payload)
        self.last_sent = packet
        self._send_raw(packet)

    def _send_raw(self, data: bytes) -> None:
        try:
            self.conn.sendall(data)
        except OSError:
            self.gone = True
