"""The gdb stub's listener and connection handling over real loopback and unix sockets,
with the fake Machine: address rules, acknowledgments (a packet is acked '+', a bad one
'-', a '-' from gdb makes the stub send its last packet again), QStartNoAckMode, the
interrupt byte while the guest runs, one client at a time, and the guest left running
when gdb goes."""
import socket
import time

import pytest

from gdbstub_fake import FakeMachine, outcome
from pyvisor.debug.gdbstub import parse_address, serve
from pyvisor.debug.gdbstub.protocol import checksum, frame
from pyvisor.errors import ConfigError


@pytest.mark.parametrize("spec,family,host,port", [
    ("tcp:127.0.0.1:1234", "tcp", "127.0.0.1", 1234),
    ("tcp:127.1.2.3:0", "tcp", "127.1.2.3", 0),
    ("tcp:localhost:1", "tcp", "127.0.0.1", 1),
    ("tcp:[::1]:1234", "tcp", "::1", 1234),
    ("tcp:::1:1234", "tcp", "::1", 1234),
])
def test_loopback_addresses(spec, family, host, port):
    a = parse_address(spec)
    assert (a.family, a.host, a.port) == (family, host, port)


def test_unix_address_and_names():
    assert parse_address("unix:/tmp/x.sock").path == "/tmp/x.sock"
    assert str(parse_address("unix:/tmp/x.sock")) == "unix:/tmp/x.sock"
    assert str(parse_address("tcp:[::1]:5")) == "tcp:[::1]:5"


@pytest.mark.parametrize("spec", ["tcp:192.168.1.1:1234", "tcp:0.0.0.0:1", "tcp:[::]:1",
                                  "tcp:host.example:1", "tcp:127.0.0.1:65536",
                                  "tcp:127.0.0.1:x", "tcp::1234", "udp:127.0.0.1:1",
                                  "unix:", ""])
def test_refused_addresses(spec):
    with pytest.raises(ConfigError) as e:
        parse_address(spec)
    assert "\n" not in str(e.value)


class Raw:
    """A byte-level client: what the stub sends, exactly."""

    def __init__(self, address):
        if address.family == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(address.path)
        else:
            self.sock = socket.create_connection((address.host, address.port))
        self.sock.settimeout(5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect(self, data: bytes) -> None:
        while len(self.buf) < len(data):
            chunk = self.sock.recv(4096)
            assert chunk, f"closed; had {self.buf!r}, wanted {data!r}"
            self.buf += chunk
        got, self.buf = self.buf[:len(data)], self.buf[len(data):]
        assert got == data

    def silent(self, seconds: float = 0.2) -> None:
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            data = None
        finally:
            self.sock.settimeout(5)
        assert data is None, f"unexpected {data!r}"


@pytest.fixture
def stub():
    machine = FakeMachine(cpus=2)
    server = serve(machine, "tcp:127.0.0.1:0")
    yield machine, server
    server.close()


def test_acks_nacks_and_retransmission(stub):
    machine, server = stub
    c = Raw(server.address)
    c.send(frame(b"qC"))
    c.expect(b"+" + frame(b"QC1"))
    c.send(b"-")                                    # gdb did not get it: send it again
    c.expect(frame(b"QC1"))
    c.send(b"+$qC#00")                              # bad checksum: nacked, not answered
    c.expect(b"-")
    c.send(b"$qC#" + b"%02x" % checksum(b"qC"))
    c.expect(b"+" + frame(b"QC1"))


def test_no_ack_mode(stub):
    machine, server = stub
    c = Raw(server.address)
    c.send(frame(b"QStartNoAckMode"))
    c.expect(b"+" + frame(b"OK"))                   # this one is still acked
    c.send(b"+" + frame(b"qfThreadInfo"))
    c.expect(frame(b"m1,2"))
    c.send(b"$qC#00")                               # no nack either
    c.silent()
    c.send(frame(b"qC"))
    c.expect(frame(b"QC1"))


def test_interrupt_while_running_and_resume_on_disconnect(stub):
    machine, server = stub
    c = Raw(server.address)
    c.send(frame(b"QStartNoAckMode"))
    c.expect(b"+" + frame(b"OK"))
    c.send(frame(b"vCont;c"))
    deadline = time.monotonic() + 5
    while machine.state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    c.send(b"\x03")
    c.expect(frame(b"T02thread:1;"))
    assert machine.state == "paused"
    c.send(frame(b"Z1,100000,1"))
    c.expect(frame(b"OK"))
    c.sock.close()
    deadline = time.monotonic() + 5
    while machine.state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert machine.points == []


def test_one_client_at_a_time_and_the_next_one_after(stub):
    machine, server = stub
    first = Raw(server.address)
    first.send(frame(b"qC"))
    first.expect(b"+" + frame(b"QC1"))
    second = Raw(server.address)
    assert second.sock.recv(16) == b""              # accepted and closed at once
    first.send(frame(b"qC"))                        # the first one is undisturbed
    first.expect(b"+" + frame(b"QC1"))
    first.sock.close()
    time.sleep(0.3)
    third = Raw(server.address)
    third.send(frame(b"qC"))
    third.expect(b"+" + frame(b"QC1"))


def test_the_end_of_the_machine_is_reported_and_closes(stub):
    machine, server = stub
    machine.wait_outcomes = [outcome("exit", status=31)]
    c = Raw(server.address)
    c.send(frame(b"c"))
    c.expect(b"+" + frame(b"W1f"))
    time.sleep(0.1)                                 # the stub waits for the ack
    c.send(b"+")
    assert c.sock.recv(16) == b""


def test_unix_socket_is_made_and_removed(tmp_path):
    path = tmp_path / "gdb.sock"
    machine = FakeMachine()
    with serve(machine, f"unix:{path}") as server:
        c = Raw(server.address)
        c.send(frame(b"qAttached"))
        c.expect(b"+" + frame(b"1"))
        c.sock.close()
    assert not path.exists()
    with serve(machine, f"unix:{path}"):                   # and again at the same path
        pass


def test_a_client_that_floods_while_the_guest_runs_is_dropped(stub):
    machine, server = stub
    c = Raw(server.address)
    c.send(frame(b"c"))
    c.expect(b"+")
    c.send(frame(b"qC") * 1000)
    try:
        while c.sock.recv(4096):
            pass
    except ConnectionResetError:
        pass                                       # closed with our packets unread
    assert machine.state == "running"


def test_unix_socket_is_ours_only_and_a_stale_one_is_replaced(tmp_path):
    path = tmp_path / "gdb.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()                                  # a file left by an earlier run
    with serve(FakeMachine(), f"unix:{path}"):
        assert path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(ConfigError, match="another program listens there"):
            serve(FakeMachine(), f"unix:{path}")
        assert path.exists()


def test_unix_path_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        serve(FakeMachine(), f"unix:{tmp_path}/{'x' * 200}")
    assert "cannot listen" in str(e.value) and "None" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot listen"):
        serve(FakeMachine(), f"unix:{tmp_path}/missing/dir/gdb.sock")
