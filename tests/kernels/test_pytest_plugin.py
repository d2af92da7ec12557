"""pyvisor's pytest plugin, run through pytester as a user's suite would run it: the
example suite in examples/pytest, the failure report, the marker and --pyvisor-kernel,
cleanup whatever happens, and the skip without KVM."""
import shutil
import subprocess

import pytest

from helpers import ROOT, guest, needs_kvm

pytestmark = [needs_kvm, pytest.mark.kvm]
pytest_plugins = ["pytester"]

EXAMPLE = ROOT / "examples" / "pytest"


@pytest.fixture(scope="module")
def mini() -> str:
    """The example's own kernel, built by its Makefile."""
    subprocess.run(["make", "-s", "-C", str(EXAMPLE)], check=True, timeout=60)
    return str(EXAMPLE / "build" / "mini.elf")


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=source)
    return pytester.runpytest("-p", "no:cacheprovider", "-rs", *args)


def test_the_example_suite_passes(pytester, mini):
    shutil.copytree(EXAMPLE, pytester.path / "example")
    result = pytester.runpytest("-p", "no:cacheprovider", "example")
    result.assert_outcomes(passed=5)


def test_shell_guest_expect_send_and_wait(pytester):
    result = run(pytester, f"""
        def test_shell(pyvisor_vm):
            vm = pyvisor_vm({guest("shell")!r}, mem="64M", cpus=2, append="mode=interactive")
            vm.expect(r"pyvisor> ")
            vm.send("info\\r")
            m = vm.expect(r"CPUs: (\\d+)")
            assert m.group(1) == "2"
            assert "RAM: 64 MiB" in vm.before
            vm.expect(r"cmdline: (.*)\\r")
            vm.send("exit 3\\r")
            outcome = vm.wait(timeout=30)
            assert (outcome.kind, outcome.status) == ("exit", 3)
    """)
    result.assert_outcomes(passed=1)


def test_a_failing_test_reports_the_console_tail_and_the_fault(pytester, mini):
    result = run(pytester, f"""
        def test_crash(pyvisor_vm):
            vm = pyvisor_vm({mini!r}, mem="32M")
            vm.expect("login: ")
            vm.send("root\\r")
            vm.expect("# ")
            vm.send("crash\\r")
            vm.expect("never printed", timeout=20)
    """)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ExpectTimeout: expect('never printed'): the guest stopped (fault: triple fault" in out
    result.stdout.fnmatch_lines(["*- pyvisor console: mini.elf (fault: triple fault*) -*",
                                 "mini kernel", "login: root", "# crash",
                                 "*- pyvisor fault report: mini.elf -*",
                                 "pyvisor: guest stopped: triple fault* on vCPU 0"])
    assert "ud2" in out.split("pyvisor fault report")[-1]     # the disassembly at RIP


def test_expect_timeout_names_the_last_console_lines(pytester, mini):
    result = run(pytester, f"""
        def test_wrong_prompt(pyvisor_vm):
            vm = pyvisor_vm({mini!r}, mem="32M")
            vm.expect("Password: ", timeout=1.5)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ExpectTimeout: expect('Password: '): not printed within 1.5 s",
                                 "*console (last 30 lines):", "*mini kernel", "*login: "])
    # A guest still running is not a fault: the report has its console, no fault section.
    assert "pyvisor console: mini.elf (running)" in result.stdout.str()
    assert "pyvisor fault report" not in result.stdout.str()


def test_wait_timeout_fails_instead_of_returning_none(pytester, mini):
    result = run(pytester, f"""
        def test_never_ends(pyvisor_vm):
            pyvisor_vm({mini!r}, mem="32M").wait(timeout=0.5)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the guest was still running after 0.5 s"])


def test_machines_are_closed_after_the_test_whatever_happens(pytester, mini):
    result = run(pytester, f"""
        import pytest
        made = []

        def test_raises(pyvisor_vm):
            made.append(pyvisor_vm({mini!r}, mem="32M"))
            made.append(pyvisor_vm({mini!r}, mem="32M", paused=True))
            assert made[1].state == "paused"
            raise RuntimeError("boom")

        def test_skips(pyvisor_vm):
            made.append(pyvisor_vm({mini!r}, mem="32M"))
            pytest.skip("not today")

        def test_then(pyvisor_vm):
            assert len(made) == 3
            for vm in made:
                assert vm.state == "stopped"
                assert vm.outcome.detail == "the machine was closed"
                assert vm.machine.vm.fd == -1          # the KVM VM is gone
    """)
    result.assert_outcomes(passed=1, failed=1, skipped=1)


def test_marker_options_merge_closest_first(pytester):
    result = run(pytester, f"""
        import pytest
        pytestmark = pytest.mark.pyvisor(kernel={guest("hello")!r}, mem="64M", append="a=1")

        def test_module_marker(pyvisor_machine):
            pyvisor_machine.expect(r"RAM: 64 MiB")
            pyvisor_machine.expect(r"cmdline: a=1")

        @pytest.mark.pyvisor(mem="48M", cpus=2)
        def test_function_marker_wins(pyvisor_machine):
            pyvisor_machine.expect(r"RAM: 48 MiB")
            assert len(pyvisor_machine.vcpus) == 2
            assert pyvisor_machine.wait(timeout=30).kind == "reset"
    """)
    result.assert_outcomes(passed=2)


def test_pyvisor_kernel_option_runs_the_suite_once_per_kernel(pytester, mini):
    result = run(pytester, """
        import pytest

        @pytest.mark.pyvisor(mem="32M")
        def test_banner(pyvisor_machine):
            pyvisor_machine.expect(r"pyvisor hello|mini kernel")

        def test_factory_default(pyvisor_vm, pyvisor_kernel):
            assert pyvisor_vm(mem="32M").config.kernel == pyvisor_kernel

        def test_untouched(pyvisor_vm):
            pass
    """, "-v", "--pyvisor-kernel", guest("hello"), "--pyvisor-kernel", mini)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines_random(["*test_banner?hello.elf? PASSED*",
                                        "*test_banner?mini.elf? PASSED*",
                                        "*test_factory_default?mini.elf? PASSED*",
                                        "*test_untouched PASSED*"])


def test_no_kernel_is_a_clear_failure(pytester):
    result = run(pytester, """
        def test_nothing_to_boot(pyvisor_machine):
            pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no kernel to boot: give @pytest.mark.pyvisor(kernel=...) "
                                 "or --pyvisor-kernel PATH*"])


def test_skips_only_without_an_accessible_kvm(pytester, mini):
    result = run(pytester, f"""
        import os

        def test_missing(pyvisor_vm):
            pyvisor_vm({mini!r}, kvm_path="/nonexistent/kvm")

        def test_inaccessible(pyvisor_vm, monkeypatch):
            monkeypatch.setattr(os, "access", lambda path, mode: False)
            pyvisor_vm({mini!r})

        def test_present(pyvisor_vm):
            pyvisor_vm({mini!r}, mem="32M")
    """)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines_random([
        "*/nonexistent/kvm is missing: this machine has no KVM",
        "*/dev/kvm is not accessible: pyvisor needs read and write access (the kvm group, or root)"])


def test_a_missing_kernel_fails_in_one_line(pytester):
    result = run(pytester, """
        def test_typo(pyvisor_vm):
            pyvisor_vm("build/kernal.elf")
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*build/kernal.elf*"])
