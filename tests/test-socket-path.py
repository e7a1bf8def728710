# SPDX-License-Identifier: LGPL-2.1-or-later
"""tcptapd must never remove a file that is not a stale socket of its own.

Usage: test-socket-path.py PATH-TO-TCPTAPD

Cases: a regular file at --socket is left alone and tcptapd exits 1; a
socket nobody listens on (left by a killed daemon) is replaced; a socket a
running daemon listens on is left to it and the second daemon exits 1; an
empty path is rejected. Needs root, like tcptapd itself.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

START_TIMEOUT_S = 20
EXIT_TIMEOUT_S = 20

failures = []


def check(name, expected, actual):
	if expected == actual:
		print("ok %s" % name)
	else:
		print("FAIL %s\n  expected: %r\n  actual:   %r" % (name, expected, actual))
		failures.append(name)


def hello(path, timeout_s=START_TIMEOUT_S):
	"""The daemon's hello on path, or None if none arrives in time."""
	deadline = time.monotonic() + timeout_s
	while time.monotonic() < deadline:
		try:
			with socket.socket(socket.AF_UNIX) as s:
				s.settimeout(5)
				s.connect(path)
				s.sendall(b'{"command":"stats"}\n')
				line = s.makefile("rb").readline()
				return json.loads(line)
		except (OSError, ValueError):
			time.sleep(0.1)
	return None


def run_to_exit(daemon, path):
	result = subprocess.run([daemon, "--socket", path], stdin=subprocess.DEVNULL,
				capture_output=True, text=True, timeout=EXIT_TIMEOUT_S)
	return result.returncode, result.stderr


def stop(proc):
	proc.send_signal(signal.SIGTERM)
	try:
		proc.wait(timeout=EXIT_TIMEOUT_S)
	except subprocess.TimeoutExpired:
		proc.kill()
		proc.wait()


def main(daemon):
	if os.geteuid() != 0:
		print("FATAL: test-socket-path.py cannot run: tcptapd needs root")
		return 1
	with tempfile.TemporaryDirectory(prefix="tcptap-socket-path-") as tmp:
		victim = os.path.join(tmp, "victim.txt")
		with open(victim, "w") as f:
			f.write("keep me\n")
		status, err = run_to_exit(daemon, victim)
		check("regular file: exit status", 1, status)
		check("regular file: reason", True, "exists and is not a socket" in err)
		with open(victim) as f:
			check("regular file: content kept", "keep me\n", f.read())

		status, err = run_to_exit(daemon, "")
		check("empty path: exit status", 1, status)
		check("empty path: reason", True, "path is empty" in err)

		stale = os.path.join(tmp, "stale.sock")
		with socket.socket(socket.AF_UNIX) as s:
			s.bind(stale)	# bound, never listening: what a killed daemon leaves
		first = subprocess.Popen([daemon, "--socket", stale], stdin=subprocess.DEVNULL,
					 stderr=subprocess.PIPE, text=True)
		try:
			reply = hello(stale)
			check("stale socket: replaced and served", "hello",
			      reply and reply.get("type"))

			status, err = run_to_exit(daemon, stale)
			check("live socket: second daemon exit status", 1, status)
			check("live socket: reason", True, "another daemon is listening" in err)
			reply = hello(stale, timeout_s=5)
			check("live socket: first daemon still served", "hello",
			      reply and reply.get("type"))
		finally:
			stop(first)
		check("first daemon: exit status", 0, first.returncode)
	print("%d failed" % len(failures))
	return 1 if failures else 0


if __name__ == "__main__":
	if len(sys.argv) != 2:
		print("FATAL: usage: test-socket-path.py PATH-TO-TCPTAPD")
		sys.exit(1)
	sys.exit(main(sys.argv[1]))
