#!/usr/bin/env bash
# The C core's ring protocols under ThreadSanitizer, without Python: the
# harness must pass as built, and must be caught (a TSan report or a torn
# item) when a release store is weakened.  Run by CI; `make tsan`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/shmring-tsan.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc=${CC:-cc}
for harness in "$here"/tests/tsan/*_tsan.c; do
    name=$(basename "$harness" .c)
    "$cc" -std=gnu11 -O1 -g -fsanitize=thread -Wall -Wextra -Wno-unused-function -Wno-tsan \
        -I "$here/shmring" "$harness" -o "$work/$name" -lpthread
    echo "== $name"
    TSAN_OPTIONS="halt_on_error=1 exitcode=66" timeout 300 "$work/$name"
    # each harness names the broken variants it must catch
    for variant in $(sed -n 's/^ \* broken-variants: //p' "$harness"); do
        if SHMRING_BROKEN=$variant TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_bugs=1" \
            timeout 300 "$work/$name" >"$work/$variant.log" 2>&1; then
            echo "$name: the broken variant $variant was NOT caught"; exit 1
        fi
        if grep -q "WARNING: ThreadSanitizer: data race" "$work/$variant.log"; then how="a data race report"
        else how="a torn or stale item"; fi
        echo "$name: broken variant $variant caught ($how)"
    done
done
echo "tsan: every protocol clean, every broken variant caught"
