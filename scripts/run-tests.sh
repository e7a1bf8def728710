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

echo "== fuzzing the request parser and the record encoder =="
[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true >/dev/null
ninja -C build-fuzz tests/fuzz-request tests/fuzz-json-encode >/dev/null
bash tests/run-fuzz.sh build-fuzz 30 || status=1

/usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for path in sys.argv[1:]:
    try:
        lines = open(path).readlines()
    except OSError:
        continue
    for line in lines:
        result = json.loads(line).get("result")
        key = {"OK": "passed", "EXPECTEDFAIL": "passed", "SKIP": "skipped"}.get(result, "failed")
        counts[key] += 1
print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
PY
exit $status
