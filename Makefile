# pyvisor: the two commands a user needs are `make run` and `make test`; both set up
# what they need first (a .venv with pyvisor installed editable, the guest kernels).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYVISOR := $(VENV)/bin/pyvisor
STAMP := $(VENV)/.installed
# Extra arguments, e.g. `make run RUN_ARGS="--mem 1G --cpus 2"` or `make test PYTEST_ARGS=-x`.
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup guests run run-linux test test-nested nested-soak bench bench-linux bench-virtio bench-snapshot fuzz check clean

# editable_mode=compat: a plain path in a .pth file; the default editable finder costs
# every start of Python an import of pathlib and urllib (0.4 s in the nested test host).
# bin/pyvisor is copied into the venv, not linked: a change to it needs a reinstall.
# No setuptools in the venv (Python 3.11's venv brings one; the build gets its own): its
# distutils-precedence.pth imports a module at every start of Python (25 ms in L1).
$(STAMP): pyproject.toml setup.py bin/pyvisor native/build_native.py native/shim.c native/shim.h \
          native/build_uring.py native/uring.c native/uring.h native/io_pool.c native/io_pool.h \
          native/blk_ring.c native/blk_ring.h \
          native/landlock_threads.c native/landlock_threads.h
	@command -v gcc >/dev/null || { echo "pyvisor: gcc is needed (apt-get install gcc)"; exit 1; }
	@test -e /usr/include/linux/kvm.h || { echo "pyvisor: <linux/kvm.h> is needed (apt-get install linux-libc-dev)"; exit 1; }
	test -x $(PY) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip uninstall -q -y setuptools; }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat
	touch $@

setup: $(STAMP)

guests:
	$(MAKE) -C guests

run: setup guests
	$(PYVISOR) run guests/out/shell.elf $(RUN_ARGS)

# A stock Debian kernel and a busybox initramfs, booted to a shell (needs VT-x or AMD-V).
run-linux: setup
	$(PY) tools/run_linux.py $(RUN_ARGS)

test: setup guests
	$(PY) -m pytest $(PYTEST_ARGS)

# Stock Linux guests inside the nested test host (QEMU TCG with SVM; see tests/nested).
# Installs QEMU, busybox-static and lz4 with apt-get when missing (needs root).
test-nested: setup guests
	$(PY) -m pytest -m nested tests/nested $(PYTEST_ARGS)

# How often the nested test host wedges, and its speed, over N sessions per L1 QEMU
# (SOAK_ARGS="--sessions 30 --qemu 7.2 --qemu 10"; see tests/nested/soak.py).
SOAK_ARGS ?=
nested-soak: setup
	$(PY) tests/nested/soak.py $(SOAK_ARGS)

bench: setup guests
	$(PY) bench/pio_exits.py
	$(PY) bench/startup.py
	$(PY) bench/memory_overhead.py

# Linux boot-to-init against QEMU, in the nested test host (BENCH_ARGS="--verbose --cpus 2").
BENCH_ARGS ?=
bench-linux: setup
	$(PY) bench/linux_boot.py $(BENCH_ARGS)

# In-place snapshot reset against a C reset loop, and snapshot file save/restore figures.
bench-snapshot: setup guests
	$(PY) bench/snapshot.py $(BENCH_ARGS)

# virtio-blk MB/s and IOPS against QEMU's virtio-blk-pci, in the nested test host.
bench-virtio: setup
	$(PY) bench/virtio_blk.py $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris) of what a guest or a kernel file controls: cases per
# second per target and the total (FUZZ_ARGS="--seconds 600 virtqueue virtio_blk"; see fuzz/).
FUZZ_ARGS ?=
fuzz: setup
	$(PY) -m fuzz.run $(FUZZ_ARGS)

check: setup
	$(PYVISOR) check

clean:
	$(MAKE) -C guests clean
	rm -rf build pyvisor/_native*.so pyvisor/_native.c bench/out .pytest_cache
