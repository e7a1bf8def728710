# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for guest-tests.sh that need JSON or /proc parsing.

Usage:
  guest-tool.py hello SOCKET TIMEOUT_S [PID]
      Connect to tcptapd's socket, print the first line (the hello record) and exit 0;
      exit 1 if the socket sends no hello within TIMEOUT_S, or as soon as process PID, the
      daemon being waited for, has exited.
  guest-tool.py bpf-owned PID
      Print, as JSON, the BPF programs, links and maps behind the open file descriptors of
      process PID, with the programs' names as the kernel reports them.
  guest-tool.py bpf-remaining STATE_JSON TIMEOUT_S [--ids-only]
      Given the output of bpf-owned, wait up to TIMEOUT_S for every one of those objects to
      be gone from the kernel and, unless --ids-only, for no program of those names to be
      loaded. Print what remains as JSON; exit 0 when nothing does, 1 otherwise.
      --ids-only suits a restart, where the new daemon loads programs of the same names.
"""

import json
import os
import socket
import subprocess
import sys
import time

# fdinfo keys naming the kernel object behind a BPF file descriptor.
FDINFO_KEYS = {"prog_id": "progs", "link_id": "links", "map_id": "maps"}
POLL_INTERVAL_S = 0.2


def process_alive(pid):
	"""Return whether pid runs; a zombie (exited, not yet reaped) counts as gone."""
	try:
		with open("/proc/%d/stat" % pid) as f:
			return f.read().rsplit(")", 1)[1].split()[0] != "Z"
	except FileNotFoundError:
		return False


def hello(path, timeout_s, pid):
	deadline = time.monotonic() + timeout_s
	last_error = "no attempt"
	while time.monotonic() < deadline:
		if pid is not None and not process_alive(pid):
			print("process %d exited before %s sent a hello" % (pid, path), file=sys.stderr)
			return 1
		try:
			with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
				sock.settimeout(max(0.1, deadline - time.monotonic()))
				sock.connect(path)
				data = b""
				while b"\n" not in data:
					chunk = sock.recv(4096)
					if not chunk:
						break
					data += chunk
				if b"\n" in data:
					line = data.split(b"\n", 1)[0].decode()
					record = json.loads(line)
					if record.get("type") == "hello":
						print(line)
						return 0
					last_error = "first line is not a hello: %s" % line
				else:
					last_error = "connection closed after %r" % data[:200]
		except (OSError, ValueError) as e:
			last_error = str(e)
		time.sleep(POLL_INTERVAL_S)
	print("no hello on %s within %s s: %s" % (path, timeout_s, last_error), file=sys.stderr)
	return 1


def fd_objects(pid):
	"""Return {"progs": set, "links": set, "maps": set} of the ids behind pid's fds."""
	owned = {kind: set() for kind in FDINFO_KEYS.values()}
	fd_dir = "/proc/%d/fd" % pid
	for fd in os.listdir(fd_dir):
		try:
			target = os.readlink(os.path.join(fd_dir, fd))
			if not target.startswith("anon_inode:bpf"):
				continue
			with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
				for line in f:
					key, _, value = line.partition(":")
					if key in FDINFO_KEYS:
						owned[FDINFO_KEYS[key]].add(int(value))
		except FileNotFoundError:
			continue	# the fd was closed while we read the directory
	return owned


def bpftool(kind):
	result = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True,
				timeout=60)
	if result.returncode != 0:
		raise RuntimeError("bpftool %s show failed: %s" % (kind, result.stderr.strip()))
	return json.loads(result.stdout or "[]")


def bpf_owned(pid):
	owned = fd_objects(pid)
	progs = {p["id"]: p for p in bpftool("prog")}
	state = {
		"pid": pid,
		"progs": sorted(owned["progs"]),
		"links": sorted(owned["links"]),
		"maps": sorted(owned["maps"]),
		"prog_names": sorted({progs[i].get("name", "") for i in owned["progs"] if i in progs}),
	}
	print(json.dumps(state))
	return 0 if state["progs"] else 1


def remaining(state, ids_only):
	progs = bpftool("prog")
	links = {link["id"] for link in bpftool("link")}
	maps = {m["id"] for m in bpftool("map")}
	names = set() if ids_only else set(state["prog_names"])
	return {
		"progs": sorted(p["id"] for p in progs if p["id"] in state["progs"]),
		"progs_by_name": sorted("%s:%d" % (p.get("name"), p["id"]) for p in progs
					if p.get("name") in names),
		"links": sorted(links & set(state["links"])),
		"maps": sorted(maps & set(state["maps"])),
	}


def bpf_remaining(path, timeout_s, ids_only):
	with open(path) as f:
		state = json.load(f)
	deadline = time.monotonic() + timeout_s
	while True:
		left = remaining(state, ids_only)
		if not any(left.values()) or time.monotonic() >= deadline:
			break
		time.sleep(POLL_INTERVAL_S)
	print(json.dumps(left))
	return 1 if any(left.values()) else 0


def main(argv):
	if len(argv) in (4, 5) and argv[1] == "hello":
		return hello(argv[2], float(argv[3]), int(argv[4]) if len(argv) == 5 else None)
	if len(argv) == 3 and argv[1] == "bpf-owned":
		return bpf_owned(int(argv[2]))
	if len(argv) in (4, 5) and argv[1] == "bpf-remaining":
		if len(argv) == 5 and argv[4] != "--ids-only":
			print("unknown option '%s'" % argv[4], file=sys.stderr)
			return 2
		return bpf_remaining(argv[2], float(argv[3]), len(argv) == 5)
	print(__doc__, file=sys.stderr)
	return 2


if __name__ == "__main__":
	sys.exit(main(sys.argv))
