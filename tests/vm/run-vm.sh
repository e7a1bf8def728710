#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Boot the guest built by build-image.sh with RUN_DIR/share as its 9p shared folder, let the
# guest's autorun unit execute share/run.sh, wait for the guest to power off and exit with
# run.sh's exit status.
#
# Usage: run-vm.sh IMAGE_DIR RUN_DIR [TIMEOUT_S]
#
# The root disk is opened with snapshot=on, so the cached image never changes. Results stay in
# RUN_DIR: share/out/{guest.log,rc,journal.log,dmesg.log,timing}, serial.log and qemu.log.
# The guest's log is printed on stdout; on failure the serial console's tail follows.
#
# qemu uses TCG (software emulation) unless TCPTAP_VM_ACCEL=kvm selects KVM. KVM is not the
# default because a nested-virtualisation /dev/kvm (kvm_pvm) accepts a normal guest and then
# hangs it after the kernel's decompressor.
set -uo pipefail

DEFAULT_TIMEOUT_S=600
# Time the guest needs around run.sh: boot before it, power-off after it. Measured under TCG
# on a 2-CPU host: 10 to 25 s of boot, depending on the host's load, and 2 s of power-off.
GUEST_MARGIN_S=60
SERIAL_TAIL_LINES=60

fatal() { echo "FATAL: run-vm: $*" >&2; exit 1; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

print_failure_context() {
	local run=$1

	echo "--- serial console, last $SERIAL_TAIL_LINES lines ($run/serial.log) ---"
	tail -n "$SERIAL_TAIL_LINES" "$run/serial.log" 2>/dev/null | tr -d '\r'
	if [ -s "$run/qemu.log" ]; then
		echo "--- qemu ($run/qemu.log) ---"
		cat "$run/qemu.log"
	fi
	[ -f "$run/share/out/journal.log" ] && echo "guest journal: $run/share/out/journal.log"
}

main() {
	local image=${1:-} run=${2:-} limit=${3:-$DEFAULT_TIMEOUT_S}
	local accel cpu started finished qemu_rc rc guest_limit boot_s end_s

	[ -n "$image" ] && [ -n "$run" ] || fatal "usage: run-vm.sh IMAGE_DIR RUN_DIR [TIMEOUT_S]"
	[ -f "$image/complete" ] || fatal "$image is not a complete image (run build-image.sh)"
	[ -f "$run/share/run.sh" ] || fatal "$run/share/run.sh is missing"
	[ "$limit" -gt "$GUEST_MARGIN_S" ] || fatal "timeout $limit s leaves no time for run.sh"
	command -v qemu-system-x86_64 >/dev/null || fatal "qemu-system-x86_64 is not installed"

	case ${TCPTAP_VM_ACCEL:-tcg} in
	tcg) accel=tcg,thread=multi; cpu=max ;;
	kvm) accel=kvm; cpu=host ;;
	*) fatal "TCPTAP_VM_ACCEL must be tcg or kvm, not '$TCPTAP_VM_ACCEL'" ;;
	esac

	rm -rf "$run/share/out" "$run/serial.log" "$run/qemu.log"
	guest_limit=$((limit - GUEST_MARGIN_S))
	started=$(date +%s.%N)
	timeout --kill-after=10 "$limit" qemu-system-x86_64 \
		-accel "$accel" -cpu "$cpu" -smp "${TCPTAP_VM_CPUS:-2}" -m "${TCPTAP_VM_MEM_MB:-1024}" \
		-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 quiet tcptap_vm.autorun=1 tcptap_vm.timeout=$guest_limit" \
		-drive "file=$image/rootfs.img,if=virtio,format=raw,cache=unsafe,snapshot=on" \
		-virtfs "local,path=$run/share,mount_tag=share,security_model=none,id=share" \
		-display none -serial "file:$run/serial.log" -monitor none -nic none -no-reboot \
		</dev/null >"$run/qemu.log" 2>&1
	qemu_rc=$?
	finished=$(date +%s.%N)

	if [ -f "$run/share/out/rc" ]; then
		rc=$(cat "$run/share/out/rc")
	else
		rc=$(tr -d '\r' <"$run/serial.log" 2>/dev/null | sed -n 's/^TCPTAP-VM-RC=\([0-9]*\).*/\1/p' |
			tail -n 1)
	fi

	echo "--- guest log ($run/share/out/guest.log) ---"
	cat "$run/share/out/guest.log" 2>/dev/null || echo "(none)"
	echo "--- end of guest log ---"

	if [ -f "$run/share/out/timing" ]; then
		boot_s=$(sed -n 's/.*boot_s=\([0-9.]*\).*/\1/p' "$run/share/out/timing")
		end_s=$(sed -n 's/.*end_s=\([0-9.]*\).*/\1/p' "$run/share/out/timing")
		echo "vm timing: guest booted to the test unit in $boot_s s (guest uptime)," \
			"tests took $(elapsed "$boot_s" "$end_s") s, qemu ran $(elapsed "$started" "$finished") s"
	else
		echo "vm timing: qemu ran $(elapsed "$started" "$finished") s, the guest wrote no timing"
	fi

	if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
		print_failure_context "$run"
		fatal "the guest did not power off within $limit s (qemu killed)"
	fi
	if [ -z "$rc" ]; then
		print_failure_context "$run"
		fatal "the guest reported no exit status (qemu exit status $qemu_rc)"
	fi
	if [ "$rc" -ne 0 ]; then
		print_failure_context "$run"
		echo "run-vm: the guest's run.sh failed with exit status $rc" >&2
	fi
	exit "$rc"
}

main "$@"
