"""pyvisor boots a stock Debian cloud kernel in the nested test host.

One nested host run serves every boot below (booting the nested host costs more than a
guest boot); each test then checks its own boot's output. The guest's init prints its
facts, then ends the machine as `pv.end=` on its command line asks.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestedhost import LinuxGuest, NestedHost, NestedResult, again_if_wedged

pytestmark = [pytest.mark.nested, pytest.mark.timeout(1500)]  # one nested run serves all

INIT = r"""
echo "GUEST-FACTS nproc=$(nproc) mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) date=$(date +%s) tsc_deadline=$(grep -c '^flags.* tsc_deadline_timer' /proc/cpuinfo)"
echo "GUEST-CMDLINE $(cat /proc/cmdline)"
echo "GUEST-CPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
case "$(cat /proc/cmdline)" in
    *pv.end=reboot*) reboot -f ;;
    *pv.end=shell*) PS1='guest# ' sh -i ;;
esac
poweroff -f
"""

QUIET = "console=ttyS0 panic=-1 quiet"
SHELL_STEPS = [["guest# ", "echo $((6*7))\r"], ["\n42\r", "\x01x"]]


@dataclass(frozen=True)
class Boot:
    kernel: str        # "bzimage" or "vmlinux"
    options: str       # pyvisor run options
    append: str

    def command(self, guest: LinuxGuest, initrd: Path, repo: Path) -> str:
        image = guest.bzimage if self.kernel == "bzimage" else guest.vmlinux
        run = (f"{repo}/.venv/bin/pyvisor run {image} --initrd {initrd} {self.options} "
               f"--timeout 300 --append {shlex.quote(self.append)}")
        if "pv.end=shell" in self.append:
            steps = shlex.quote(json.dumps(SHELL_STEPS))
            run = (f"{repo}/.venv/bin/python {repo}/tests/nested/console_session.py "
                   f"{steps} 300 -- {run} --console stdio")
        else:
            run += " --console stdio"
        return (f"{run}; echo pyvisor-status=$? host-date=$(date +%s); echo \"HOST-CPU "
                f"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\"")


BOOTS = {
    "bzimage": Boot("bzimage", "--cpus 2 --mem 256M", f"{QUIET} pv.test=bzimage-cmdline"),
    "vmlinux": Boot("vmlinux", "--cpus 1 --mem 1G", f"{QUIET} pv.test=vmlinux"),
    "pvh": Boot("vmlinux", "--boot pvh --cpus 4 --mem 256M", f"{QUIET} pv.test=pvh"),
    "reboot": Boot("bzimage", "--cpus 1 --mem 256M", f"{QUIET} pv.end=reboot"),
    "verbose": Boot("bzimage", "--cpus 2 --mem 256M", "console=ttyS0 panic=-1"),
    "shell": Boot("bzimage", "--cpus 1 --mem 256M", f"{QUIET} pv.end=shell"),
}


@dataclass(frozen=True)
class Booted:
    result: NestedResult

    @property
    def output(self) -> str:
        return self.result.output

    def status(self) -> int:
        found = re.search(r"pyvisor-status=(\d+)", self.output)
        assert found, self.output[-3000:]
        return int(found.group(1))

    def facts(self) -> dict[str, int]:
        found = re.search(r"GUEST-FACTS (.*)", self.output)
        assert found, self.output[-3000:]
        return {k: int(v) for k, v in (f.split("=") for f in found.group(1).split())}

    def host_date(self) -> int:
        return int(re.search(r"host-date=(\d+)", self.output).group(1))

    def cmdline(self) -> str:
        return re.search(r"GUEST-CMDLINE (.*)", self.output).group(1).strip()

    def cpu_names(self) -> tuple[str, str]:
        """The model name in the guest's /proc/cpuinfo, and in the nested host's."""
        return tuple(re.search(rf"{who}-CPU (.*)", self.output).group(1).strip()
                     for who in ("GUEST", "HOST"))


def qemu_reference(guest: LinuxGuest, initrd: Path) -> str:
    """The verbose boot under QEMU (-M pc, KVM) in the same nested host: what the
    environment itself makes the kernel say (TCG's CPU model draws one warning)."""
    return (f"qemu-system-x86_64 -accel kvm -cpu host -M pc -smp 2 -m 256 -nodefaults "
            f"-no-user-config -display none -no-reboot -serial stdio -kernel {guest.bzimage} "
            f"-initrd {initrd} -append 'console=ttyS0 panic=-1'; "
            f"echo pyvisor-status=$? host-date=$(date +%s)")


RUN_LINUX_STEPS = [["busybox shell on ttyS0", ""], ["# ", "echo $((6*7))\r"],
                   ["\n42\r", "poweroff -f\r"]]


def run_linux(repo: Path) -> str:
    """`make run-linux`, typed into as a user would (its kernel is already cached)."""
    steps = shlex.quote(json.dumps(RUN_LINUX_STEPS))
    return (f"cd {repo} && {repo}/.venv/bin/python tests/nested/console_session.py {steps} 300 "
            f"-- make -s run-linux RUN_ARGS='--mem 256M'; echo pyvisor-status=$?")


@pytest.fixture(scope="module")
def booted(nested_host: NestedHost, guest_kernel: LinuxGuest, repo: Path,
           tmp_path_factory) -> dict[str, Booted]:
    def session() -> dict[str, Booted]:
        initrd = guest_kernel.initramfs(tmp_path_factory.mktemp("linux") / "initrd.gz", INIT)
        commands = {n: boot.command(guest_kernel, initrd, repo) for n, boot in BOOTS.items()}
        commands["qemu-verbose"] = qemu_reference(guest_kernel, initrd)
        commands["run-linux"] = run_linux(repo)
        results = nested_host.run_many(list(commands.values()), timeout=1500)
        return {n: Booted(r) for n, r in zip(commands, results)}
    return again_if_wedged(session)


def kernel_problems(log: str) -> set[str]:
    """Warnings, bugs, timeouts and firmware complaints in a boot log, without timestamps
    (a WARNING by its source location)."""
    found = set()
    for line in log.splitlines():
        text = re.sub(r"^\[\s*[\d.]+\]\s*", "", line).strip()
        warning = re.search(r"WARNING: .* at (\S+)", text)
        if warning:
            found.add(f"WARNING at {warning.group(1)}")
        elif any(p in text for p in ("BUG:", "timed out", "hung_task", "ACPI Error",
                                     "ACPI BIOS Error", "Kernel panic")):
            found.add(text)
    return found


@pytest.mark.parametrize("name, cpus, mem_mib", [
    ("bzimage", 2, 256), ("vmlinux", 1, 1024), ("pvh", 4, 256)])
def test_boots_to_init_and_powers_off(booted, name, cpus, mem_mib):
    boot = booted[name]
    assert boot.status() == 0, boot.output[-3000:]
    facts = boot.facts()
    assert facts["nproc"] == cpus
    # every CPU has the TSC-deadline timer, which the L1 kernel (6.1) leaves out of
    # KVM_GET_SUPPORTED_CPUID though it emulates it (pyvisor/x86/cpuid.py)
    assert facts["tsc_deadline"] == cpus
    guest_cpu, host_cpu = boot.cpu_names()   # the brand string KVM leaves to the VMM
    assert guest_cpu == host_cpu and host_cpu
    # MemTotal is RAM less what the kernel keeps for itself (its image, page structs)
    assert mem_mib * 1024 * 0.75 < facts["mem_kb"] <= mem_mib * 1024
    assert boot.cmdline() == BOOTS[name].append
    assert abs(facts["date"] - boot.host_date()) < 60


def test_reboot_ends_with_status_0(booted):
    boot = booted["reboot"]
    assert "GUEST-FACTS" in boot.output
    assert boot.status() == 0, boot.output[-3000:]


def test_shell_over_ttys0_and_ctrl_a_x(booted):
    boot = booted["shell"]
    assert "session-status=0" in boot.output, boot.output[-3000:]
    assert "\n42\r" in boot.output
    assert boot.status() == 0


def test_verbose_boot_is_clean(booted):
    """Every legacy device Linux probes answers: no hang, timeout, warning or firmware
    complaint beyond those QEMU's boot of the same kernel shows in the same nested host."""
    boot = booted["verbose"]
    log = boot.output
    assert boot.status() == 0, log[-3000:]
    for expected in ("smp: Brought up 1 node, 2 CPUs",
                     "clocksource: Switched to clocksource kvm-clock",
                     "serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
                     "serio: i8042 KBD port at 0x60,0x64 irq 1",
                     "rtc_cmos 00:00: setting system clock",
                     "pci 0000:00:00.0: [8086:1237] type 00 class 0x060000",
                     "ACPI: PM: Preparing to enter system sleep state S5",
                     "Run /init as init process"):
        assert expected in log, expected
    reference = booted["qemu-verbose"]
    assert reference.status() == 0 and "Run /init" in reference.output
    assert kernel_problems(log) <= kernel_problems(reference.output), \
        kernel_problems(log) - kernel_problems(reference.output)


def test_make_run_linux_boots_to_a_shell(booted):
    boot = booted["run-linux"]
    assert "session-status=0" in boot.output, boot.output[-3000:]
    assert "2 CPU(s), busybox shell on ttyS0" in boot.output
    assert "\n42\r" in boot.output
