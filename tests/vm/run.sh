#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run the VM suite: tcptap's kprobe, fentry and tracepoint backends and its packaged systemd
# service, tested inside a Debian 12 guest on Debian's own 6.1 kernel under qemu.
#
# Usage: tests/vm/run.sh [BUILD_DIR]     (default: ./build of this repository)
#
# Steps: build or reuse the cached guest image (build-image.sh). Build the tcptap Debian package
# from this source tree (packaging/build-deb.sh) and stage it with the guest tests and the
# end-to-end tests in BUILD_DIR/vm-run/share. Boot the guest (run-vm.sh), which runs
# guest-tests.sh as root under systemd and powers off, and exit with the guest's status.
# Every tcptapd the guest runs, by hand or as a service, is the packaged /usr/sbin/tcptapd.
# Anything that keeps the suite from running (no root, qemu or the kernel cannot be installed)
# is a failure with a FATAL line, never a skip.
set -euo pipefail

# The guest boots in 10 to 25 s and runs its tests in 8 to 10 minutes under TCG on a 2-CPU
# host, depending on the host's load.
VM_TIMEOUT_S=840
BUILD_TIMEOUT_S=600

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

fatal() { echo "FATAL: vm suite: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Build the tcptap package from this source tree into $1/deb and put it into $1/share, where
# the guest installs it with dpkg -i. The unit tests do not run again in the package build
# (DEB_BUILD_OPTIONS=nocheck): the unit suite runs them.
stage_package() {
	local run=$1 debs

	if ! DEB_BUILD_OPTIONS=nocheck timeout "$BUILD_TIMEOUT_S" \
		bash "$repo/packaging/build-deb.sh" "$run/deb" >"$run/build-deb.log" 2>&1; then
		tail -n 40 "$run/build-deb.log" >&2
		fatal "packaging/build-deb.sh failed (log: $run/build-deb.log)"
	fi
	debs=("$run"/deb/tcptap_*_amd64.deb)
	[ -f "${debs[0]}" ] || fatal "packaging/build-deb.sh made no tcptap_*_amd64.deb in $run/deb"
	cp "${debs[@]}" "$run/share/"
}

stage_tests() {
	local share=$1

	cp "$here/guest-tests.sh" "$share/run.sh"
	mkdir -p "$share/vm"
	cp "$here"/guest-*.py "$share/vm/"
	cp -r "$repo/tests/e2e" "$share/e2e"
}

main() {
	local build=${1:-$repo/build} run image rc started t_image t_build t_vm

	[ "$(id -u)" -eq 0 ] || fatal "must run as root (apt-get, debootstrap, qemu)"
	build=$(readlink -f "$build")
	run="$build/vm-run"

	started=$(now)
	image=$(bash "$here/build-image.sh") || exit 1
	t_image=$(now)

	rm -rf "$run"
	mkdir -p "$run/share"
	stage_package "$run"
	stage_tests "$run/share"
	t_build=$(now)

	rc=0
	bash "$here/run-vm.sh" "$image" "$run" "$VM_TIMEOUT_S" || rc=$?
	t_vm=$(now)

	echo "vm suite timing: image $(elapsed "$started" "$t_image") s" \
		"($(cat "$image/complete")), package and staging $(elapsed "$t_image" "$t_build") s," \
		"vm $(elapsed "$t_build" "$t_vm") s, total $(elapsed "$started" "$t_vm") s"
	echo "vm suite results: $run/share/out"
	exit "$rc"
}

main "$@"
