# SPDX-License-Identifier: LGPL-2.1-or-later
"""Scripted socket process for the tcptap end-to-end tests.

Usage: agent.py --netns PATH --comm NAME [--cgroup DIR] [--uid UID]

The agent joins the network namespace PATH, moves itself into the cgroup v2
directory DIR, sets its command name (what tcptapd reports as comm) and drops to
UID. It then reads one JSON request per line on stdin and writes one JSON reply
per line on stdout, so the test decides exactly which process and thread does
each connect(), accept() and close().

Every reply carries "t0" and "t1", CLOCK_MONOTONIC nanoseconds read right
before and right after the operation's main system call. The BPF programs
stamp records with the same clock, so the test can demand that a record's
ts_ns lies inside that window. Requests that fail unexpectedly get
{"fatal": "..."} and the test aborts.
"""

import argparse
import ctypes
import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time

PR_SET_NAME = 15
CLONE_NEWNET = 0x40000000
# Not exported by Python's socket module; value from <asm-generic/socket.h>.
SO_COOKIE = 57
RECV_TIMEOUT_S = 10

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}

libc = ctypes.CDLL(None, use_errno=True)


def now_ns():
	return time.monotonic_ns()


def errno_name(code):
	return errno.errorcode.get(code, str(code))


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


def cgroup2_mount():
	"""Return the cgroup v2 mount point, or None if cgroup v2 is not mounted."""
	with open("/proc/self/mountinfo") as f:
		for line in f:
			fields = line.split()
			sep = fields.index("-")
			if fields[sep + 1] == "cgroup2":
				return fields[4]
	return None


def own_cgroup_id():
	"""Return the cgroup v2 id of this process: the inode number of its
	cgroup directory, which is what bpf_get_current_cgroup_id() returns on
	64-bit kernels. None if cgroup v2 is not mounted."""
	mount = cgroup2_mount()
	if mount is None:
		return None
	with open("/proc/self/cgroup") as f:
		for line in f:
			hierarchy, _, path = line.rstrip("\n").split(":", 2)
			if hierarchy == "0":
				return os.stat(mount + path).st_ino
	return None


def cookie_of(sock):
	return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


def endpoint(addr):
	"""Reduce a socket address tuple to [host, port]."""
	return [addr[0], addr[1]]


class Agent:
	def __init__(self):
		self.sockets = {}
		self.next_id = 1

	def add(self, sock):
		sock_id = self.next_id
		self.next_id += 1
		self.sockets[sock_id] = sock
		return sock_id

	def new_socket(self, req):
		sock = socket.socket(FAMILIES[req["family"]], socket.SOCK_STREAM)
		if "v6only" in req:
			sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(req["v6only"]))
		return sock

	def op_listen(self, req):
		sock = self.new_socket(req)
		sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		sock.bind((req["addr"], req.get("port", 0)))
		sock.listen(req.get("backlog", 16))
		local = sock.getsockname()
		return {"sock": self.add(sock), "addr": local[0], "port": local[1]}

	def op_bind(self, req):
		"""Reserve a port without listening, so a SYN to it gets a RST in reply."""
		sock = self.new_socket(req)
		sock.bind((req["addr"], 0))
		local = sock.getsockname()
		return {"sock": self.add(sock), "addr": local[0], "port": local[1]}

	def connect_blocking(self, sock, req, out):
		out["tid"] = threading.get_native_id()
		out["t0"] = now_ns()
		try:
			sock.connect((req["addr"], req["port"]))
			out["error"] = None
		except OSError as e:
			out["error"] = errno_name(e.errno)
		out["t1"] = now_ns()

	def op_connect(self, req):
		"""Connect, blocking unless "nonblock". A blocking connect in
		"thread" runs in a new thread, so its tid differs from the pid."""
		sock = self.new_socket(req)
		if "syncnt" in req:
			sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, req["syncnt"])
		out = {}
		if req.get("nonblock"):
			sock.setblocking(False)
			out["tid"] = threading.get_native_id()
			out["t0"] = now_ns()
			code = sock.connect_ex((req["addr"], req["port"]))
			out["t1"] = now_ns()
			out["error"] = None if code == 0 else errno_name(code)
		elif req.get("thread"):
			worker = threading.Thread(target=self.connect_blocking, args=(sock, req, out))
			worker.start()
			worker.join()
		else:
			self.connect_blocking(sock, req, out)
		# After a refused blocking connect the kernel has reset the source
		# address to the wildcard but kept the port. A pending or established
		# socket reports both.
		out["local"] = endpoint(sock.getsockname())
		if out["error"] is None:
			out["peer"] = endpoint(sock.getpeername())
		out["cookie"] = cookie_of(sock)
		out["sock"] = self.add(sock)
		return out

	def op_wait(self, req):
		"""Wait at most "poll_s" seconds until a non-blocking connect
		finished; return its SO_ERROR."""
		sock = self.sockets[req["sock"]]
		poller = select.poll()
		poller.register(sock, select.POLLOUT)
		t0 = now_ns()
		ready = poller.poll(int(req["poll_s"] * 1000))
		t1 = now_ns()
		if not ready:
			return {"fatal": "connect on socket %d did not finish in %s s"
				% (req["sock"], req["poll_s"])}
		code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
		return {"error": None if code == 0 else errno_name(code), "t0": t0, "t1": t1}

	def accept_blocking(self, listener, plain, out):
		out["tid"] = threading.get_native_id()
		out["t0"] = now_ns()
		try:
			if plain:
				fd = libc.accept(listener.fileno(), None, None)
				if fd < 0:
					err = ctypes.get_errno()
					raise OSError(err, "accept(): %s" % os.strerror(err))
				out["socket"] = socket.socket(fileno=fd)
			else:
				out["socket"], _ = listener.accept()
		except OSError as e:
			out["exception"] = e
		out["t1"] = now_ns()

	def op_accept(self, req):
		"""Accept one connection. Python calls accept4(); with "plain" the
		agent calls libc's accept() instead, which is the accept system call
		on x86_64. With "thread" the call runs in a new thread."""
		listener = self.sockets[req["sock"]]
		plain = req.get("plain", False)
		out = {}
		# Tell the test that accept() is about to block, before blocking.
		print(json.dumps({"accepting": True}), flush=True)
		if req.get("thread"):
			worker = threading.Thread(target=self.accept_blocking,
						  args=(listener, plain, out))
			worker.start()
			worker.join()
		else:
			self.accept_blocking(listener, plain, out)
		if "exception" in out:
			raise out["exception"]
		sock = out.pop("socket")
		try:
			out["peer"] = endpoint(sock.getpeername())
		except OSError as e:
			if e.errno != errno.ENOTCONN:
				raise
			# The peer reset the connection while it waited in the queue.
			out["peer"] = None
		out["local"] = endpoint(sock.getsockname())
		out["cookie"] = cookie_of(sock)
		out["sock"] = self.add(sock)
		return out

	def op_send(self, req):
		self.sockets[req["sock"]].sendall(req["data"].encode())
		return {}

	def op_recv(self, req):
		sock = self.sockets[req["sock"]]
		sock.settimeout(RECV_TIMEOUT_S)
		data = sock.recv(req.get("size", 1))
		sock.settimeout(None)
		return {"data": data.decode()}

	def op_close(self, req):
		"""Close a socket; with "linger0" the close sends a RST instead of a FIN."""
		sock = self.sockets.pop(req["sock"])
		if req.get("linger0"):
			sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
		t0 = now_ns()
		sock.close()
		return {"t0": t0, "t1": now_ns()}

	def op_churn(self, req):
		"""Open and close short IPv4 loopback connections in a loop.

		Each iteration connects and accepts while pinned to connect_cpu,
		then moves to close_cpu and closes both ends at once. With
		"alternate" the two CPUs swap roles every iteration. The loop ends
		after "count" iterations or "duration_s" seconds, whichever comes
		first; "pause_s" sleeps between iterations. Returns the client and
		server cookie of every connection."""
		listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		listener.bind(("127.0.0.1", 0))
		listener.listen(128)
		addr = listener.getsockname()
		connect_cpu, close_cpu = req["connect_cpu"], req["close_cpu"]
		deadline = now_ns() + int(req["duration_s"] * 1e9)
		conns = []
		t0 = now_ns()
		for _ in range(req["count"]):
			if now_ns() >= deadline:
				break
			os.sched_setaffinity(0, {connect_cpu})
			client = socket.create_connection(addr)
			server, _ = listener.accept()
			conns.append([cookie_of(client), cookie_of(server)])
			if close_cpu != connect_cpu:
				os.sched_setaffinity(0, {close_cpu})
			client.close()
			server.close()
			if req.get("alternate"):
				connect_cpu, close_cpu = close_cpu, connect_cpu
			if req.get("pause_s"):
				time.sleep(req["pause_s"])
		t1 = now_ns()
		listener.close()
		return {"conns": conns, "t0": t0, "t1": t1}

	def op_affinity(self, req):
		os.sched_setaffinity(0, set(req["cpus"]))
		return {}

	def serve(self):
		for line in sys.stdin:
			req = json.loads(line)
			if req["op"] == "exit":
				break
			handler = getattr(self, "op_" + req["op"], None)
			if handler is None:
				reply = {"fatal": "unknown op %r" % req["op"]}
			else:
				try:
					reply = handler(req)
				except OSError as e:
					reply = {"fatal": "%s failed: %s" % (req["op"], e)}
			print(json.dumps(reply), flush=True)
		for sock in self.sockets.values():
			sock.close()


def main():
	parser = argparse.ArgumentParser()
	parser.add_argument("--netns", required=True)
	parser.add_argument("--comm", required=True)
	parser.add_argument("--cgroup")
	parser.add_argument("--uid", type=int)
	args = parser.parse_args()

	join_netns(args.netns)
	if args.cgroup:
		with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as f:
			f.write("%d\n" % os.getpid())
	set_comm(args.comm)
	if args.uid is not None:
		os.setgroups([])
		os.setgid(args.uid)
		os.setuid(args.uid)

	print(json.dumps({"pid": os.getpid(), "tid": threading.get_native_id(),
			  "uid": os.getuid(), "cgroup": own_cgroup_id(),
			  "comm": open("/proc/self/comm").read().strip()}), flush=True)
	Agent().serve()


if __name__ == "__main__":
	main()
