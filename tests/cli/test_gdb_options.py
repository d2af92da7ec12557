"""--gdb and --gdb-wait errors: one line, non-zero status, before any guest runs."""
import socket

import pytest

from helpers import guest, needs_kvm, one_line_error, pyvisor

pytestmark = needs_kvm


@pytest.mark.parametrize("spec,message", [
    ("tcp:10.1.2.3:1234", "listens on loopback only"),
    ("tcp:0.0.0.0:1234", "listens on loopback only"),
    ("tcp:example.com:1234", "listens on loopback only"),
    ("tcp:127.0.0.1:99999", "expected tcp:HOST:PORT"),
    ("tcp:127.0.0.1", "expected tcp:HOST:PORT"),
    ("1234", "expected tcp:HOST:PORT or unix:PATH"),
    ("unix:", "expected tcp:HOST:PORT or unix:PATH"),
])
def test_bad_gdb_address(spec, message):
    line = one_line_error(pyvisor("run", guest("hello"), "--gdb", spec))
    assert message in line, line


def test_gdb_wait_needs_gdb():
    result = pyvisor("run", guest("hello"), "--gdb-wait")
    assert result.returncode == 2
    assert "--gdb-wait needs --gdb" in one_line_error(result)


def test_address_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_line_error(pyvisor("run", guest("hello"), "--gdb", f"tcp:127.0.0.1:{port}"))
    assert "cannot listen" in line and "in use" in line, line


def test_unix_path_that_is_not_a_socket(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a socket")
    line = one_line_error(pyvisor("run", guest("hello"), "--gdb", f"unix:{path}"))
    assert "cannot listen" in line, line
    assert path.read_text() == "not a socket"
