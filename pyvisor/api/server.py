"""HTTP/1.1 over a Unix socket (mode 0600), one thread per client, for the Router.

Clients are untrusted in the way a guest is: each costs a bounded amount (at most
MAX_CLIENTS connections at once, request line and headers bounded by http.server, a body
of at most MAX_BODY bytes, a socket timeout so a client that stops mid-request is dropped,
REQUEST_SECONDS for a whole request to arrive once it has begun, so one that trickles in is
dropped too, and IDLE_SECONDS for a kept-alive connection to wait for its next request)
and nothing a client does reaches the guest until its request is complete and valid.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import socketserver
import stat
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..errors import ConfigError
from ..log import get_logger
from .faults import BAD_REQUEST
from .routes import Router

log = get_logger("pyvisor.api")

MAX_BODY = 51200          # Firecracker's default --http-api-max-payload-size
MAX_CLIENTS = 32
CLIENT_TIMEOUT = 10.0     # seconds a client may take between bytes
_SUN_PATH_MAX = 107       # sockaddr_un.sun_path, less its NUL
REQUEST_SECONDS = 10.0    # ... and for a whole request, from its first byte
IDLE_SECONDS = 60.0       # a kept-alive connection between requests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyvisor"
    sys_version = ""
    timeout = CLIENT_TIMEOUT
    server: "_UnixHttpServer"

    def handle_one_request(self) -> None:
        try:
            self.connection.settimeout(IDLE_SECONDS)
            if not self.rfile.peek(1):          # the client closed the connection
                self.close_connection = True
                return
        except TimeoutError:
            self.close_connection = True
            return
        finally:
            self.connection.settimeout(CLIENT_TIMEOUT)
        self._deadline = threading.Timer(REQUEST_SECONDS, self._drop)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _drop(self) -> None:
        """The request took too long to arrive: end the connection (its reads see EOF)."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _serve(self) -> None:
        length = self._content_length()
        if length is None:
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:            # the client went away mid-body
            self.close_connection = True
            return
        self._deadline.cancel()           # the request is in: its work is not bounded here
        status, result = self.server.router.handle(self.command, self.path, body)
        self._respond(status, result)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _content_length(self) -> int | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._fault("Chunked request bodies are not supported: send Content-Length.")
            return None
        text = self.headers.get("Content-Length", "0")
        if not (text.isascii() and text.isdigit()):
            self._fault(f"Invalid Content-Length {text!r}.")
            return None
        length = int(text)
        if length > MAX_BODY:
            self._fault(f"Request payload with size {length} is larger than the limit of "
                        f"{MAX_BODY} allowed by server.")
            return None
        return length

    def _fault(self, message: str, status: int = BAD_REQUEST) -> None:
        self.close_connection = True       # the unread body would be taken for a request
        self._respond(status, {"fault_message": message})

    def _respond(self, status: int, result: Any) -> None:
        data = b"" if result is None else json.dumps(result).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long), as
        Firecracker-style JSON instead of an HTML page."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":   # an unparsable request line: no version
            self.request_version = self.protocol_version
        try:
            self._respond(code, {"fault_message": message or self.responses.get(code, ("",))[0]})
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: " + format, *args)

    def address_string(self) -> str:
        return "api client"


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, router: Router, sock: socket.socket, path: str) -> None:
        self.router = router
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(path, _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("api: more than %d clients at once; a connection was refused", MAX_CLIENTS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client that disconnects or times out mid-request is its own problem.
        log.debug("api: a client connection failed", exc_info=True)


class ApiServer:
    """Serve the Router on a Unix socket at path until close() (which removes it)."""

    def __init__(self, path: str, router: Router) -> None:
        self.path = path
        sock = _bind(path)
        self._server = _UnixHttpServer(router, sock, path)
        self._thread = threading.Thread(target=self._server.serve_forever, name="api",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    def start(self) -> None:
        self._server.server_activate()
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(self.path)
        except OSError:     # gone, or outside --files-dir: the next run replaces it
            pass

    def __enter__(self) -> "ApiServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind(path: str) -> socket.socket:
    """A listening-to-be socket at path, mode 0600 from the start: bound in a private
    directory beside it, then linked into place, which fails if the path exists. A socket
    left behind by a process that is gone is replaced; a live one is refused."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ConfigError(f"--api-sock {path}: a Unix socket path has at most "
                          f"{_SUN_PATH_MAX} bytes")
    _refuse_live(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        private = tempfile.mkdtemp(prefix=".pv", dir=directory)
    except OSError as e:
        raise ConfigError(f"--api-sock {path}: cannot create a socket in {directory}: "
                          f"{e.strerror}") from None
    staged = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(staged)
        os.chmod(staged, 0o600)
        os.link(staged, path)
        return sock          # the inode, and so the bound socket, now has the name path
    except OSError as e:
        sock.close()
        raise ConfigError(f"--api-sock {path}: {e.strerror or e}") from None
    except BaseException:
        sock.close()
        raise
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)
        os.rmdir(private)


def _refuse_live(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"--api-sock {path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno != errno.ECONNREFUSED:
            raise ConfigError(f"--api-sock {path}: {e.strerror}") from None
        os.unlink(path)        # nobody listens: left behind by a process that is gone
        return
    finally:
        probe.close()
    raise ConfigError(f"--api-sock {path}: another process is serving on it")
