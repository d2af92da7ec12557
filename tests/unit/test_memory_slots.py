"""MemorySlots: carving single pages out of the RAM slots (page-protection watchpoints)."""
import pytest

from pyvisor.memory.slots import MemorySlots

KVM_MEM_READONLY = 1 << 1          # <linux/kvm.h>: "KVM_MEM_READONLY (1UL << 1)"
MiB = 1 << 20


class FakeVm:
    def __init__(self):
        self.slots = {}
        self.calls = []

    def set_region(self, slot, gpa, size, host, flags):
        self.calls.append((slot, gpa, size, host, flags))
        if size == 0:
            self.slots.pop(slot)
        else:
            assert slot not in self.slots, "KVM refuses to change a slot's size in place"
            self.slots[slot] = (gpa, size, host, flags)


def test_regions_become_one_slot_each():
    vm = FakeVm()
    MemorySlots(vm.set_region, [(0, 3 * MiB, 0x7000_0000), (4 << 30, MiB, 0x9000_0000)])
    assert sorted(vm.slots.values()) == [(0, 3 * MiB, 0x7000_0000, 0),
                                          (4 << 30, MiB, 0x9000_0000, 0)]


def test_a_read_only_page_splits_its_region_in_three():
    vm = FakeVm()
    slots = MemorySlots(vm.set_region, [(0, 2 * MiB, 0x7000_0000)])
    slots.carve(0x10_0000, readonly=True)
    assert sorted(vm.slots.values()) == [
        (0, 0x10_0000, 0x7000_0000, 0),
        (0x10_0000, 0x1000, 0x7010_0000, KVM_MEM_READONLY),
        (0x10_1000, 2 * MiB - 0x10_1000, 0x7010_1000, 0)]
    slots.restore(0x10_0000)
    assert list(vm.slots.values()) == [(0, 2 * MiB, 0x7000_0000, 0)]


def test_an_absent_page_at_the_start_and_a_neighbour():
    vm = FakeVm()
    slots = MemorySlots(vm.set_region, [(0, MiB, 0x7000_0000)])
    slots.carve(0, readonly=False)
    slots.carve(0x1000, readonly=True)
    assert sorted(vm.slots.values()) == [
        (0x1000, 0x1000, 0x7000_1000, KVM_MEM_READONLY),
        (0x2000, MiB - 0x2000, 0x7000_2000, 0)]


@pytest.mark.parametrize("page", [0x10_0800, 3 * MiB])
def test_only_whole_pages_of_ram_are_carved(page):
    slots = MemorySlots(FakeVm().set_region, [(0, 2 * MiB, 0x7000_0000)])
    with pytest.raises(ValueError):
        slots.carve(page, readonly=True)
