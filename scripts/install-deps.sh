#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install what building and testing tcptap needs on Debian 12, and mount the
# kernel file systems the tracepoint backend uses. Safe to run repeatedly.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: run as root (it installs packages and mounts tracefs)" >&2
	exit 1
fi

packages=(
	# build
	clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev libjson-c-dev libsystemd-dev
	meson ninja-build pkg-config gcc
	# tests: network namespaces, capabilities, socket activation, schema, fuzzing
	iproute2 util-linux systemd python3 python3-jsonschema libclang-rt-14-dev strace groff-base
	# packaging
	debhelper dpkg-dev fakeroot lintian
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "Installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi

# systemd mounts tracefs at boot; machines without it as PID 1 need it here
# for the syscall tracepoints that attribute accept().
if [ ! -d /sys/kernel/tracing/events ]; then
	mount -t tracefs tracefs /sys/kernel/tracing
fi
