"""pyvisor's pytest plugin, for testing your own kernels (installed with pyvisor through the
`pytest11` entry point, so it is active wherever pyvisor is installed):

    def test_boots(pyvisor_vm):
        vm = pyvisor_vm("build/kernel.elf", mem="128M", cpus=2, append="quiet")
        vm.expect(r"login: ", timeout=10)
        vm.send("root\\n")
        assert vm.wait(timeout=30).status == 0

    @pytest.mark.pyvisor(kernel="build/kernel.elf", mem="64M")
    def test_declared(pyvisor_machine): ...

`--pyvisor-kernel PATH` (repeatable) runs the tests using `pyvisor_machine` or
`pyvisor_kernel` once per kernel. See plugin.py for the fixtures and vm.py for GuestVM."""
from .vm import ExpectTimeout, GuestVM

__all__ = ["ExpectTimeout", "GuestVM"]
