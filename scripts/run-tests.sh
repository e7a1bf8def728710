#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install dependencies, build, and run every test suite: unit tests, the
# merger simulation, the end-to-end tests on the running kernel, the service
# tests, the AddressSanitizer/UBSan build and a bounded fuzzing run.
# Fails if any test of the kernel suites was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh

status=0
run_suites() {
	local dir=$1
	shift
	meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" || status=1
}

echo "== unit and kernel suites =="
run_suites build --suite unit --suite kernel

# A skipped kernel test proves nothing: treat it as a failure.
skipped=$(/usr/bin/python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
names = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    if "kernel" in " ".join(t.get("suite", [])) and t.get("result") == "SKIP":
        names.append(t["name"])
print(" ".join(names))
PY
)
if [ -n "$skipped" ]; then
	echo "FAIL: kernel tests were skipped: $skipped" >&2
	status=1
fi

echo "== unit suite under AddressSanitizer and UndefinedBehaviorSanitizer =="
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined \
	-Db_lundef=false >/dev/null
ninja -C build-asan >/dev/null
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	run_suites build-asan --suite unit

if [ -x tests/run-fuzz.sh ] || [ -f tests/run-fuzz.sh ]; then
	echo "== fuzzing the request parser =="
	bash tests/run-fuzz.sh || status=1
fi

exit $status
