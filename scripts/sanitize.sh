#!/usr/bin/env bash
# Build shmring._core with AddressSanitizer + UndefinedBehaviorSanitizer in a
# scratch copy of the tree and run the test suite against it.
#   scripts/sanitize.sh [pytest args...]     (default: the whole suite but slow tests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/shmring-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Copy the tracked tree (plus uncommitted edits) without the normal build.
(cd "$here" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$work" -xf -
cd "$work"
flags="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1"
SHMRING_CFLAGS="$flags" SHMRING_LDFLAGS="-fsanitize=address,undefined,float-cast-overflow" \
    python setup.py -q build_ext --inplace 2>&1 | grep -v -i "warn" || true
test -f shmring/_core*.so

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Python's allocator keeps memory until exit on purpose: leak reports would be
# noise, so leaks are off; everything else aborts the process (and fails the test).
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
python -c "import shmring._core as c; assert c.__file__.startswith('$work'), c.__file__"
if [ $# -eq 0 ]; then set -- -m "not slow" -q -p no:cacheprovider; fi
python -m pytest "$@" tests
echo "sanitized test run passed (ASan+UBSan)"
