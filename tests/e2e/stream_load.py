# SPDX-License-Identifier: LGPL-2.1-or-later
"""Load generator of the stream tests, with the ground truth they compare against.

Usage: stream_load.py --netns PATH --comm NAME

The process joins the network namespace PATH, names itself NAME (what tcptapd
reports as comm), listens on 127.0.0.1 and ::1 and then reads one JSON command
per line on stdin. It is single-threaded, so every record it causes carries
tid == pid. Each reply is one JSON line on stdout.

Commands:
  {"op": "hold", "count": N}         open N connections and keep them open
  {"op": "release"}                  close every held connection
  {"op": "burst", "count": N}        open and close N connections, one after another
  {"op": "refuse", "count": N}       N connects to a port with no listener (connect_failed)
  {"op": "churn_start", "pool": K, "pause_ms": P, "max_count": C, "max_duration_s": S}
                                     open one connection every P ms and close the oldest
                                     once more than K are open, between commands, until
                                     churn_stop or C connections or S seconds
  {"op": "churn_stop"}               close the churn's open connections and stop
  {"op": "status"}                   number of connections churned so far
  {"op": "exit"}

hold, release, burst and churn_stop reply {"ends": [...]}: one entry per socket
end (client and server end of each connection) with its cookie, addresses and
CLOCK_MONOTONIC windows, which the BPF programs stamp records with:
  "open"   [t0, t1]: the end may exist from t0 and certainly exists at t1;
  "intro"  [t0, t1]: the window of the connect() or accept() call whose record
           introduces the end;
  "close"  [t0, t1]: the window of its close() call, or null while it is open.
The load alternates IPv4 and IPv6 and which end closes first. Errors end
the process with {"fatal": "..."}.
"""

import argparse
import ctypes
import json
import os
import select
import socket
import struct
import sys
import time

PR_SET_NAME = 15
CLONE_NEWNET = 0x40000000
# Not exported by Python's socket module; value from <asm-generic/socket.h>.
SO_COOKIE = 57
ACCEPT_TIMEOUT_S = 5
LISTEN_BACKLOG = 512
FAMILIES = (("inet", socket.AF_INET, "127.0.0.1"), ("inet6", socket.AF_INET6, "::1"))

libc = ctypes.CDLL(None, use_errno=True)


def now_ns():
	return time.monotonic_ns()


def join_netns(path):
	fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
	try:
		if libc.setns(fd, CLONE_NEWNET) != 0:
			err = ctypes.get_errno()
			raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
	finally:
		os.close(fd)


def set_comm(name):
	if libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0) != 0:
		err = ctypes.get_errno()
		raise OSError(err, "prctl(PR_SET_NAME): %s" % os.strerror(err))


def cookie_of(sock):
	return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


def endpoint(addr):
	return [addr[0], addr[1]]


class Connection:
	"""Both ends of one loopback connection and their ground truth."""

	def __init__(self, number, family_name, family, host, port, listener):
		self.number = number
		self.client = socket.socket(family, socket.SOCK_STREAM)
		t_connect0 = now_ns()
		self.client.connect((host, port))
		t_connect1 = now_ns()
		t_accept0 = now_ns()
		self.server, _ = listener.accept()
		t_accept1 = now_ns()
		self.ends = {
			"client": self._end("client", family_name, self.client,
					    [t_connect0, t_connect1], [t_connect0, t_connect1]),
			"server": self._end("server", family_name, self.server,
					    [t_connect0, t_accept1], [t_accept0, t_accept1]),
		}

	def _end(self, role, family_name, sock, open_window, intro_window):
		return {"conn": self.number, "role": role, "family": family_name,
			"cookie": cookie_of(sock), "local": endpoint(sock.getsockname()),
			"peer": endpoint(sock.getpeername()), "open": open_window,
			"intro": intro_window, "close": None}

	def close(self):
		"""Close both ends; even-numbered connections close the client first."""
		order = ["client", "server"] if self.number % 2 == 0 else ["server", "client"]
		for role in order:
			sock = self.client if role == "client" else self.server
			t0 = now_ns()
			sock.close()
			self.ends[role]["close"] = [t0, now_ns()]

	def end_list(self):
		return [self.ends["client"], self.ends["server"]]


class Load:
	def __init__(self):
		self.listeners = []
		for family_name, family, host in FAMILIES:
			listener = socket.socket(family, socket.SOCK_STREAM)
			listener.bind((host, 0))
			listener.listen(LISTEN_BACKLOG)
			listener.settimeout(ACCEPT_TIMEOUT_S)
			self.listeners.append((family_name, family, host, listener.getsockname()[1],
					       listener))
		self.next_number = 0
		self.held = []
		self.churn = None

	def open_connection(self):
		family_name, family, host, port, listener = \
			self.listeners[self.next_number % len(self.listeners)]
		conn = Connection(self.next_number, family_name, family, host, port, listener)
		self.next_number += 1
		return conn

	def op_hold(self, req):
		conns = [self.open_connection() for _ in range(req["count"])]
		self.held += conns
		return {"ends": [e for c in conns for e in c.end_list()]}

	def op_release(self, req):
		for conn in self.held:
			conn.close()
		ends = [e for c in self.held for e in c.end_list()]
		self.held = []
		return {"ends": ends}

	def op_burst(self, req):
		ends = []
		for _ in range(req["count"]):
			conn = self.open_connection()
			conn.close()
			ends += conn.end_list()
		return {"ends": ends}

	def op_refuse(self, req):
		"""Connect to a port that is bound but not listening, so the kernel
		replies to the SYN with a RST and connect() fails with ECONNREFUSED."""
		blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		blocker.bind(("127.0.0.1", 0))
		port = blocker.getsockname()[1]
		attempts = []
		for _ in range(req["count"]):
			sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
			t0 = now_ns()
			code = sock.connect_ex(("127.0.0.1", port))
			t1 = now_ns()
			attempts.append({"cookie": cookie_of(sock), "error": code,
					 "local": endpoint(sock.getsockname()),
					 "peer": ["127.0.0.1", port], "window": [t0, t1]})
			sock.close()
		blocker.close()
		return {"attempts": attempts}

	def op_churn_start(self, req):
		self.churn = {
			"pool": req["pool"], "pause_ns": int(req["pause_ms"] * 1e6),
			"max_count": req["max_count"],
			"deadline": now_ns() + int(req["max_duration_s"] * 1e9),
			"open": [], "closed": [], "count": 0, "limited": False, "next_ns": 0,
		}
		return {"started": True}

	def churn_step(self):
		churn = self.churn
		if churn["count"] >= churn["max_count"] or now_ns() >= churn["deadline"]:
			churn["limited"] = True
			return
		churn["open"].append(self.open_connection())
		churn["count"] += 1
		while len(churn["open"]) > churn["pool"]:
			conn = churn["open"].pop(0)
			conn.close()
			churn["closed"].append(conn)
		churn["next_ns"] = now_ns() + churn["pause_ns"]

	def churn_timeout_s(self):
		"""Return how long the command loop may wait for input before the
		next churn step is due, or None without an active churn."""
		if self.churn is None or self.churn["limited"]:
			return None
		return max(0.0, (self.churn["next_ns"] - now_ns()) / 1e9)

	def op_churn_stop(self, req):
		churn = self.churn
		if churn is None:
			return {"fatal": "churn_stop without churn_start"}
		for conn in churn["open"]:
			conn.close()
		conns = churn["closed"] + churn["open"]
		self.churn = None
		return {"ends": [e for c in conns for e in c.end_list()], "count": churn["count"],
			"limited": churn["limited"]}

	def op_status(self, req):
		return {"churned": self.churn["count"] if self.churn else 0}

	def handle(self, line):
		req = json.loads(line)
		handler = getattr(self, "op_" + req["op"], None)
		if handler is None:
			return {"fatal": "unknown op %r" % req["op"]}
		try:
			return handler(req)
		except OSError as e:
			return {"fatal": "%s failed: %s" % (req["op"], e)}

	def serve(self):
		"""Run commands from stdin; churn steps run whenever no command waits."""
		stdin = sys.stdin.fileno()
		pending = b""
		while True:
			while b"\n" in pending:
				line, pending = pending.split(b"\n", 1)
				if json.loads(line)["op"] == "exit":
					return
				reply = self.handle(line)
				print(json.dumps(reply), flush=True)
				if "fatal" in reply:
					return
			readable, _, _ = select.select([stdin], [], [], self.churn_timeout_s())
			if readable:
				data = os.read(stdin, 65536)
				if not data:
					return
				pending += data
				continue
			try:
				self.churn_step()
			except OSError as e:
				print(json.dumps({"fatal": "churn failed: %s" % e}), flush=True)
				return


def main():
	parser = argparse.ArgumentParser()
	parser.add_argument("--netns", required=True)
	parser.add_argument("--comm", required=True)
	args = parser.parse_args()

	join_netns(args.netns)
	set_comm(args.comm)
	load = Load()
	print(json.dumps({"pid": os.getpid(), "comm": open("/proc/self/comm").read().strip(),
			  "uid": os.getuid()}), flush=True)
	load.serve()


if __name__ == "__main__":
	main()
