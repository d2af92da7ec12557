"""QEMU's fw_cfg, traditional I/O interface (QEMU docs/specs/fw_cfg.rst): selector and
data ports, the items and the file directory as the specification lays them out, and its
ACPI description (QEMU0002). Selector numbers are the specification's."""
import shutil
import struct
import subprocess

import pytest

from pyvisor.acpi import aml, tables
from pyvisor.devices.legacy.fw_cfg import FwCfg, build_items
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


@pytest.fixture
def dev():
    return FwCfg(build_items(96 * MIB, 3, MemoryLayout(96 * MIB).e820()))


def read(dev, key, n):
    dev.pio_write(0, 2, key)
    return bytes(dev.pio_read(1, 1) for _ in range(n))


def test_signature_id_and_machine_items(dev):
    assert read(dev, 0x00, 4) == b"QEMU"
    assert read(dev, 0x01, 4) == struct.pack("<I", 1)        # traditional interface, no DMA
    assert read(dev, 0x02, 16) == bytes(16)                   # UUID
    assert read(dev, 0x03, 8) == struct.pack("<Q", 96 * MIB)  # RAM_SIZE
    assert read(dev, 0x05, 2) == struct.pack("<H", 3)         # NB_CPUS
    assert read(dev, 0x0F, 2) == struct.pack("<H", 3)         # MAX_CPUS


def test_file_directory_and_the_e820_file(dev):
    directory = read(dev, 0x19, 4 + 64)
    assert struct.unpack_from(">I", directory)[0] == 1
    size, select, reserved = struct.unpack_from(">IHH", directory, 4)
    assert directory[12:].rstrip(b"\0") == b"etc/e820" and len(directory[12:]) == 56
    assert (select, reserved) == (0x20, 0)
    e820 = MemoryLayout(96 * MIB).e820()
    assert size == 20 * len(e820)
    blob = read(dev, select, size)
    assert [struct.unpack_from("<QQI", blob, 20 * i) for i in range(len(e820))] == \
        [(e.addr, e.size, e.type) for e in e820]


def test_reads_past_the_end_and_of_missing_items_are_zero(dev):
    assert read(dev, 0x05, 6) == b"\x03\0\0\0\0\0"
    assert read(dev, 0x1234, 4) == bytes(4)
    assert read(dev, 0x4000 | 0x00, 4) == bytes(4)            # the write channel: no item


def test_selecting_restarts_and_only_16_bit_selector_writes_count(dev):
    assert read(dev, 0x00, 2) == b"QE"
    dev.pio_write(0, 1, 0x05)          # an 8-bit write to the selector is not a selection
    assert dev.pio_read(1, 1) == ord("M")
    dev.pio_write(1, 1, 0x99)          # data writes are ignored
    assert read(dev, 0x00, 4) == b"QEMU"
    assert dev.pio_read(1, 2) == 0xFFFF


def test_snapshot_round_trip(dev):
    read(dev, 0x00, 2)
    state = dev.snapshot_state()
    other = FwCfg(build_items(96 * MIB, 3, MemoryLayout(96 * MIB).e820()))
    other.restore_state(state)
    assert bytes(other.pio_read(1, 1) for _ in range(2)) == b"MU"


def test_dsdt_describes_it_as_qemu_does():
    body = tables.dsdt_aml(1)
    crs = aml.resource_template(aml.io_port(0x510, 0x510, 1, 2))
    device = aml.device("FWCF", aml.name("_HID", aml.string("QEMU0002")),
                        aml.name("_STA", aml.integer(0x0B)), aml.name("_CRS", crs))
    assert device in body


IASL = shutil.which("iasl")


@pytest.mark.skipif(IASL is None, reason="iasl not installed (apt: acpica-tools)")
def test_iasl_reads_the_fw_cfg_device(tmp_path):
    (tmp_path / "dsdt.aml").write_bytes(tables.dsdt(1))
    dis = subprocess.run([IASL, "-d", "dsdt.aml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert dis.returncode == 0, dis.stdout + dis.stderr
    dsl = (tmp_path / "dsdt.dsl").read_text()
    device = dsl[dsl.index("Device (FWCF)"):]
    device = " ".join(device[:device.index("})")].split())
    assert 'Name (_HID, "QEMU0002")' in device and "Name (_STA, 0x0B)" in device
    assert ("IO (Decode16, 0x0510, // Range Minimum 0x0510, // Range Maximum 0x01, "
            "// Alignment 0x02, // Length )") in device
