#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run the built libFuzzer targets, each for a bounded time. Builds nothing.
#
# usage: tests/run-fuzz.sh [BUILD_DIR [SECONDS [TARGET]]]
#   BUILD_DIR  a build configured with CC=clang and -Dfuzz=true (default: build-fuzz)
#   SECONDS    fuzzing time per target (default: 60)
#   TARGET     request, json-encode or all (default: all)
#
# The seeds in tests/fuzz-corpus/TARGET are only read: libFuzzer writes the
# inputs it finds into a temporary corpus. A crashing input is kept in that
# directory, whose path is printed. Exits non-zero if any target failed.
set -eu

src_dir=$(cd "$(dirname "$0")" && pwd)
build_dir=${1:-build-fuzz}
seconds=${2:-60}
target=${3:-all}

case "$seconds" in
''|*[!0-9]*)
	echo "run-fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2
	exit 2
	;;
esac

case "$target" in
all) targets="request json-encode" ;;
request|json-encode) targets=$target ;;
*)
	echo "run-fuzz.sh: TARGET must be request, json-encode or all, got '$target'" >&2
	exit 2
	;;
esac

for t in $targets; do
	if [ ! -x "$build_dir/tests/fuzz-$t" ]; then
		echo "run-fuzz.sh: $build_dir/tests/fuzz-$t not found; build it first:" >&2
		echo "  CC=clang meson setup $build_dir -Dfuzz=true && ninja -C $build_dir tests/fuzz-$t" >&2
		exit 2
	fi
done

failed=0
for t in $targets; do
	work_dir=$(mktemp -d "${TMPDIR:-/tmp}/tcptap-fuzz-$t.XXXXXX")
	mkdir "$work_dir/corpus"
	echo "run-fuzz.sh: fuzzing $t for ${seconds}s; corpus and crash inputs in $work_dir"

	# The request target gets the grammar's tokens, and inputs past
	# REQUEST_MAX_BYTES (4096) so the length check is reached.
	set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$work_dir/"
	if [ "$t" = request ]; then
		set -- "$@" -max_len=4200 -dict="$src_dir/fuzz-corpus/request.dict"
	fi

	status=0
	"$build_dir/tests/fuzz-$t" "$@" "$work_dir/corpus" "$src_dir/fuzz-corpus/$t" || status=$?

	if [ "$status" -eq 0 ]; then
		rm -rf "$work_dir"
		echo "run-fuzz.sh: $t: no failure found in ${seconds}s"
	else
		echo "run-fuzz.sh: $t: fuzzer failed with status $status; inputs kept in $work_dir" >&2
		failed=1
	fi
done
exit "$failed"
