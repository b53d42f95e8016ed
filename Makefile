# powernode developer entry points. `make test` is the one test command (.ci/run calls it);
# it installs what it needs — the venv, the package with its dev extras, Debian packages — only
# when missing or out of date.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Debian packages the tests and tools use: psql/pg_isready, rsync (filter rules are tested against
# it), fsverity, the Distribution registry,
# skopeo (the supply-chain tests run against both), mkfs.erofs (EROFS module images), socat (qemu
# guestfwd) and busybox-static (the guest of the qemu boot test); for boot images and the qemu
# provider: mmdebstrap (with uidmap for unshare mode, qemu-user-static + binfmt-support +
# arch-test for arm64 on amd64), cpio, zstd, the disk/ISO tools, QEMU and its UEFI firmware.
# Without root we only say what is missing.
DEB_PACKAGES ?= postgresql-client rsync fsverity docker-registry skopeo erofs-utils socat busybox-static e2fsprogs fdisk dosfstools mtools grub-common grub-efi-amd64-bin grub-pc-bin xorriso qemu-utils mmdebstrap uidmap cpio zstd qemu-system-x86 qemu-system-arm ovmf qemu-efi-aarch64 qemu-user-static binfmt-support arch-test

POWERNODE_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export POWERNODE_TEST_POSTGRES_URL

DEMO_DIR := $(CURDIR)/.demo
PYTEST_ARGS ?=

.PHONY: setup venv deb-packages binfmt postgres test demo lint bench clean distclean

setup: deb-packages binfmt $(STAMP)

venv: $(STAMP)

$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "powernode needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --quiet -e '.[dev]'
	touch $@

deb-packages:
	@if ! command -v dpkg >/dev/null 2>&1; then \
		echo "dpkg not found: make sure these are installed: $(DEB_PACKAGES)"; exit 0; \
	fi; \
	missing=""; \
	for pkg in $(DEB_PACKAGES); do \
		dpkg -s "$$pkg" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "missing Debian packages (optional):$$missing"; \
		echo "  install them with: sudo apt-get install$$missing"; \
	fi

# arm64 images are built on amd64 through qemu-user: binfmt_misc must be mounted and the
# qemu-aarch64 handler enabled (as root; `arch-test arm64` says whether it works).
binfmt:
	@if [ "$$(id -u)" = 0 ] && command -v update-binfmts >/dev/null 2>&1; then \
		[ -e /proc/sys/fs/binfmt_misc/status ] || \
			mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true; \
		update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true; \
	fi

# The PostgreSQL cases fail rather than skip when their server does not answer; for the default
# server (this machine's, on loopback) make sure it is installed and running first.
postgres:
	@case "$(POWERNODE_TEST_POSTGRES_URL)" in \
		postgresql://postgres@127.0.0.1:5432/*) scripts/ensure-postgres.sh ;; \
		*) ;; \
	esac

test: setup postgres
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: setup
	DEMO_DIR=$(DEMO_DIR) VENV=$(VENV) scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(VENV_PY) benchmarks/bench_api.py
	$(VENV_PY) benchmarks/bench_select.py
	$(VENV_PY) benchmarks/bench_preview.py
	$(VENV_PY) benchmarks/bench_verity.py
	$(VENV_PY) benchmarks/bench_events.py
	$(VENV_PY) benchmarks/bench_nodes.py
	$(VENV_PY) benchmarks/bench_activation.py
	$(VENV_PY) benchmarks/bench_images.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache build dist .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) src/*.egg-info
