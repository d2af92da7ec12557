"""GuestVM's console matching against a stand-in machine: what expect consumes, what it
keeps, how much it keeps, and what it says when nothing matches."""
import re
import threading

import pytest

from pyvisor.machine.outcome import Outcome
from pyvisor.pytest_plugin import ExpectTimeout, GuestVM


class FakeMachine:
    """What GuestVM uses of a Machine: on_output, state, outcome, wait, console_text."""

    def __init__(self):
        self.sinks = []
        self.state = "running"
        self.outcome = None
        self.history = b""
        self.waited = 0
        self.sent = []

    def on_output(self, callback):
        self.sinks.append(callback)

    def emit(self, data: bytes):
        self.history += data
        for sink in self.sinks:
            sink(data)

    @property
    def console_text(self):
        return self.history.decode("utf-8", "replace")

    def wait(self, timeout=None):
        self.waited += 1
        return self.outcome

    def send_input(self, data: bytes):
        self.sent.append(data)


def test_expect_consumes_up_to_the_match():
    m = FakeMachine()
    vm = GuestVM(m)
    m.emit(b"boot\r\nlogin: ")
    match = vm.expect(r"login: ")
    assert match.group() == "login: " and vm.before == "boot\r\n"
    m.emit(b"a 1\r\na 2\r\n")
    assert vm.expect(r"a (\d)").group(1) == "1"
    assert vm.expect(re.compile(r"a (\d)")).group(1) == "2"   # the first was consumed


def test_utf8_split_across_deliveries():
    m = FakeMachine()
    vm = GuestVM(m)
    m.emit("é".encode()[:1])
    m.emit("é".encode()[1:] + b"!")
    assert vm.expect("é!").group() == "é!"


def test_output_arriving_while_expect_waits():
    m = FakeMachine()
    vm = GuestVM(m)
    threading.Timer(0.1, m.emit, (b"ready\n",)).start()
    assert vm.expect("ready", timeout=5).group() == "ready"


def test_timeout_names_the_last_console_lines():
    m = FakeMachine()
    vm = GuestVM(m)
    m.emit(b"".join(b"line %d\r\n" % i for i in range(50)))
    with pytest.raises(ExpectTimeout) as e:
        vm.expect("never", timeout=0.1)
    message = str(e.value)
    assert message.startswith("expect('never'): not printed within 0.1 s\n")
    assert "console (last 30 lines):\nline 20\nline 21" in message
    assert message.endswith("line 49") and "line 19" not in message


def test_a_stopped_guest_fails_at_once_after_its_last_output():
    m = FakeMachine()
    vm = GuestVM(m)
    m.state, m.outcome = "stopped", Outcome("exit", 7, "the guest wrote to the exit device")
    with pytest.raises(ExpectTimeout, match=r"the guest stopped \(exit: the guest wrote to the "
                                            r"exit device\) before printing it"):
        vm.expect("never", timeout=30)
    assert m.waited == 1          # wait() drained the rest of the output first


def test_wait_fails_when_the_guest_runs_on():
    m = FakeMachine()
    with pytest.raises(ExpectTimeout, match="the guest was still running after 0.2 s"):
        GuestVM(m).wait(timeout=0.2)


def test_unconsumed_output_is_bounded():
    m = FakeMachine()
    vm = GuestVM(m, search_limit=1000)
    for _ in range(100):
        m.emit(b"x" * 100)
    m.emit(b"END")
    match = vm.expect("x*END")
    assert len(match.group()) == 1000           # only the last 1000 characters were kept


def test_send_and_delegation():
    m = FakeMachine()
    vm = GuestVM(m)
    vm.send("root\n")
    vm.send(b"\x03")
    assert m.sent == [b"root\n", b"\x03"]
    assert vm.history == m.history               # any other attribute is the machine's
