#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install dependencies, build, start tcptapd and show a live `tcptap watch` of
# the machine's TCP connections. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh

socket=${TCPTAP_SOCKET:-/run/tcptap/tcptapd.sock}
log=$(mktemp /tmp/tcptapd.XXXXXX.log)
./build/daemon/tcptapd --socket "$socket" --log-level info 2>"$log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; echo "tcptapd log: $log" >&2' EXIT

# The daemon serves once its programs are attached and the table is seeded. A
# socket file alone proves nothing, because it may be a stale one that the
# daemon is about to replace.
ready=false
for _ in $(seq 1 200); do
	if ./build/cmd/tcptap stats --socket "$socket" >/dev/null 2>&1; then
		ready=true
		break
	fi
	if ! kill -0 "$daemon" 2>/dev/null; then
		break
	fi
	sleep 0.1
done
if [ "$ready" != true ]; then
	echo "tcptapd did not start:" >&2
	cat "$log" >&2
	exit 1
fi
echo "tcptapd log: $log" >&2
sed 's/^<[0-9]>//' "$log" >&2
./build/cmd/tcptap watch --socket "$socket"
