#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The VM suite's checks. Once the guest has booted, its autorun unit runs this file as
# /mnt/share/run.sh, as root, with systemd as PID 1. The output and exit status go back to the
# host through the shared folder.
#
# 1. The guest is what the suite claims: systemd PID 1, a kernel with kprobes and BTF.
# 2. The tcptap package installs with dpkg -i (its dependencies are in the image).
# 3. tcptapd.service reaches active through Type=notify and reports a status text, and its
#    socket has the contract's mode and group. After a restart and after a stop, no BPF
#    program, link or map of the old daemon remains. With the service stopped, tcptapd.socket
#    starts it on the first client connection.
# 4. tcptapd run by hand on a private socket loads and attaches each backend (kprobe, fentry,
#    tracepoint); --backend auto picks one and logs why it rejected each other one.
# 5. guest-backends.py runs the end-to-end tests under each backend and compares the records
#    of the three backends.
set -uo pipefail

SHARE=/mnt/share
OUT=$SHARE/out
WORK=/run/tcptap-vm
TOOL="python3 $SHARE/vm/guest-tool.py"
BACKENDS=(kprobe fentry tracepoint)
PACKAGE_SOCKET=/run/tcptap/tcptapd.sock
PACKAGE_SOCKET_MODE_GROUP="660 tcptap"
# Loading and verifying the BPF programs is slow under TCG, so these bounds are generous.
START_TIMEOUT_S=90
STOP_TIMEOUT_S=20
BPF_GONE_TIMEOUT_S=10
LOG_TAIL_LINES=80

passed=0
failures=()
TCPTAPD=
DAEMON_PID=
HELLO=
STOP_STATUS=

pass() {
	echo "PASS: $1"
	passed=$((passed + 1))
}

fail() {
	echo "FAIL: $1"
	echo "  expected: $2"
	echo "  actual:   $3"
	failures+=("$1")
}

check_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

section() {
	echo
	echo "== $* (guest uptime $(cut -d' ' -f1 /proc/uptime) s)"
}

show_log_tail() {
	echo "---- $1, last $LOG_TAIL_LINES lines (full log in the share: ${1#"$SHARE"/}) ----"
	tail -n "$LOG_TAIL_LINES" "$1"
	echo "---- end of $1 ----"
}

json_field() {
	python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"
}

check_environment() {
	section "guest environment"
	echo "kernel $(uname -r), $(nproc) CPUs, lockdown: $(cat /sys/kernel/security/lockdown 2>/dev/null || echo n/a)"
	check_eq "PID 1 is systemd" systemd "$(cat /proc/1/comm)"
	check_eq "kprobes available (kprobe_events in tracefs)" yes \
		"$([ -e /sys/kernel/tracing/kprobe_events ] && echo yes || echo no)"
	check_eq "kernel BTF available" yes "$([ -r /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
}

install_tcptap() {
	local debs=("$SHARE"/tcptap_*.deb) out rc

	section "install tcptap"
	if [ ! -f "${debs[0]}" ]; then
		fail "tcptap package staged in the share" "$SHARE/tcptap_*.deb" "missing"
		return 1
	fi
	out=$(dpkg -i "${debs[@]}" 2>&1)
	rc=$?
	echo "$out"
	check_eq "dpkg -i ${debs[*]##*/}" 0 "$rc"
	TCPTAPD=$(command -v tcptapd)
	check_eq "tcptapd installed by the package" /usr/sbin/tcptapd "$TCPTAPD"
	[ -x "$TCPTAPD" ] || return 1
	out=$("$TCPTAPD" --version 2>&1)
	rc=$?
	check_eq "tcptapd --version exits 0 ($out)" 0 "$rc"
}

# Start tcptapd on $WORK/$1.sock with the remaining arguments, log to $OUT/tcptapd-$1.log and
# wait for its hello, stored in HELLO. Sets DAEMON_PID; returns 1 if no hello came.
start_daemon() {
	local label=$1
	shift

	"$TCPTAPD" --socket "$WORK/$label.sock" "$@" >"$OUT/tcptapd-$label.log" 2>&1 &
	DAEMON_PID=$!
	HELLO=$($TOOL hello "$WORK/$label.sock" "$START_TIMEOUT_S" "$DAEMON_PID")
}

# Stop the daemon started by start_daemon with SIGTERM and set STOP_STATUS to its exit status
# (137 if it had to be killed after STOP_TIMEOUT_S).
stop_daemon() {
	local i

	kill -TERM "$DAEMON_PID" 2>/dev/null
	for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$DAEMON_PID" 2>/dev/null; then
		echo "tcptapd pid $DAEMON_PID still runs $STOP_TIMEOUT_S s after SIGTERM, killing it"
		kill -KILL "$DAEMON_PID"
	fi
	wait "$DAEMON_PID"
	STOP_STATUS=$?
}

check_backend_loads() {
	local backend=$1 log="$OUT/tcptapd-$1.log" owned

	section "tcptapd --backend $backend by hand"
	if ! start_daemon "$backend" --backend "$backend" --log-level debug; then
		stop_daemon
		fail "tcptapd --backend $backend sends a hello" "a hello within $START_TIMEOUT_S s" \
			"none (exit status $STOP_STATUS)"
		show_log_tail "$log"
		return
	fi
	check_eq "hello's backend with --backend $backend" "$backend" "$(json_field "$HELLO" backend)"
	if grep -q "Using backend '$backend' (--backend $backend)" "$log"; then
		pass "log names the backend"
	else
		fail "log names the backend" "Using backend '$backend' (--backend $backend)" \
			"$(grep -i backend "$log" | tail -n 3)"
	fi
	owned=$($TOOL bpf-owned "$DAEMON_PID")
	echo "BPF objects of tcptapd --backend $backend: $owned"
	stop_daemon
	check_eq "tcptapd --backend $backend exit status after SIGTERM" 0 "$STOP_STATUS"
}

check_auto_backend() {
	local log="$OUT/tcptapd-auto.log" chosen b reason

	section "tcptapd --backend auto"
	if ! start_daemon auto --backend auto; then
		stop_daemon
		fail "tcptapd --backend auto sends a hello" "a hello within $START_TIMEOUT_S s" \
			"none (exit status $STOP_STATUS)"
		show_log_tail "$log"
		return
	fi
	stop_daemon
	check_eq "tcptapd --backend auto exit status after SIGTERM" 0 "$STOP_STATUS"
	grep -i backend "$log"
	chosen=$(sed -n "s/.*Using backend '\([a-z]*\)' (--backend auto).*/\1/p" "$log")
	check_eq "hello's backend is the one the log names" "$chosen" "$(json_field "$HELLO" backend)"
	# Every backend loads on this kernel, so auto takes the first in its order of preference.
	check_eq "backend auto picks on Linux $(uname -r)" tracepoint "$chosen"
	for b in "${BACKENDS[@]}"; do
		[ "$b" = "$chosen" ] && continue
		reason=$(sed -n "s/.*Backend '$b' rejected: \(.*\)/\1/p" "$log")
		if [ -n "$reason" ]; then
			pass "log says why backend '$b' was rejected: $reason"
		else
			fail "log says why backend '$b' was rejected" "Backend '$b' rejected: <reason>" \
				"no such line"
		fi
	done
}

service_show() {
	systemctl show -p "$2" --value "$1"
}

# Check that tcptapd.service is active (running) with a status text; store the BPF objects
# of its main process in $WORK/$1.json.
check_service_running() {
	local state=$1 pid status hello

	check_eq "tcptapd.service is active" active "$(systemctl is-active tcptapd.service)"
	check_eq "tcptapd.service state" running "$(service_show tcptapd.service SubState)"
	status=$(service_show tcptapd.service StatusText)
	echo "StatusText: $status"
	check_eq "tcptapd.service has a status text" yes "$([ -n "$status" ] && echo yes || echo no)"
	pid=$(service_show tcptapd.service MainPID)
	check_eq "main process of tcptapd.service" tcptapd "$(cat "/proc/$pid/comm" 2>/dev/null)"
	check_eq "mode and group of $PACKAGE_SOCKET" "$PACKAGE_SOCKET_MODE_GROUP" \
		"$(stat -c '%a %G' "$PACKAGE_SOCKET" 2>&1)"
	if hello=$($TOOL hello "$PACKAGE_SOCKET" 10); then
		pass "hello on $PACKAGE_SOCKET (backend $(json_field "$hello" backend))"
	else
		fail "hello on $PACKAGE_SOCKET" "a hello line" "none"
	fi
	if $TOOL bpf-owned "$pid" >"$WORK/$state.json"; then
		pass "tcptapd.service holds BPF programs: $(cat "$WORK/$state.json")"
	else
		fail "tcptapd.service holds BPF programs" "program ids in /proc/$pid/fdinfo" \
			"$(cat "$WORK/$state.json")"
	fi
}

# Check that the BPF objects recorded in $WORK/$1.json are gone ($2: --ids-only after a
# restart, whose new daemon loads programs of the same names).
check_bpf_gone() {
	local state=$1 left

	if left=$($TOOL bpf-remaining "$WORK/$state.json" "$BPF_GONE_TIMEOUT_S" ${2:-}); then
		pass "no BPF program, link or map of the $state daemon remains"
	else
		fail "no BPF program, link or map of the $state daemon remains" \
			"none within $BPF_GONE_TIMEOUT_S s" "$left"
	fi
}

check_service_hello_after_activation() {
	local hello

	if hello=$($TOOL hello "$PACKAGE_SOCKET" "$START_TIMEOUT_S"); then
		pass "first client on $PACKAGE_SOCKET gets a hello (backend $(json_field "$hello" backend))"
	else
		fail "first client on $PACKAGE_SOCKET gets a hello" "a hello within $START_TIMEOUT_S s" \
			"none"
		systemctl status --no-pager tcptapd.socket tcptapd.service
	fi
}

check_service() {
	local old_pid new_pid rc

	section "tcptapd.service (Type=notify)"
	if ! systemctl cat tcptapd.service tcptapd.socket >/dev/null 2>&1; then
		fail "tcptapd.service and tcptapd.socket are installed" "units from the tcptap package" \
			"$(systemctl cat tcptapd.service tcptapd.socket 2>&1 | tail -n 2)"
		return
	fi
	check_eq "tcptapd.service type" notify "$(service_show tcptapd.service Type)"
	timeout "$START_TIMEOUT_S" systemctl start tcptapd.service
	rc=$?
	check_eq "systemctl start tcptapd.service" 0 "$rc"
	if [ "$rc" -ne 0 ]; then
		systemctl status --no-pager tcptapd.service
		journalctl -u tcptapd.service --no-pager | tail -n "$LOG_TAIL_LINES"
		return
	fi
	check_service_running first

	section "systemctl restart tcptapd.service"
	old_pid=$(service_show tcptapd.service MainPID)
	timeout "$START_TIMEOUT_S" systemctl restart tcptapd.service
	check_eq "systemctl restart tcptapd.service" 0 "$?"
	new_pid=$(service_show tcptapd.service MainPID)
	check_eq "restart replaced the main process" yes \
		"$([ "$new_pid" != "$old_pid" ] && echo yes || echo "no: $old_pid -> $new_pid")"
	check_service_running restarted
	check_bpf_gone first --ids-only

	section "systemctl stop tcptapd.service tcptapd.socket"
	timeout "$STOP_TIMEOUT_S" systemctl stop tcptapd.service tcptapd.socket
	check_eq "systemctl stop" 0 "$?"
	check_eq "tcptapd.service after stop" inactive "$(systemctl is-active tcptapd.service)"
	check_bpf_gone restarted

	section "socket activation through tcptapd.socket"
	timeout "$START_TIMEOUT_S" systemctl start tcptapd.socket
	check_eq "systemctl start tcptapd.socket" 0 "$?"
	check_eq "tcptapd.socket is active" active "$(systemctl is-active tcptapd.socket)"
	check_eq "tcptapd.service before the first client" inactive \
		"$(systemctl is-active tcptapd.service)"
	# The first client's connect() returns at once; its hello comes once tcptapd has started.
	check_service_hello_after_activation
	check_service_running activated
	timeout "$STOP_TIMEOUT_S" systemctl stop tcptapd.socket tcptapd.service
	check_eq "systemctl stop after activation" 0 "$?"
	check_bpf_gone activated
}

check_backends() {
	local b rc

	for b in "${BACKENDS[@]}"; do
		check_backend_loads "$b"
	done
	check_auto_backend

	section "end-to-end tests under each backend, records compared"
	if [ ! -f "$SHARE/e2e/tt.py" ]; then
		fail "end-to-end tests staged in the share" "$SHARE/e2e/tt.py" "missing"
		return
	fi
	python3 "$SHARE/vm/guest-backends.py" "$TCPTAPD" "$SHARE/e2e" "$OUT" "${BACKENDS[@]}"
	rc=$?
	check_eq "end-to-end tests and record comparison across backends" 0 "$rc"
}

main() {
	local f

	echo "tcptap VM tests: $(uname -srm), $(. /etc/os-release && echo "$PRETTY_NAME")"
	mkdir -p "$OUT" "$WORK"
	check_environment
	if install_tcptap; then
		check_service
		# The service must not run while the backends are tested by hand.
		systemctl stop tcptapd.socket tcptapd.service >/dev/null 2>&1
		check_backends
	fi

	echo
	if [ ${#failures[@]} -gt 0 ]; then
		echo "FAILED checks:"
		for f in "${failures[@]}"; do
			echo "  - $f"
		done
	fi
	echo "guest: $passed passed, ${#failures[@]} failed"
	[ ${#failures[@]} -eq 0 ]
}

main "$@"
