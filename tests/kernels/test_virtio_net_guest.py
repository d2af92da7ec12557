"""virtio-net as a guest driver sees it: the `virtio_net` tiny kernel drives a `--net tap=`
device through the runtime's virtio driver (virtio-pci; virtio-mmio for one ping run),
reads the MAC and link status from the device configuration, and exchanges ARP and ICMP
echo with the Linux stack on the other side of the tap.

Every run that touches the network happens in a fresh network namespace holding a
persistent tap `pvt0` with 10.0.3.1/24 (up before pyvisor starts, since the guest sends
at once); the guest is 10.0.3.2 on that link, so no traffic leaves the namespace (the
machine's policy: network tests address only loopback or their namespaces' own
addresses). The namespace is deleted afterwards, taking the tap with it."""
from __future__ import annotations

import json
import re
import secrets
import subprocess

import pytest

from helpers import PYVISOR, guest, needs_kvm, one_line_error, pyvisor

pytestmark = [needs_kvm, pytest.mark.kvm]

TAP = "pvt0"
HOST_IP, GUEST_IP = "10.0.3.1", "10.0.3.2"
GUEST_MAC = "52:54:00:12:34:99"
DEFAULT_MAC = "52:54:00:12:34:56"     # what pyvisor gives the first --net without mac=
PING_ARGS = f"ip={GUEST_IP} peer={HOST_IP}"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        pytest.fail(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str) -> subprocess.CompletedProcess:
        return ip("netns", "exec", self.name, "ip", *args)

    def tap_mac(self) -> str:
        info = json.loads(self.ip("-j", "link", "show", TAP).stdout)
        return info[0]["address"]

    def boot(self, *args: str, append: str = "") -> tuple[int, str, str]:
        """Boot the virtio_net kernel inside the namespace; (status, stdout, stderr)."""
        extra = ("--append", append) if append else ()
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, PYVISOR, "run", guest("virtio_net"),
             "--mem", "64M", "--console", "stdio", "--timeout", "60", *extra, *args],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
        out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
        assert "Traceback" not in err, err
        return result.returncode, out, err


@pytest.fixture
def netns(request) -> Namespace:
    """A new namespace with lo up and a persistent tap pvt0 (10.0.3.1/24, up)."""
    name = f"pvtest-{secrets.token_hex(4)}"
    added = ip("netns", "add", name, check=False)
    if added.returncode != 0:
        err = added.stderr.strip()
        if re.search(r"not permitted|permission denied", err, re.I):
            pytest.skip(f"this machine does not let us create a network namespace: {err}")
        pytest.fail(f"`ip netns add {name}` failed: {err}")
    request.addfinalizer(lambda: ip("netns", "delete", name, check=False))
    ns = Namespace(name)
    ns.ip("link", "set", "lo", "up")
    ns.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    ns.ip("addr", "add", f"{HOST_IP}/24", "dev", TAP)
    ns.ip("link", "set", TAP, "up")
    return ns


def mac_line(out: str) -> tuple[str, str, str]:
    found = re.search(r"^mac=([0-9a-f:]{17}) link=([01]) mrg_rxbuf=([01])\r?$", out, re.M)
    assert found, out
    return found.groups()


@pytest.mark.parametrize("mrg", ["1", "0"])
def test_arp_and_ping_through_the_tap(netns, mrg):
    status, out, err = netns.boot("--net", f"tap={TAP},mac={GUEST_MAC}",
                                  append=f"{PING_ARGS} count=2 mrg={mrg}")
    assert status == 0, out + err
    assert mac_line(out) == (GUEST_MAC, "1", mrg)
    # The reply came from the host's end of the tap, through the Linux stack.
    assert f"arp reply from {netns.tap_mac()}" in out, out + err
    assert re.findall(r"^icmp reply seq=(\d+) bytes=(\d+)\r?$", out, re.M) == \
        [("1", "64"), ("2", "64")], out + err
    assert "FAIL" not in out


def test_arp_and_ping_over_virtio_mmio(netns):
    status, out, err = netns.boot("--net", f"tap={TAP},mac={GUEST_MAC}",
                                  "--virtio-transport", "mmio", append=PING_ARGS)
    assert status == 0, out + err
    assert mac_line(out) == (GUEST_MAC, "1", "1")
    assert f"arp reply from {netns.tap_mac()}" in out, out + err
    assert "icmp reply seq=1 bytes=64" in out, out + err


@pytest.mark.parametrize("split", [
    "12",   # the header in a descriptor of its own, the frame in a second one
    "10",   # the 12-byte header itself split across the two
])
def test_receive_buffers_of_two_descriptors(netns, split):
    status, out, err = netns.boot("--net", f"tap={TAP},mac={GUEST_MAC}",
                                  append=f"{PING_ARGS} split={split}")
    assert status == 0, out + err
    assert f"arp reply from {netns.tap_mac()}" in out, out + err
    assert "icmp reply seq=1 bytes=64" in out, out + err


def test_default_mac_and_link_up(netns):
    status, out, err = netns.boot("--net", f"tap={TAP}")
    assert status == 0, out + err
    assert mac_line(out)[:2] == (DEFAULT_MAC, "1")
    assert "arp reply" not in out


def test_no_arp_reply_fails(netns):
    # Nobody owns the peer's address now: the ARP request goes unanswered.
    netns.ip("addr", "flush", "dev", TAP)
    status, out, err = netns.boot("--net", f"tap={TAP},mac={GUEST_MAC}", append=PING_ARGS)
    assert status == 3, out + err
    assert f"FAIL: no arp reply from {HOST_IP}" in out, out + err
    assert "icmp reply" not in out


def test_kernel_fails_without_a_net_device():
    result = pyvisor("run", guest("virtio_net"), "--mem", "64M", "--timeout", "60",
                     "--append", PING_ARGS, timeout=90)
    assert result.returncode == 3, result
    assert "FAIL: no virtio-net device" in result.stdout.decode(errors="replace")


@pytest.mark.parametrize("spec, message", [
    ("tap=pvbad0,mac=01:00:00:00:00:01", "multicast"),
    ("tap=pvbad0,speed=10", "expected tap=NAME[,mac=MAC]"),
    ("mac=52:54:00:12:34:99", "expected tap=NAME[,mac=MAC]"),
    ("tap=pvbad0,mac=52:54:00:12:34", "MAC must look like"),
])
def test_bad_net_option_is_one_line_error(spec, message):
    line = one_line_error(pyvisor("run", guest("virtio_net"), "--net", spec))
    assert line.startswith("pyvisor: invalid --net"), line
    assert message in line, line
