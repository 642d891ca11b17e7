#!/bin/sh
# Runs inside the VM (see vm.py): the guest suite against this repository's .venv.
# Extra pytest arguments come from /tmp/vmresults/pytest-args (one line, split
# on spaces), a -k expression from /tmp/vmresults/pytest-k (kept whole).
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
export PYTHONDONTWRITEBYTECODE=1 HOME=/root PATH="$REPO/.venv/bin:$PATH"
ARGS=$(cat /tmp/vmresults/pytest-args 2>/dev/null)
K=$(cat /tmp/vmresults/pytest-k 2>/dev/null)
# The backends to test, one module-scoped agent each (conftest.py BACKENDS)
VM_BACKENDS=$(cat /tmp/vmresults/backends 2>/dev/null)
[ -n "$VM_BACKENDS" ] && export VM_BACKENDS
# Where the kernel's tmpfs has no filesystem id (before 5.13), the tests' files
# go on the ext4 scratch disk vm.py attaches, so watch mode can mark them.
BASETEMP=""
if [ "$("$REPO/.venv/bin/python" -c 'import os; print(os.statvfs("/tmp").f_fsid)')" = 0 ]; then
    modprobe virtio_blk; modprobe ext4
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
    mkdir -p /tmp/scratch && mount -t ext4 /dev/vda /tmp/scratch && BASETEMP=--basetemp=/tmp/scratch/pytest
    mkdir -p /tmp/scratch/tmp && export TMPDIR=/tmp/scratch/tmp
fi
echo "guest: kernel $(uname -r), repo $REPO, backends: ${VM_BACKENDS:-(default)}, args: $ARGS, -k: ${K:-(all)}, ${BASETEMP:-tmp on /tmp}"
# shellcheck disable=SC2086
"$REPO/.venv/bin/python" -m pytest -c tests/vm/guest/pytest.ini --rootdir tests/vm/guest \
    --junitxml=/tmp/vmresults/junit.xml -v -s $BASETEMP ${K:+-k "$K"} $ARGS tests/vm/guest
