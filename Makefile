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

.PHONY: setup guests run test bench check clean

$(STAMP): pyproject.toml setup.py native/build_native.py native/shim.c native/shim.h
	@command -v gcc >/dev/null || { echo "pyvisor: gcc is needed (apt-get install gcc)"; exit 1; }
	@test -e /usr/include/linux/kvm.h || { echo "pyvisor: <linux/kvm.h> is needed (apt-get install linux-libc-dev)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(STAMP)

guests:
	$(MAKE) -C guests

run: setup guests
	$(PYVISOR) run guests/out/shell.elf $(RUN_ARGS)

test: setup guests
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup guests
	$(PY) bench/pio_exits.py

check: setup
	$(PYVISOR) check

clean:
	$(MAKE) -C guests clean
	rm -rf build pyvisor/_native*.so pyvisor/_native.c bench/out .pytest_cache
