#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Build the Debian 12 guest that the VM suite boots, or reuse the cached one.
#
# The guest is Debian's own amd64 kernel (the version that the host's linux-image-amd64 package
# depends on), a small initrd that only mounts the root disk, and an ext4 root file system made
# by debootstrap with systemd as PID 1. At boot the unit tcptap-vm-autorun.service mounts the
# 9p shared folder "share" on /mnt/share, runs /mnt/share/run.sh, writes its output and exit
# status to /mnt/share/out/ and powers the guest off.
#
# The result lives in $TCPTAP_VM_CACHE (default /var/cache/tcptap-vm) under image-<key>, where
# <key> hashes this script and the kernel package version, so changing either rebuilds it.
# Prints that directory on stdout; progress goes to stderr. Must run as root.
set -euo pipefail

CACHE_ROOT=${TCPTAP_VM_CACHE:-/var/cache/tcptap-vm}
SUITE=bookworm
IMAGE_SIZE=1G
APT_TIMEOUT_S=600
DEBOOTSTRAP_TIMEOUT_S=600
STEP_TIMEOUT_S=300
LOCK_TIMEOUT_S=1200

HOST_PACKAGES=(qemu-system-x86 debootstrap linux-image-amd64 initramfs-tools e2fsprogs)

# What the tcptap package needs at run time, plus what the guest tests use. python3 runs the
# end-to-end tests, bpftool lists the BPF objects left in the kernel, and procps, util-linux and
# iproute2 handle processes and network namespaces.
GUEST_PACKAGES=(
	systemd systemd-sysv udev kmod util-linux procps iproute2
	libbpf1 libelf1 libjson-c5 libsystemd0 zlib1g
	python3 bpftool
)

# Modules the guest loads from its root file system: the 9p shared folder, veth pairs for the
# tests' network namespaces, and sock_diag for TCP, which tcptapd uses to find the connections
# that predate it. The initrd carries only what mounting the root disk needs.
GUEST_MODULES=(9p 9pnet_virtio veth inet_diag tcp_diag)
INITRD_MODULES=(virtio_pci virtio_blk ext4)

log() { echo "build-image: $*" >&2; }
fatal() { echo "FATAL: build-image: $*" >&2; exit 1; }

install_host_packages() {
	local missing=() p

	for p in "${HOST_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0

	log "installing host packages: ${missing[*]}"
	timeout "$APT_TIMEOUT_S" apt-get update -qq >&2 ||
		fatal "apt-get update failed or timed out after ${APT_TIMEOUT_S} s"
	DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >&2 ||
		fatal "failed to install ${missing[*]} (apt-get failed or timed out)"
}

# Print the kernel release that linux-image-amd64 pulls in, e.g. 6.1.0-57-amd64.
guest_kernel_release() {
	local depends release

	depends=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null) ||
		fatal "linux-image-amd64 is not installed"
	release=$(grep -o 'linux-image-[^ ,]*' <<<"$depends" | head -n 1)
	release=${release#linux-image-}
	[ -n "$release" ] || fatal "cannot find the kernel in linux-image-amd64's Depends: '$depends'"
	[ -f "/boot/vmlinuz-$release" ] || fatal "/boot/vmlinuz-$release is missing"
	[ -d "/lib/modules/$release" ] || fatal "/lib/modules/$release is missing"
	echo "$release"
}

# Print the first Debian mirror that this machine's apt configuration uses for $SUITE, from the
# deb822 .sources files first, then from one-line sources.list entries.
debian_mirror() {
	local files=() f uri

	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	if [ ${#files[@]} -gt 0 ]; then
		uri=$(awk -v suite="$SUITE" '
			function check() {
				if (!found && types ~ /(^| )deb( |$)/ && enabled != "no" &&
				    (" " suites " ") ~ (" " suite " ") && uri != "") {
					print uri
					found = 1
				}
				types = suites = uri = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { check(); next }
			{
				key = tolower($1)
				sub(/:$/, "", key)
				$1 = ""
				value = $0
				sub(/^ +/, "", value)
				if (key == "types") types = value
				else if (key == "uris") { split(value, u, " "); uri = u[1] }
				else if (key == "suites") suites = value
				else if (key == "enabled") enabled = tolower(value)
			}
			END { check() }' "${files[@]}" | head -n 1)
	fi
	if [ -z "${uri:-}" ]; then
		uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -e 's/#.*//' -e 's/\[[^]]*\]//' |
			awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
	fi
	[ -n "${uri:-}" ] || fatal "no 'deb' source for suite '$SUITE' in the apt configuration"
	echo "$uri"
}

# Write the guest's configuration files into the root file system $1.
configure_rootfs() {
	local root=$1

	echo tcptap-vm >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\ttcptap-vm\n::1\tlocalhost ip6-localhost\n' \
		>"$root/etc/hosts"
	mkdir -p "$root/mnt/share"
	cat >"$root/etc/fstab" <<-'EOF'
	/dev/vda	/		ext4	rw,noatime	0 1
	share		/mnt/share	9p	trans=virtio,version=9p2000.L,msize=512000,nofail,x-systemd.device-timeout=10s	0 0
	EOF
	printf '9pnet_virtio\n9p\n' >"$root/etc/modules-load.d/tcptap-vm.conf"

	# The journal stays in memory: the disk is thrown away after every run anyway.
	mkdir -p "$root/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/tcptap-vm.conf"

	cat >"$root/usr/local/sbin/tcptap-vm-autorun" <<-'EOF'
	#!/bin/sh
	# Run /mnt/share/run.sh once the guest has booted, store its output, exit status, the
	# journal and the kernel log in /mnt/share/out, then power off. The host reads the
	# status from out/rc, or from the TCPTAP-VM-RC line on the serial console.
	out=/mnt/share/out
	mkdir -p "$out"
	limit=$(sed -n 's/.*tcptap_vm\.timeout=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
	start=$(cut -d' ' -f1 /proc/uptime)
	echo "TCPTAP-VM-START uptime=$start" >/dev/console
	if [ -f /mnt/share/run.sh ]; then
		timeout --kill-after=10 "${limit:-600}" bash /mnt/share/run.sh >"$out/guest.log" 2>&1
		rc=$?
		[ "$rc" -eq 124 ] && echo "FATAL: run.sh timed out after ${limit:-600} s" >>"$out/guest.log"
	else
		echo "FATAL: /mnt/share/run.sh is missing" >"$out/guest.log"
		rc=127
	fi
	end=$(cut -d' ' -f1 /proc/uptime)
	echo "boot_s=$start end_s=$end" >"$out/timing"
	journalctl -b --no-pager -o short-monotonic >"$out/journal.log" 2>&1
	dmesg >"$out/dmesg.log" 2>&1
	echo "$rc" >"$out/rc"
	sync
	echo "TCPTAP-VM-RC=$rc uptime=$end" >/dev/console
	systemctl --no-block poweroff
	EOF
	chmod 0755 "$root/usr/local/sbin/tcptap-vm-autorun"

	cat >"$root/etc/systemd/system/tcptap-vm-autorun.service" <<-'EOF'
	[Unit]
	Description=Run the tcptap VM tests from the shared folder, then power off
	ConditionKernelCommandLine=tcptap_vm.autorun=1
	Requires=mnt-share.mount
	After=multi-user.target mnt-share.mount

	[Service]
	Type=oneshot
	TimeoutStartSec=infinity
	StandardOutput=journal+console
	ExecStart=/usr/local/sbin/tcptap-vm-autorun

	[Install]
	WantedBy=multi-user.target
	EOF
	chroot "$root" systemctl enable tcptap-vm-autorun.service >/dev/null 2>&1
	chroot "$root" systemctl set-default multi-user.target >/dev/null 2>&1

	# Units that only cost boot time here. The gettys are masked: the tests need no login.
	chroot "$root" systemctl mask systemd-timesyncd.service apt-daily.timer \
		apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		man-db.timer dpkg-db-backup.timer serial-getty@ttyS0.service getty@tty1.service \
		>/dev/null 2>&1 || true

	rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
		"$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
}

# Copy GUEST_MODULES and their dependencies from the host's copy of kernel $2 into root $1.
copy_guest_modules() {
	local root=$1 release=$2 m path

	mkdir -p "$root/lib/modules/$release"
	cp -a "/lib/modules/$release"/modules.order "/lib/modules/$release"/modules.builtin \
		"/lib/modules/$release"/modules.builtin.modinfo "$root/lib/modules/$release/"
	for m in "${GUEST_MODULES[@]}"; do
		modprobe -S "$release" --show-depends "$m" >/dev/null ||
			fatal "module '$m' is not part of kernel $release"
		modprobe -S "$release" --show-depends "$m" | awk '$1 == "insmod" { print $2 }' |
			while read -r path; do
				mkdir -p "$root$(dirname "$path")"
				cp -a "$path" "$root$path"
			done
	done
	depmod -b "$root" "$release"
}

# Make an initrd ($3) for kernel $1 that loads only INITRD_MODULES, with a copy of the host's
# initramfs-tools configuration in $2. Debian's default (MODULES=most) made 30 MB instead of
# 6 MB for 6.1.0-57-amd64, which costs seconds of boot under TCG.
build_initrd() {
	local release=$1 confdir=$2 output=$3

	cp -a /etc/initramfs-tools "$confdir"
	sed -i 's/^MODULES=.*/MODULES=list/' "$confdir/initramfs.conf"
	printf '%s\n' "${INITRD_MODULES[@]}" >"$confdir/modules"
	timeout "$STEP_TIMEOUT_S" mkinitramfs -d "$confdir" -o "$output" "$release" >&2 ||
		fatal "mkinitramfs failed for kernel $release"
}

build_image() {
	local work=$1 release=$2 mirror=$3 packages

	packages=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
	log "debootstrap $SUITE from $mirror"
	if ! timeout "$DEBOOTSTRAP_TIMEOUT_S" debootstrap --variant=minbase --include="$packages" \
		"$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
		tail -n 30 "$work/debootstrap.log" >&2
		[ -f "$work/rootfs/debootstrap/debootstrap.log" ] &&
			tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
		fatal "debootstrap failed or timed out after ${DEBOOTSTRAP_TIMEOUT_S} s"
	fi

	log "configuring the root file system"
	configure_rootfs "$work/rootfs"
	copy_guest_modules "$work/rootfs" "$release"
	dpkg-query --admindir="$work/rootfs/var/lib/dpkg" -W >"$work/packages.txt"

	log "packing rootfs.img ($IMAGE_SIZE, ext4)"
	timeout "$STEP_TIMEOUT_S" mkfs.ext4 -q -F -L tcptap-vm -d "$work/rootfs" "$work/rootfs.img" \
		"$IMAGE_SIZE" >&2 || fatal "mkfs.ext4 failed"
	rm -rf "$work/rootfs"

	log "building the initrd for $release"
	build_initrd "$release" "$work/initramfs-tools" "$work/initrd.img"
	rm -rf "$work/initramfs-tools"
	cp "/boot/vmlinuz-$release" "$work/vmlinuz"
	echo "$release" >"$work/kernel-release"
}

main() {
	local script release kernel_version key image work mirror started lock_fd

	[ "$(id -u)" -eq 0 ] || fatal "must run as root (debootstrap, chroot, apt-get)"
	install_host_packages
	release=$(guest_kernel_release)
	kernel_version=$(dpkg-query -W -f='${Version}' "linux-image-$release")

	script=$(readlink -f "${BASH_SOURCE[0]}")
	key=$({ cat "$script"; echo "$release $kernel_version"; } | sha256sum | cut -c1-16)
	image="$CACHE_ROOT/image-$key"

	mkdir -p "$CACHE_ROOT"
	exec {lock_fd}>"$CACHE_ROOT/lock"
	flock -w "$LOCK_TIMEOUT_S" "$lock_fd" ||
		fatal "timed out after ${LOCK_TIMEOUT_S} s waiting for $CACHE_ROOT/lock"

	if [ -f "$image/complete" ]; then
		log "using cached image $image (kernel $release)"
		echo "$image"
		return 0
	fi

	started=$(date +%s)
	mirror=$(debian_mirror)
	# Under the lock, any build directory is a leftover of an interrupted run.
	rm -rf "$CACHE_ROOT"/build.*
	work=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	build_image "$work" "$release" "$mirror"
	echo "built $(date -u +%FT%TZ) from $mirror in $(($(date +%s) - started)) s" >"$work/complete"

	# Older images were built by other versions of this script; keep only the new one.
	rm -rf "$CACHE_ROOT"/image-*
	mv "$work" "$image"
	trap - EXIT
	log "built $image in $(($(date +%s) - started)) s (kernel $release)"
	echo "$image"
}

main "$@"
