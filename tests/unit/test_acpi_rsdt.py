"""The RSDT beside the XSDT: the RSDP's ACPI 1.0 part (its first 20 bytes, what Multiboot
2's "old RSDP" tag carries) leads to the same tables through 32-bit pointers."""
import struct

import pytest

from pyvisor.acpi.builder import build_acpi
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout


@pytest.mark.parametrize("hpet", [False, True])
def test_rsdt_lists_what_the_xsdt_lists(hpet):
    with GuestMemory(MemoryLayout(32 << 20)) as mem:
        rsdp = build_acpi(mem, 2, hpet=hpet)
        head = mem.read(rsdp, 36)
        assert sum(head[:20]) % 256 == 0 and sum(head) % 256 == 0
        (rsdt_addr,), (xsdt_addr,) = struct.unpack_from("<I", head, 16), \
            struct.unpack_from("<Q", head, 24)
        assert rsdt_addr and rsdt_addr % 4 == 0
        rsdt = mem.read(rsdt_addr, struct.unpack_from("<I", mem.read(rsdt_addr, 8), 4)[0])
        xsdt = mem.read(xsdt_addr, struct.unpack_from("<I", mem.read(xsdt_addr, 8), 4)[0])
        assert rsdt[:4] == b"RSDT" and rsdt[8] == 1 and sum(rsdt) % 256 == 0
        entries32 = struct.unpack_from(f"<{(len(rsdt) - 36) // 4}I", rsdt, 36)
        entries64 = struct.unpack_from(f"<{(len(xsdt) - 36) // 8}Q", xsdt, 36)
        assert entries32 == entries64 and len(entries32) == 2 + hpet
        assert [mem.read(a, 4) for a in entries32][:2] == [b"FACP", b"APIC"]
