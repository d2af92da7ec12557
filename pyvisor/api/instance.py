"""Instance: the microVM the API describes, then starts and drives.

Before InstanceStart it is a description (boot source, machine configuration, drives,
network interfaces, entropy) in Firecracker's JSON shapes, which GET /vm/config returns as
given; InstanceStart turns it into a MachineConfig (so the API refuses what `pyvisor run`
refuses, with the same message) and starts a Machine. The bodies arrive already checked
by schema.check; one lock serializes changes, since requests come from many threads."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..devices.legacy.ps2_keyboard import KeyboardError
from ..devices.virtio.blk import DiskSpec, VirtioBlk
from ..devices.virtio.net import NetSpec
from ..errors import PyvisorError
from ..machine.config import MachineConfig
from ..machine.machine import Machine
from ..sandbox import seccomp
from .faults import NOT_AFTER_START, NOT_BEFORE_START, ApiError

DEFAULT_VCPUS = 1
DEFAULT_MEM_MIB = 128     # Firecracker's defaults
CONSOLE_TAIL = 64 << 10


@dataclass(frozen=True)
class HostOptions:
    """What the API does not describe but the command line does."""
    console: str = "none"
    kvm_path: str = "/dev/kvm"
    virtio_transport: str = "pci"
    boot_protocol: str = "auto"
    seccomp: bool = False      # the API variant of the filter (sandbox/seccomp.py), at start
    files_dir: str | None = None   # --files-dir: files written only beneath it (landlock.py)


class Instance:
    """One microVM. `machine` is None until InstanceStart; `started` is set then."""

    def __init__(self, instance_id: str = "anonymous-instance",
                 host: HostOptions = HostOptions()) -> None:
        self.instance_id = instance_id
        self.host = host
        self.machine: Machine | None = None
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._boot: dict[str, Any] | None = None
        self._machine_config: dict[str, Any] = {"vcpu_count": DEFAULT_VCPUS,
                                                "mem_size_mib": DEFAULT_MEM_MIB, "smt": False}
        self._drives: dict[str, dict[str, Any]] = {}
        self._nets: dict[str, dict[str, Any]] = {}
        self._entropy: dict[str, Any] | None = None
        self._configured = False      # a pre-boot resource was set: no snapshot load then

    # --- what GET returns -------------------------------------------------------------
    @property
    def state(self) -> str:
        machine = self.machine
        if machine is None:
            return "Not started"
        return "Paused" if machine.state == "paused" else "Running"

    def info(self) -> dict[str, Any]:
        return {"id": self.instance_id, "state": self.state, "vmm_version": __version__,
                "app_name": "pyvisor"}

    def machine_config(self) -> dict[str, Any]:
        return dict(self._machine_config)

    def vm_config(self) -> dict[str, Any]:
        with self._lock:
            config: dict[str, Any] = {"machine-config": dict(self._machine_config),
                                      "drives": [dict(d) for d in self._drives.values()],
                                      "network-interfaces": [dict(n) for n in self._nets.values()]}
            if self._boot is not None:
                config["boot-source"] = dict(self._boot)
            if self._entropy is not None:
                config["entropy"] = dict(self._entropy)
            return config

    # --- pre-boot configuration -------------------------------------------------------
    def _before_start(self) -> None:
        if self.machine is not None:
            raise ApiError(NOT_AFTER_START)

    def _configure(self) -> None:
        self._before_start()
        self._configured = True

    def set_boot_source(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._configure()
            self._boot = body

    def set_machine_config(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._configure()
            self._machine_config = {"smt": False, **body}

    def update_machine_config(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._configure()
            self._machine_config = {**self._machine_config, **body}

    def set_drive(self, drive_id: str, body: dict[str, Any]) -> None:
        body = {"drive_id": drive_id, **body}
        if "path_on_host" not in body:
            raise ApiError(f"drive {drive_id}: missing field path_on_host (pyvisor has no "
                           f"vhost-user block devices)")
        with self._lock:
            self._configure()
            if body["is_root_device"] and any(d["is_root_device"] for i, d in
                                              self._drives.items() if i != drive_id):
                raise ApiError("A root block device already exists!")
            self._drives[drive_id] = body

    def set_network_interface(self, iface_id: str, body: dict[str, Any]) -> None:
        body = {"iface_id": iface_id, **body}
        _net_spec(body, 0)          # a bad name or MAC is refused now, not at InstanceStart
        with self._lock:
            self._configure()
            self._nets[iface_id] = body

    def set_entropy(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._configure()
            self._entropy = body

    # --- start ------------------------------------------------------------------------
    def build_config(self) -> MachineConfig:
        """The MachineConfig the description amounts to (a root drive comes first, as
        vda, and gets Firecracker's root= argument)."""
        if self._boot is None:
            raise ApiError("Cannot start microvm without kernel configuration.")
        drives = self._ordered_drives()
        cmdline = self._boot.get("boot_args", "")
        if drives and drives[0]["is_root_device"]:
            mode = "ro" if drives[0].get("is_read_only") else "rw"
            cmdline = f"{cmdline} root=/dev/vda {mode}".strip()
        nets = [_net_spec(n, index) for index, n in enumerate(self._nets.values())]
        mc = self._machine_config
        return MachineConfig.build(
            self._boot["kernel_image_path"], mem=mc["mem_size_mib"] << 20, cpus=mc["vcpu_count"],
            cmdline=cmdline, initrd=self._boot.get("initrd_path"), console=self.host.console,
            kvm_path=self.host.kvm_path, boot_protocol=self.host.boot_protocol,
            disks=[DiskSpec(d["path_on_host"], bool(d.get("is_read_only")), d["drive_id"][:20])
                   for d in drives],
            nets=nets, rng=self._entropy is not None,
            virtio_transport=self.host.virtio_transport)

    def _ordered_drives(self) -> list[dict[str, Any]]:
        """The drives in the order the guest sees them: the root drive is vda."""
        return sorted(self._drives.values(), key=lambda d: not d["is_root_device"])

    def start(self) -> None:
        """InstanceStart: build the machine and start its vCPUs; every problem building
        it is a 400 with pyvisor's one-line message."""
        with self._lock:
            self._before_start()
            try:
                machine = Machine(self.build_config())
            except PyvisorError as e:
                raise ApiError(str(e)) from None
            self._launch(machine, paused=False)
        self.started.set()

    def _launch(self, machine: Machine, paused: bool) -> None:
        """Start the built machine, under the seccomp filter when asked: installed before
        the vCPUs run, allowing the file opens the API makes later (see seccomp.py); with
        --files-dir, those writes only beneath it (landlock.py)."""
        try:
            if self.host.files_dir is not None:
                _confine_writes(self.host.files_dir)
            if self.host.seccomp:
                seccomp.install(file_writes=True)
            machine.start(paused=paused)
        except BaseException:
            machine.close()
            raise
        self.machine = machine

    def load_snapshot(self, body: dict[str, Any]) -> None:
        """PUT /snapshot/load: a machine from a snapshot file, instead of InstanceStart;
        paused unless resume_vm."""
        snapshot_path = body["snapshot_path"]
        memory = [body["mem_backend"]["backend_path"]] if "mem_backend" in body else []
        memory += [body["mem_file_path"]] if "mem_file_path" in body else []
        if len(memory) != 1:
            raise ApiError("Load snapshot error: give exactly one of mem_backend and "
                           "mem_file_path.")
        with self._lock:
            self._before_start()
            if self._configured:
                raise ApiError("Loading a microVM snapshot not allowed after configuring "
                               "boot-specific resources.")
            _check_same_file(snapshot_path, memory[0])
            try:
                machine = Machine.restore_from(snapshot_path, console=self.host.console,
                                               kvm_path=self.host.kvm_path)
            except PyvisorError as e:
                raise ApiError(f"Load snapshot error: {e}") from None
            self._launch(machine, paused=not body.get("resume_vm", False))
            self._describe(machine.config)
        self.started.set()

    def _describe(self, cfg: MachineConfig) -> None:
        """What GET /vm/config says of a machine loaded from a snapshot."""
        self._boot = {"kernel_image_path": cfg.kernel, "boot_args": cfg.cmdline,
                      **({"initrd_path": cfg.initrd} if cfg.initrd else {})}
        self._machine_config = {"vcpu_count": cfg.cpus, "mem_size_mib": cfg.mem >> 20,
                                "smt": False}
        root = "root=/dev/vda" in cfg.cmdline.split()
        self._drives = {d.serial or f"drive{i}": {
            "drive_id": d.serial or f"drive{i}", "path_on_host": d.path,
            "is_root_device": root and i == 0, "is_read_only": d.readonly}
            for i, d in enumerate(cfg.disks)}
        self._nets = {f"net{i}": {"iface_id": f"net{i}", "host_dev_name": n.tap,
                                  "guest_mac": n.mac.hex(":")} for i, n in enumerate(cfg.nets)}
        self._entropy = {} if cfg.rng else None

    # --- running ----------------------------------------------------------------------
    def _running(self) -> Machine:
        machine = self.machine
        if machine is None:
            raise ApiError(NOT_BEFORE_START)
        if machine.state == "stopped":
            raise ApiError("The microVM has stopped.")
        return machine

    def set_vm_state(self, state: str) -> None:
        machine = self._running()
        machine.pause() if state == "Paused" else machine.resume()

    def send_ctrl_alt_del(self) -> None:
        """As Firecracker: Ctrl, Alt and Delete pressed and released on the i8042's
        keyboard (IRQ 1). Linux then reboots, or signals init when init asked for that
        (kernel.ctrl-alt-del = 0); the reboot ends pyvisor as it ends Firecracker."""
        try:
            self._running().i8042.send_ctrl_alt_del()
        except KeyboardError as e:
            raise ApiError(f"Cannot send Ctrl-Alt-Del: {e}.") from None

    def press_power_button(self) -> None:
        """pyvisor's own action: the ACPI power button, the orderly shutdown request
        Linux's button driver reports (and a wake event from S3)."""
        self._running().acpi_pm.press_power_button()

    def patch_drive(self, drive_id: str, body: dict[str, Any]) -> None:
        """Swap a drive's backing file; the guest is told its new capacity."""
        machine = self._running()
        with self._lock:
            order = [d["drive_id"] for d in self._ordered_drives()]
            if drive_id not in order:
                raise ApiError(f"Unable to patch the block device: drive {drive_id} does not "
                               f"exist.")
            if "path_on_host" not in body:
                return
            disks = [f.device for f in machine.pci_functions if isinstance(f.device, VirtioBlk)]
            try:
                disks[order.index(drive_id)].replace_backing(body["path_on_host"])
            except PyvisorError as e:
                raise ApiError(f"Unable to patch the block device: {e}") from None
            self._drives[drive_id] = {**self._drives[drive_id],
                                      "path_on_host": body["path_on_host"]}

    def create_snapshot(self, body: dict[str, Any]) -> None:
        """PUT /snapshot/create: the paused machine to snapshot_path. pyvisor keeps guest
        memory inside that one file; mem_file_path becomes a second name (a hard link)
        for it, so a Firecracker client's later load names the same file twice."""
        machine = self._running()
        if machine.state != "paused":
            raise ApiError('Create snapshot error: the microVM must be paused first '
                           '(PATCH /vm {"state": "Paused"}).')
        snapshot_path, memory_path = body["snapshot_path"], body["mem_file_path"]
        try:
            machine.save(snapshot_path)
        except PyvisorError as e:
            raise ApiError(f"Create snapshot error: {e}") from None
        if os.path.abspath(memory_path) == os.path.abspath(snapshot_path):
            return
        staged = f"{memory_path}.tmp{os.getpid()}"
        try:
            os.link(snapshot_path, staged)
            os.replace(staged, memory_path)
        except OSError as e:
            if os.path.lexists(staged):
                os.unlink(staged)
            raise ApiError(f"Create snapshot error: cannot make {memory_path} a name for "
                           f"{snapshot_path} ({e.strerror}): pyvisor keeps guest memory in "
                           f"the snapshot file, so mem_file_path must be on its file "
                           f"system (and, under --files-dir, in its directory)") from None

    def stats(self) -> dict[str, Any]:
        stats = self._started_machine().stats
        return {"exits": stats.exits, "ports": {f"{p:#x}": n for p, n in stats.ports.items()},
                "mmio": stats.mmio, "native_exits": stats.native_exits,
                "interrupted": stats.interrupted, "kvm_run_seconds": stats.kvm_run_seconds,
                "pyvisor_seconds": stats.pyvisor_seconds,
                "handled_seconds": stats.handled_seconds, "coalesced": stats.coalesced}

    def console(self) -> dict[str, Any]:
        output = self._started_machine().console_output[-CONSOLE_TAIL:]
        return {"output": output.decode("utf-8", "replace")}

    def _started_machine(self) -> Machine:
        if self.machine is None:
            raise ApiError(NOT_BEFORE_START)
        return self.machine


def _net_spec(iface: dict[str, Any], index: int) -> NetSpec:
    spec = f"tap={iface['host_dev_name']}" + (f",mac={iface['guest_mac']}"
                                               if "guest_mac" in iface else "")
    try:
        return NetSpec.parse(spec, index)
    except PyvisorError as e:
        raise ApiError(f"network interface {iface['iface_id']}: {e}") from None


def _confine_writes(files_dir: str) -> None:
    """Every thread writes only beneath files_dir from now on, as Firecracker's jailer
    keeps it in a chroot; an ApiError if that cannot be had."""
    from ..sandbox import landlock

    try:
        fd = os.open(files_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ApiError(f"--files-dir {files_dir}: {e.strerror}") from None
    try:
        refused = landlock.install(fd)
    finally:
        os.close(fd)
    if refused is not None:
        raise ApiError(f"--files-dir {files_dir} cannot be enforced: {refused}")


def _check_same_file(snapshot_path: str, memory_path: str) -> None:
    """A load names the memory file its create named: the snapshot file itself."""
    try:
        same = os.path.samefile(snapshot_path, memory_path)
    except OSError as e:
        raise ApiError(f"Load snapshot error: {e.filename}: {e.strerror}") from None
    if not same:
        raise ApiError(f"Load snapshot error: {memory_path} is not the memory of "
                       f"{snapshot_path}: pyvisor keeps guest memory in the snapshot file "
                       f"(PUT /snapshot/create makes mem_file_path a second name for it)")
