"""The KVM layer on the real /dev/kvm: state round trips and the eventfd plumbing."""
import os

import pytest

from helpers import guest, needs_kvm
from pyvisor import Machine
from pyvisor._native import lib
from pyvisor.errors import KvmError
from pyvisor.kvm.system import Kvm
from pyvisor.kvm.vm import IrqchipRoute, MsiRoute
from pyvisor.x86 import msrs

pytestmark = [needs_kvm, pytest.mark.kvm]


@pytest.fixture
def vm():
    with Kvm() as kvm:
        vm = kvm.create_vm()
        vm.create_irqchip()
        yield vm
        vm.close()


def test_system_queries():
    with Kvm() as kvm:
        assert kvm.api_version == 12
        assert kvm.check_extension(lib.KVM_CAP_IRQCHIP) > 0
        leaves = {e.function for e in kvm.supported_cpuid()}
        assert {0, 1, 0x80000000} <= leaves
        assert msrs.IA32_SYSENTER_CS in kvm.msr_index_list()


def test_vcpu_state_round_trips(vm):
    vcpu = vm.create_vcpu(0)
    regs = vcpu.get_regs()
    regs.rax, regs.r15, regs.rip = 0x1234, 0xFEEDFACE, 0x100000
    vcpu.set_regs(regs)
    back = vcpu.get_regs()
    assert (back.rax, back.r15, back.rip) == (0x1234, 0xFEEDFACE, 0x100000)

    sregs = vcpu.get_sregs()
    sregs.cr2 = 0xDEAD000
    vcpu.set_sregs(sregs)
    assert vcpu.get_sregs().cr2 == 0xDEAD000

    fpu = vcpu.get_fpu()
    fpu.fcw = 0x27F
    vcpu.set_fpu(fpu)
    assert vcpu.get_fpu().fcw == 0x27F

    vcpu.set_msrs({msrs.IA32_SYSENTER_ESP: 0x8000})
    assert vcpu.get_msrs([msrs.IA32_SYSENTER_ESP]) == {msrs.IA32_SYSENTER_ESP: 0x8000}

    lapic = bytearray(vcpu.get_lapic())
    lapic[0x80:0x84] = (0x20).to_bytes(4, "little")  # task priority register
    vcpu.set_lapic(bytes(lapic))
    assert vcpu.get_lapic()[0x80] == 0x20

    events = vcpu.get_vcpu_events()
    assert events.exception.injected == 0
    vcpu.set_vcpu_events(events)


def test_application_processors_wait_for_sipi(vm):
    bsp, ap = vm.create_vcpu(0), vm.create_vcpu(1)
    assert bsp.get_mp_state() == lib.KVM_MP_STATE_RUNNABLE
    assert ap.get_mp_state() == lib.KVM_MP_STATE_UNINITIALIZED


def test_refused_msr_is_named(vm):
    vcpu = vm.create_vcpu(0)
    with pytest.raises(KvmError, match="MSR 0xdeadbeef"):
        vcpu.set_msrs({0xDEADBEEF: 1})


def test_irqfd_and_routing(vm):
    efd = os.eventfd(0)
    try:
        vm.irqfd(efd, 5)
        with pytest.raises(KvmError, match="KVM_IRQFD"):
            vm.irqfd(efd, 5)  # the same eventfd twice: EBUSY
        vm.irqfd(efd, 5, deassign=True)
    finally:
        os.close(efd)
    routes = [IrqchipRoute(gsi, lib.KVM_IRQCHIP_IOAPIC, gsi) for gsi in range(24)]
    vm.set_gsi_routing(routes + [MsiRoute(24, 0xFEE00000, 0x41)])
    with pytest.raises(KvmError, match="KVM_SET_GSI_ROUTING"):
        vm.set_gsi_routing([IrqchipRoute(1, lib.KVM_IRQCHIP_IOAPIC, 99)])


def test_ioeventfd_absorbs_port_writes():
    """pio_bench writes port 0x81 N times; with an ioeventfd there, KVM signals the eventfd
    and pyvisor never sees the exits. (Not 0x80: pyvisor has KVM coalesce its writes, and
    the coalesced zone, registered first, would take them.)"""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with Machine(kernel=guest("pio_bench"), mem="16M", cmdline="iterations=7 port=129") as m:
            m.vm.ioeventfd(efd, 0x81, 1, pio=True)
            outcome = m.run(timeout=60)
            assert outcome.status == 0
            assert m.pio_bus.unclaimed_writes == 0
        assert os.eventfd_read(efd) == 7
    finally:
        os.close(efd)
