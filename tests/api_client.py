"""A Python client of pyvisor's Firecracker API socket (http.client over AF_UNIX, the
standard library only): used by the tiny-kernel API tests and, inside the nested host, by
the Linux API sessions."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Client:
    """A keep-alive client: `api(method, path, body)` returns (status, decoded JSON or None)."""

    def __init__(self, path: str, timeout: float = 10):
        self.conn = UnixConnection(path, timeout)

    def __call__(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def console(self) -> str:
        return self("GET", "/pyvisor/console")[1]["output"]

    def wait_console(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.console()
            if text in output:
                return output
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the console: {self.console()!r}")


def listening(path: str) -> bool:
    """Whether a server accepts connections on the socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


def curl(sock: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    """The request as `curl --unix-socket` sends it: (status, body text)."""
    args = ["curl", "--silent", "--show-error", "--unix-socket", sock, "-X", method,
            f"http://localhost{path}", "-H", "Accept: application/json",
            "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code), text
