"""The API's HTTP server on its Unix socket, in-process and without a guest: the socket's
mode and path rules, keep-alive, and the bounds on clients (how many, how big, how slow)."""
import json
import os
import socket
import stat
import time

import pytest

from pyvisor.api import ApiServer, Instance, Router
from pyvisor.api import server as server_module
from pyvisor.errors import ConfigError


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "api.sock")


@pytest.fixture
def serving(sock_path):
    with ApiServer(sock_path, Router(Instance())) as server:
        yield server


def connect(path: str) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect(path)
    return c


def read_response(c: socket.socket) -> tuple[int, dict, bytes]:
    """One response off a keep-alive connection: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        rest += c.recv(4096)
    return int(lines[0].split()[1]), headers, rest


def test_the_socket_is_0600(serving, sock_path):
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    # Nothing is left beside it (it was bound in a private directory, then linked).
    assert os.listdir(os.path.dirname(sock_path)) == ["api.sock"]


def test_close_removes_the_socket(sock_path):
    ApiServer(sock_path, Router(Instance())).close()
    assert not os.path.exists(sock_path)


def test_path_rules(serving, sock_path, tmp_path):
    with pytest.raises(ConfigError, match="another process is serving on it"):
        ApiServer(sock_path, Router(Instance()))
    regular = tmp_path / "regular"
    regular.write_text("x")
    with pytest.raises(ConfigError, match="the path exists and is not a socket"):
        ApiServer(str(regular), Router(Instance()))
    with pytest.raises(ConfigError, match="cannot create a socket in"):
        ApiServer(str(tmp_path / "no" / "such" / "dir.sock"), Router(Instance()))
    with pytest.raises(ConfigError, match="at most 107 bytes"):
        ApiServer(str(tmp_path / ("x" * 120)), Router(Instance()))
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(stale)
    with ApiServer(stale, Router(Instance())):
        with connect(stale) as c:
            c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert read_response(c)[0] == 200


def test_keep_alive_and_json_replies(serving, sock_path):
    with connect(sock_path) as c:
        c.sendall(b"GET /machine-config HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(c)
        assert (status, headers["content-type"]) == (200, "application/json")
        assert json.loads(body)["vcpu_count"] == 1
        body = b'{"vcpu_count": 2, "mem_size_mib": 64}'
        c.sendall(b"PUT /machine-config HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        status, headers, reply = read_response(c)
        assert (status, headers["content-length"], reply) == (204, "0", b"")
        c.sendall(b"GET /machine-config HTTP/1.1\r\n\r\n")
        assert json.loads(read_response(c)[2])["vcpu_count"] == 2
        c.sendall(b"POST / HTTP/1.1\r\n\r\n")
        status, _, body = read_response(c)
        assert (status, json.loads(body)) == (400, {"fault_message": "Invalid request method "
                                                                     "and/or path: POST ."})


def test_expect_100_continue(serving, sock_path):
    body = json.dumps({"kernel_image_path": "k" * 2000}).encode()
    with connect(sock_path) as c:
        c.sendall(b"PUT /boot-source HTTP/1.1\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert c.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        c.sendall(body)
        assert read_response(c)[0] == 204


def test_a_request_that_trickles_in_is_dropped(sock_path, monkeypatch):
    monkeypatch.setattr(server_module, "REQUEST_SECONDS", 0.5)
    with ApiServer(sock_path, Router(Instance())), connect(sock_path) as c:
        start = time.monotonic()
        c.sendall(b"PUT /boot-source HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() - start < 5:
                c.sendall(b" ")            # a byte at a time, well inside the socket timeout
                time.sleep(0.1)
        assert time.monotonic() - start < 2
        # The server goes on serving others.
        with connect(sock_path) as d:
            d.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert read_response(d)[0] == 200


def test_clients_beyond_the_limit_are_turned_away(sock_path, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_CLIENTS", 4)
    with ApiServer(sock_path, Router(Instance())):
        held = [connect(sock_path) for _ in range(4)]
        time.sleep(0.2)
        with connect(sock_path) as extra:
            assert extra.recv(100) == b""        # closed at once
        for c in held:
            c.close()
        time.sleep(0.2)
        with connect(sock_path) as c:
            c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert read_response(c)[0] == 200


def test_idle_keep_alive_connections_close_after_idle_seconds(sock_path, monkeypatch):
    monkeypatch.setattr(server_module, "IDLE_SECONDS", 0.5)
    monkeypatch.setattr(server_module, "REQUEST_SECONDS", 0.3)
    with ApiServer(sock_path, Router(Instance())), connect(sock_path) as c:
        # Longer than a request may take, shorter than the idle limit: still served.
        time.sleep(0.4)
        c.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_response(c)[0] == 200
        start = time.monotonic()
        assert c.recv(100) == b""              # then, idle, it is closed
        assert 0.3 < time.monotonic() - start < 3


@pytest.mark.parametrize("value", [b"-1", b"1e3", b"\xb2", b" "])
def test_a_content_length_that_is_not_a_number(serving, sock_path, value):
    with connect(sock_path) as c:
        c.sendall(b"PUT /boot-source HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n{}")
        status, headers, body = read_response(c)
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["fault_message"].startswith("Invalid Content-Length")
