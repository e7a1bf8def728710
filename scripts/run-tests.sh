#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install dependencies, build, and run every test suite: unit tests, the
# merger simulation, the end-to-end tests on the running kernel, the service
# tests, the Debian package build, the AddressSanitizer/UBSan build and a
# bounded fuzzing run, and the end-to-end tests once more against the
# sanitized build.
# Fails if any test of the kernel suites was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh

status=0
# run_suites BUILD_DIR LOGBASE MESON_TEST_ARGS...: each run keeps its own
# BUILD_DIR/meson-logs/LOGBASE.json for the checks and the summary below.
run_suites() {
	local dir=$1 logbase=$2
	shift 2
	meson test -C "$dir" --print-errorlogs --num-processes 1 --logbase "$logbase" "$@" ||
		status=1
}

echo "== unit and kernel suites =="
run_suites build main --suite unit --suite kernel

# A skipped kernel test proves nothing: treat it as a failure, and so is a
# core end-to-end test that did not run at all.
/usr/bin/python3 - build/meson-logs/main.json <<'PY' || status=1
import json, sys
core = {"e2e-connections", "e2e-startup", "e2e-accept-before-start", "e2e-stall", "e2e-migrate",
        "e2e-resume", "e2e-clients", "e2e-dump-stats", "e2e-lost", "service", "socket-path"}
ran, skipped = set(), []
for line in open(sys.argv[1]):
    t = json.loads(line)
    name = t["name"].split(" / ")[-1]
    if t.get("result") == "SKIP" and "kernel" in " ".join(t.get("suite", [])):
        skipped.append(name)
    elif t.get("result") == "OK":
        ran.add(name)
missing = sorted(core - ran)
if skipped:
    print("FAIL: kernel tests were skipped: " + " ".join(skipped), file=sys.stderr)
if missing:
    print("FAIL: core end-to-end tests did not pass: " + " ".join(missing), file=sys.stderr)
sys.exit(1 if skipped or missing else 0)
PY

echo "== Debian package build and lintian =="
run_suites build package --suite package

echo "== unit suite under AddressSanitizer and UndefinedBehaviorSanitizer =="
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined \
	-Db_lundef=false >/dev/null
ninja -C build-asan >/dev/null
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	run_suites build-asan asan --suite unit

# The end-to-end tests again, against the sanitized tcptapd and tcptap. The
# quarantine of freed memory is off because e2e-clients checks that the
# daemon's RSS stays flat. The service test is left out: the unit's system
# call filter rejects system calls the sanitizer runtime makes.
echo "== kernel suite under AddressSanitizer and UndefinedBehaviorSanitizer =="
ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	run_suites build-asan asan-kernel e2e-connections e2e-accept-before-start e2e-stall \
	e2e-migrate e2e-startup e2e-resume e2e-clients e2e-dump-stats e2e-lost socket-path caps

echo "== fuzzing the request parser and the record encoder =="
[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true >/dev/null
ninja -C build-fuzz tests/fuzz-request tests/fuzz-json-encode >/dev/null
bash tests/run-fuzz.sh build-fuzz 30 || status=1

/usr/bin/python3 - build/meson-logs/main.json build/meson-logs/package.json \
	build-asan/meson-logs/asan.json build-asan/meson-logs/asan-kernel.json <<'PY'
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
