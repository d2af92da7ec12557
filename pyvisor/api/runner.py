"""`pyvisor serve` and `pyvisor run --api-sock / --config-file`: the main thread's side.

The API threads build and start the machine (InstanceStart); the main thread waits for
that, then for the guest to stop, and turns signals and the time limit into the Outcome,
as `pyvisor run` does. Like Firecracker, pyvisor ends when its guest does."""
from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

from ..errors import PyvisorError
from ..machine.machine import Machine
from ..machine.outcome import TIMEOUT_STATUS, Outcome, signalled
from .config_file import load_config_file
from .faults import ApiError
from .instance import HostOptions, Instance
from .routes import Router
from .server import ApiServer

_SLICE = 0.1


def serve(api_sock: str | None, config_file: str | None, host: HostOptions,
          kernel: dict | None = None, timeout: float | None = None,
          instance_id: str = "anonymous-instance", on_notice=print) -> Outcome:
    """Describe the instance (config file, then a kernel from the command line), serve
    the API if asked, start at once when described, and run until the guest stops.
    kernel: {"kernel_image_path", "boot_args", "initrd_path", "vcpu_count", "mem_size_mib"}."""
    instance = Instance(instance_id, host)
    if config_file is not None:
        load_config_file(instance, config_file)
    if kernel is not None:
        instance.set_boot_source({k: kernel[k] for k in ("kernel_image_path", "boot_args",
                                                         "initrd_path") if kernel.get(k) is not None})
        instance.set_machine_config({"vcpu_count": kernel["vcpu_count"],
                                     "mem_size_mib": kernel["mem_size_mib"]})
    signals: list[int] = []
    previous = {s: signal.signal(s, lambda signo, _f: signals.append(signo))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as stack:
            # Registered first, so run last: the API is gone before the machine closes.
            stack.callback(lambda: instance.machine is not None and instance.machine.close())
            deadline = None if timeout is None else time.monotonic() + timeout
            # Bound before the start (the seccomp filter then forbids making the socket),
            # served after it, so that the first request sees the machine running.
            server = None if api_sock is None else ApiServer(api_sock, Router(instance))
            if server is not None:
                stack.callback(server.close)
            if host.files_dir is not None:
                _check_files_dir(host.files_dir)
            if config_file is not None or kernel is not None:
                try:
                    instance.start()
                except ApiError as e:
                    raise PyvisorError(str(e)) from None
            if server is not None:
                server.start()
                on_notice(f"pyvisor: API on {api_sock}")
            while not instance.started.wait(_SLICE):
                if signals:
                    return signalled(signals[0])
                if deadline is not None and time.monotonic() >= deadline:
                    return Outcome("timeout", TIMEOUT_STATUS, "nothing started the guest "
                                   "before --timeout")
            return _run(instance.machine, signals, deadline)
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)


def _check_files_dir(files_dir: str) -> None:
    """--files-dir is refused before anything is served where it could not be enforced
    at InstanceStart (Instance.start confines the writes then)."""
    from ..sandbox import landlock

    if not os.path.isdir(files_dir):
        raise PyvisorError(f"--files-dir {files_dir}: no such directory")
    refused = landlock.unavailable(landlock.abi_version())
    if refused is not None:
        raise PyvisorError(f"--files-dir cannot be enforced: {refused}")


def _run(machine: Machine, signals: list[int], deadline: float | None) -> Outcome:
    while True:
        if signals:
            outcome = signalled(signals[0])
            machine.stop(outcome.kind, outcome.status, outcome.detail)
        elif deadline is not None and time.monotonic() >= deadline:
            machine.stop("timeout", TIMEOUT_STATUS, "the guest was still running at --timeout")
        outcome = machine.wait(_SLICE, events=False)
        if outcome is not None:
            return outcome

