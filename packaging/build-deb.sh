#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the tcptap Debian package from this source tree.
#
# Usage: packaging/build-deb.sh OUTPUT_DIR
#
# The tree keeps its Debian packaging in packaging/debian. The script copies the
# sources to a temporary directory, puts packaging/debian there as debian/, runs
# `dpkg-buildpackage -us -uc -b` and copies the .deb, .buildinfo and .changes
# files to OUTPUT_DIR. In a git checkout it copies the files git tracks and the
# untracked ones git does not ignore; elsewhere, everything but build*/.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "Usage: $0 OUTPUT_DIR" >&2
	exit 2
fi
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
work=$(mktemp -d /tmp/tcptap-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree="$work/tcptap-$version"
mkdir "$tree"

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			# A tracked file deleted in the work tree is left out.
			if [ -e "$src/$f" ]; then
				(cd "$src" && cp --parents -P -- "$f" "$tree")
			fi
		done
else
	tar -C "$src" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$tree" -xf -
fi
rm -rf "$tree/debian"
cp -a "$src/packaging/debian" "$tree/debian"

(cd "$tree" && dpkg-buildpackage -us -uc -b)

shopt -s nullglob
artifacts=("$work"/*.deb "$work"/*.buildinfo "$work"/*.changes)
if [ ${#artifacts[@]} -eq 0 ]; then
	echo "build-deb.sh: dpkg-buildpackage produced no package" >&2
	exit 1
fi
cp "${artifacts[@]}" "$out/"
for f in "${artifacts[@]}"; do
	echo "$out/$(basename "$f")"
done
