#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run the request-parser fuzzer, already built, for a bounded time.
#
# usage: tests/run-fuzz.sh [BUILD_DIR [SECONDS]]
#   BUILD_DIR  a build configured with CC=clang and -Dfuzz=true (default: build-fuzz)
#   SECONDS    total fuzzing time (default: 60)
#
# The seeds in tests/fuzz-corpus/request are only read: libFuzzer writes the
# inputs it finds into a temporary corpus, and a crashing input is kept in
# that directory, whose path is printed. Exits with the fuzzer's status.
set -eu

src_dir=$(cd "$(dirname "$0")" && pwd)
build_dir=${1:-build-fuzz}
seconds=${2:-60}
fuzzer="$build_dir/tests/fuzz-request"

case "$seconds" in
''|*[!0-9]*)
	echo "run-fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2
	exit 2
	;;
esac

if [ ! -x "$fuzzer" ]; then
	echo "run-fuzz.sh: $fuzzer not found; build it first:" >&2
	echo "  CC=clang meson setup $build_dir -Dfuzz=true && ninja -C $build_dir tests/fuzz-request" >&2
	exit 2
fi

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/tcptap-fuzz.XXXXXX")
mkdir "$work_dir/corpus"
echo "run-fuzz.sh: fuzzing for ${seconds}s; corpus and crash inputs in $work_dir"

# -max_len goes past REQUEST_MAX_BYTES (4096) so the length check is reached.
status=0
"$fuzzer" \
	-max_total_time="$seconds" \
	-timeout=10 \
	-rss_limit_mb=2048 \
	-max_len=4200 \
	-dict="$src_dir/fuzz-corpus/request.dict" \
	-artifact_prefix="$work_dir/" \
	"$work_dir/corpus" "$src_dir/fuzz-corpus/request" || status=$?

if [ "$status" -eq 0 ]; then
	rm -rf "$work_dir"
	echo "run-fuzz.sh: no failure found in ${seconds}s"
else
	echo "run-fuzz.sh: fuzzer failed with status $status; inputs kept in $work_dir" >&2
fi
exit "$status"
