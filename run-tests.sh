#!/usr/bin/env bash
# The whole test suite: unit, collector end-to-end, host (tracepoint backend on
# this kernel) and VM (fentry/kprobe backends on Debian's kernel under qemu).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --test
exec .venv/bin/python -m pytest -v "$@" tests
