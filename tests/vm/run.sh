#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run the VM suite: tcptap's kprobe, fentry and tracepoint backends and its packaged systemd
# service, tested inside a Debian 12 guest on Debian's own 6.1 kernel under qemu.
#
# Usage: tests/vm/run.sh [BUILD_DIR]     (default: ./build of this repository)
#
# Steps: build or reuse the cached guest image (build-image.sh), build tcptapd and tcptap in
# BUILD_DIR, stage the tcptap package (or the binaries), the guest tests and the end-to-end
# tests in BUILD_DIR/vm-run/share, boot the guest (run-vm.sh), which runs guest-tests.sh as
# root under systemd and powers off, and exit with the guest's status.
# Anything that keeps the suite from running (no root, qemu or the kernel cannot be installed)
# is a failure with a FATAL line, never a skip.
set -euo pipefail

VM_TIMEOUT_S=720
BUILD_TIMEOUT_S=600

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

fatal() { echo "FATAL: vm suite: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

build_tcptap() {
	local build=$1

	if [ ! -f "$build/build.ninja" ]; then
		(cd "$repo" && timeout "$BUILD_TIMEOUT_S" meson setup "$build" >&2) ||
			fatal "meson setup $build failed"
	fi
	timeout "$BUILD_TIMEOUT_S" ninja -C "$build" daemon/tcptapd cmd/tcptap >&2 ||
		fatal "building tcptapd and tcptap in $build failed"
}

# Put what the guest installs into $2/share: the binaries under bin/.
# NOTE: the guest installs the binaries by hand until packaging/build-deb.sh exists; the
# systemd unit checks then fail, because only the package installs the units.
stage_tcptap() {
	local build=$1 share=$2

	mkdir -p "$share/bin"
	cp "$build/daemon/tcptapd" "$build/cmd/tcptap" "$share/bin/"
}

stage_tests() {
	local share=$1

	cp "$here/guest-tests.sh" "$share/run.sh"
	mkdir -p "$share/vm"
	cp "$here"/guest-*.py "$share/vm/"
	if [ -d "$repo/tests/e2e" ]; then
		cp -r "$repo/tests/e2e" "$share/e2e"
	fi
}

main() {
	local build=${1:-$repo/build} run image rc started t_image t_build t_vm

	[ "$(id -u)" -eq 0 ] || fatal "must run as root (apt-get, debootstrap, qemu)"
	build=$(readlink -f "$build")
	run="$build/vm-run"

	started=$(now)
	image=$(bash "$here/build-image.sh") || exit 1
	t_image=$(now)

	build_tcptap "$build"
	rm -rf "$run"
	mkdir -p "$run/share"
	stage_tcptap "$build" "$run/share"
	stage_tests "$run/share"
	t_build=$(now)

	rc=0
	bash "$here/run-vm.sh" "$image" "$run" "$VM_TIMEOUT_S" || rc=$?
	t_vm=$(now)

	echo "vm suite timing: image $(elapsed "$started" "$t_image") s" \
		"($(cat "$image/complete")), build and staging $(elapsed "$t_image" "$t_build") s," \
		"vm $(elapsed "$t_build" "$t_vm") s, total $(elapsed "$started" "$t_vm") s"
	echo "vm suite results: $run/share/out"
	exit "$rc"
}

main "$@"
