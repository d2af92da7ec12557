"""pyvisor.value.Value: the records compare, hash and show by their fields, as the frozen
dataclasses they replace did."""
import pytest

from pyvisor.kvm.vm import IrqchipRoute, MsiRoute
from pyvisor.machine.outcome import Outcome
from pyvisor.memory.layout import E820Entry
from pyvisor.x86.cpuid import CpuidEntry


def test_equality_and_hash_by_fields():
    assert E820Entry(0, 4096, 1) == E820Entry(0, 4096, 1)
    assert E820Entry(0, 4096, 1) != E820Entry(0, 4096, 2)
    assert len({E820Entry(0, 4096, 1), E820Entry(0, 4096, 1), E820Entry(1, 4096, 1)}) == 2


def test_records_of_other_classes_are_never_equal():
    """An IRQ chip route and an MSI route with the same three numbers are different routes."""
    assert IrqchipRoute(5, 0, 7) != MsiRoute(5, 0, 7)
    assert IrqchipRoute(5, 0, 7) != (5, 0, 7)


def test_repr_names_the_fields():
    assert repr(E820Entry(0, 4096, 1)) == "E820Entry(addr=0, size=4096, type=1)"
    assert repr(Outcome("exit", 7)) == ("Outcome(kind='exit', status=7, detail='', report=None, "
                                        "vcpu=None, address=None, traceback='', point=None)")


def test_replace_makes_a_changed_copy():
    entry = CpuidEntry(1, 0, 0, 0xA, 0xB, 0xC, 0xD)
    changed = entry.replace(ebx=0xFF, edx=0)
    assert changed == CpuidEntry(1, 0, 0, 0xA, 0xFF, 0xC, 0)
    assert entry.ebx == 0xB
    with pytest.raises(TypeError):
        entry.replace(nonsense=1)


def test_fields_are_slots():
    with pytest.raises(AttributeError):
        E820Entry(0, 1, 1).typo = 2
