# Developer shortcuts; CI runs .ci/run, which uses the same commands.
PY ?= python

.PHONY: build test lint typecheck sanitize tsan stress-quick stress-tough bench clean

build:            ## rebuild the C core in place after editing shmring/_core.c or its headers
	$(PY) setup.py -q build_ext --inplace

test: build       ## the README's test command
	$(PY) -m pytest -q

lint:
	ruff check shmring tests stress
	ruff format --check shmring tests stress

typecheck:
	$(PY) -m mypy
	$(PY) -m mypy.stubtest shmring._core --mypy-config-file pyproject.toml

sanitize:         ## the suite against an ASan+UBSan build of the core
	scripts/sanitize.sh

tsan:             ## the ring protocols between threads under ThreadSanitizer (no Python)
	scripts/tsan.sh

stress-quick:
	$(PY) -m stress --quick

stress-tough:
	$(PY) -m stress --tough

bench:
	shmring bench

clean:
	rm -rf build *.egg-info shmring/*.so
