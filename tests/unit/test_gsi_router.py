"""The VM's GSI routing table (pyvisor/machine/gsi_router.py)."""
from pyvisor.acpi.platform import IOAPIC_PINS, irqchip_routes
from pyvisor.kvm.vm import IrqchipRoute, MsiRoute
from pyvisor.machine.gsi_router import GsiRouter
from virtio_driver import FakeVm


def test_allocations_are_above_the_ioapic_pins_and_distinct():
    router = GsiRouter(FakeVm())
    gsis = [router.allocate() for _ in range(10)]
    assert gsis == list(range(IOAPIC_PINS, IOAPIC_PINS + 10))
    assert min(gsis) > 23


def test_allocate_alone_installs_nothing():
    vm = FakeVm()
    router = GsiRouter(vm)
    router.allocate()
    assert vm.routings == []


def test_set_msi_installs_base_routes_plus_msi_routes():
    vm = FakeVm()
    router = GsiRouter(vm)
    a, b = router.allocate(), router.allocate()
    router.set_msi(a, 0xFEE00000, 0x41)
    base = irqchip_routes()
    assert len(vm.routings) == 1
    assert vm.routings[0] == base + [MsiRoute(a, 0xFEE00000, 0x41)]
    router.set_msi(b, 0xFEE01000, 0x42)
    assert vm.routings[1] == base + [MsiRoute(a, 0xFEE00000, 0x41),
                                     MsiRoute(b, 0xFEE01000, 0x42)]
    # the legacy routes are always there: GSI 0-23 to the IOAPIC
    ioapic = {r.gsi for r in vm.routings[1] if isinstance(r, IrqchipRoute)}
    assert ioapic == set(range(IOAPIC_PINS))


def test_changing_a_route_replaces_it():
    vm = FakeVm()
    router = GsiRouter(vm)
    a = router.allocate()
    router.set_msi(a, 0xFEE00000, 0x41)
    router.set_msi(a, 0xFEE00000, 0x51)
    msi = [r for r in vm.routings[-1] if isinstance(r, MsiRoute)]
    assert msi == [MsiRoute(a, 0xFEE00000, 0x51)]
    assert len(vm.routings) == 2


def test_no_ioctl_when_unchanged():
    vm = FakeVm()
    router = GsiRouter(vm)
    a = router.allocate()
    router.set_msi(a, 0xFEE00000, 0x41)
    router.set_msi(a, 0xFEE00000, 0x41)
    router.set_msi(a, 0xFEE00000, 0x41)
    assert len(vm.routings) == 1
    router.set_msi(a, 0xFEE00000 | 1 << 32, 0x41)     # the high address half counts
    assert len(vm.routings) == 2


def test_gsis_are_unique_across_threads():
    import threading
    router = GsiRouter(FakeVm())
    out = []

    def grab():
        for _ in range(200):
            out.append(router.allocate())

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 800


# --- shared level-triggered lines (PCI INTx: slots s and s + 8 share a GSI) -------------------

def test_a_shared_line_is_the_or_of_its_sources():
    from pyvisor.acpi.platform import pci_intx_gsi
    from pyvisor.machine.gsi_router import SharedLines
    calls = []
    lines = SharedLines(lambda gsi, level: calls.append((gsi, level)))
    gsi = pci_intx_gsi(1, 0)
    assert pci_intx_gsi(9, 0) == gsi
    a, b = lines.source(), lines.source()
    a(gsi, True)
    b(gsi, True)
    a(gsi, False)                 # a's ISR read: b still asserts, the line stays high
    assert calls == [(gsi, True)]
    a(gsi, False)
    b(gsi, False)
    assert calls == [(gsi, True), (gsi, False)]
    b(gsi, False)                 # lowering a low line again changes nothing
    assert calls == [(gsi, True), (gsi, False)]


def test_shared_lines_are_independent_per_gsi():
    from pyvisor.machine.gsi_router import SharedLines
    calls = []
    lines = SharedLines(lambda gsi, level: calls.append((gsi, level)))
    a = lines.source()
    a(16, True)
    a(17, True)
    a(16, False)
    assert calls == [(16, True), (17, True), (16, False)]
