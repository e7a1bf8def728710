#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the Debian package with packaging/build-deb.sh, check what it installs
# and what its maintainer scripts do, and run lintian on it: any lintian error
# fails, warnings are printed. Needs debhelper, dpkg-dev and lintian.
#
# Usage: tests/test-package.sh [OUTPUT_DIR]   (default: a temporary directory)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ge 1 ]; then
	out=$1
	mkdir -p "$out"
else
	out=$(mktemp -d /tmp/tcptap-package.XXXXXX)
	trap 'rm -rf "$out"' EXIT
fi

passed=0
failed=0
pass() { echo "ok $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

if ! bash "$src/packaging/build-deb.sh" "$out" >"$out/build.log" 2>&1; then
	tail -n 60 "$out/build.log"
	echo "FAIL package build (log: $out/build.log)"
	echo "0 passed, 1 failed"
	exit 1
fi
pass "package build"

deb=$(ls "$out"/tcptap_*.deb)
contents=$(dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|')
for path in \
	/usr/sbin/tcptapd \
	/usr/bin/tcptap \
	/lib/systemd/system/tcptapd.service \
	/lib/systemd/system/tcptapd.socket \
	/usr/lib/sysusers.d/tcptap.conf \
	/usr/lib/tmpfiles.d/tcptap.conf \
	/usr/share/man/man8/tcptapd.8.gz \
	/usr/share/man/man1/tcptap.1.gz \
	/usr/share/bash-completion/completions/tcptap \
	/usr/share/doc/tcptap/copyright; do
	if grep -qx "$path" <<<"$contents"; then
		pass "contains $path"
	else
		fail "contains $path: missing from $(basename "$deb")"
	fi
done
control=$(mktemp -d /tmp/tcptap-control.XXXXXX)
dpkg-deb -e "$deb" "$control"
postinst=$(cat "$control/postinst")
rm -rf "$control"
check_postinst() {
	local what=$1 pattern=$2 want=$3
	if grep -qE -- "$pattern" <<<"$postinst"; then
		[ "$want" = yes ] && pass "postinst $what" || fail "postinst $what: unexpected"
	else
		[ "$want" = no ] && pass "postinst $what" || fail "postinst $what: missing"
	fi
}
check_postinst "creates the tcptap group" 'systemd-sysusers .*tcptap\.conf' yes
check_postinst "creates /run/tcptap" 'systemd-tmpfiles .*--create tcptap\.conf' yes
check_postinst "enables tcptapd.service" "deb-systemd-helper enable '?tcptapd\\.service" yes
check_postinst "starts tcptapd.service" "deb-systemd-invoke [^ ]+ '?tcptapd\\.service" yes
# --no-enable: enabled again on upgrade only if the admin had enabled it.
check_postinst "enables tcptapd.socket only if it was" \
	"deb-systemd-helper debian-installed '?tcptapd\\.socket" yes
check_postinst "does not start tcptapd.socket" "deb-systemd-invoke .*tcptapd\\.socket" no

# lintian exits non-zero when it reports an error.
if lintian --display-info "$deb" >"$out/lintian.log" 2>&1; then
	pass "lintian reports no error"
else
	fail "lintian reports errors"
fi
echo "# lintian $(lintian --version | awk '{ print $2 }') on $(basename "$deb"):"
sed 's/^/# /' "$out/lintian.log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
