#!/bin/sh
# Runs inside the VM (see vm.py): the guest suite against this repository's .venv.
# Extra pytest arguments come from /tmp/vmresults/pytest-args (one line, split
# on spaces), a -k expression from /tmp/vmresults/pytest-k (kept whole).
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2
export PYTHONDONTWRITEBYTECODE=1 HOME=/root PATH="$REPO/.venv/bin:$PATH"
ARGS=$(cat /tmp/vmresults/pytest-args 2>/dev/null)
K=$(cat /tmp/vmresults/pytest-k 2>/dev/null)
echo "guest: kernel $(uname -r), repo $REPO, args: $ARGS, -k: ${K:-(all)}"
# shellcheck disable=SC2086
"$REPO/.venv/bin/python" -m pytest -c tests/vm/guest/pytest.ini --rootdir tests/vm/guest \
    --junitxml=/tmp/vmresults/junit.xml -v -s ${K:+-k "$K"} $ARGS tests/vm/guest
