# SPDX-License-Identifier: LGPL-2.1-or-later
"""Harness shared by the tcptap end-to-end tests.

The tests run the real tcptapd against the running kernel, with the tracepoint
backend unless the environment variable TCPTAP_E2E_BACKEND names another one
(the VM suite runs them under every backend). Each test creates its own
network namespace, starts scripted socket processes in it (agent.py),
subscribes to the daemon with a netns filter and compares the records it
receives with what its processes did.

A test that cannot run (not root, no tracefs, tcptapd does not start) prints
"FATAL: <test> cannot run: <reason>" and exits 1: these tests never skip.
Everything a test creates (daemons, agents, namespaces, cgroups) is removed
by Session when the test ends, also on failure, exceptions and SIGTERM.
"""

import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

PYTHON = "/usr/bin/python3"
AGENT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
TRACEFS = "/sys/kernel/tracing"
TEST_NAME = os.path.basename(sys.argv[0])

READY_TIMEOUT_S = 20		# tcptapd start until its socket sends hello
STOP_TIMEOUT_S = 10		# SIGTERM until tcptapd exits
AGENT_START_TIMEOUT_S = 10
AGENT_REPLY_TIMEOUT_S = 30	# default for one agent request
RECORD_WAIT_S = 15		# last action until its records arrive
SETTLE_S = 1.0			# extra wait after the expected records, to catch stray ones
STDERR_TAIL_LINES = 200

NOBODY_UID = 65534
# Backend tcptapd runs with; set it before a Session starts a daemon.
BACKEND = os.environ.get("TCPTAP_E2E_BACKEND", "tracepoint")
EVENT_TYPES = ("connect", "accept", "close", "connect_failed")
INTRO_TYPES = ("connect", "accept")
# Fields a close record copies from the record that introduced its connection.
INTRO_FIELDS = ("pid", "tid", "comm", "uid", "cgroup", "family", "saddr", "sport", "daddr",
		"dport", "netns", "cookie")


def log(message):
	try:
		print(message, flush=True)
	except OSError:
		# stdout is gone (a closed pipe): keep going so the cleanup still runs.
		pass


def fatal(reason):
	"""Stop a test whose prerequisites are missing. Exit 1, never skip."""
	log("FATAL: %s cannot run: %s" % (TEST_NAME, reason))
	sys.exit(1)


def run_command(argv):
	result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
	if result.returncode != 0:
		raise RuntimeError("'%s' failed with status %d: %s"
				   % (" ".join(argv), result.returncode, result.stderr.strip()))
	return result.stdout


def daemon_path_from_argv(argv):
	if len(argv) != 2:
		fatal("usage: %s PATH-TO-TCPTAPD" % TEST_NAME)
	path = argv[1]
	if not os.access(path, os.X_OK):
		fatal("tcptapd binary '%s' is missing or not executable" % path)
	return path


def require_environment(min_cpus=1):
	"""Check root, iproute2, tracefs (mounted here if missing) and the CPU count."""
	if os.geteuid() != 0:
		fatal("must run as root: it loads BPF programs and creates network namespaces")
	if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/usr/bin/ip"):
		fatal("iproute2's 'ip' is not installed (Debian package iproute2)")
	if not os.path.isdir(os.path.join(TRACEFS, "events")):
		result = subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACEFS],
					capture_output=True, text=True)
		if not os.path.isdir(os.path.join(TRACEFS, "events")):
			fatal("tracefs is not mounted on %s and mounting it failed: %s"
			      % (TRACEFS, result.stderr.strip()))
		log("mounted tracefs on %s" % TRACEFS)
	tracepoint = os.path.join(TRACEFS, "events/sock/inet_sock_set_state")
	if not os.path.isdir(tracepoint):
		fatal("the kernel has no tracepoint sock:inet_sock_set_state (%s missing)"
		      % tracepoint)
	cpus = sorted(os.sched_getaffinity(0))
	if len(cpus) < min_cpus:
		fatal("needs %d CPUs, this process may run on %s" % (min_cpus, cpus))
	return cpus


def cgroup2_mount():
	with open("/proc/self/mountinfo") as f:
		for line in f:
			fields = line.split()
			sep = fields.index("-")
			if fields[sep + 1] == "cgroup2":
				return fields[4]
	return None


def wire_address(host):
	"""Return (family, address) the way tcptapd reports a socket address:
	an IPv4-mapped IPv6 address is reported as IPv4."""
	ip = ipaddress.ip_address(host.split("%")[0])
	if ip.version == 6 and ip.ipv4_mapped is not None:
		return "inet", str(ip.ipv4_mapped)
	return ("inet" if ip.version == 4 else "inet6"), str(ip)


class Netns:
	def __init__(self, name):
		self.name = name
		self.path = "/run/netns/" + name
		self.inode = os.stat(self.path).st_ino


class AgentError(Exception):
	pass


class Agent:
	"""One agent.py process: a named process in the test's namespace that
	performs the socket calls the test sends it."""

	def __init__(self, netns, comm, uid=None, cgroup=None):
		argv = [PYTHON, AGENT_PATH, "--netns", netns.path, "--comm", comm]
		if uid is not None:
			argv += ["--uid", str(uid)]
		if cgroup is not None:
			argv += ["--cgroup", cgroup]
		self.comm = comm
		self.accepting = False
		self.lines = queue.Queue()
		self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
					     text=True, bufsize=1)
		self.pid = self.proc.pid
		self.reader = threading.Thread(target=self._read_lines, daemon=True)
		self.reader.start()
		info = self.reply(AGENT_START_TIMEOUT_S)
		self.tid = info["tid"]
		self.uid = info["uid"]
		self.cgroup = info["cgroup"]
		if info["pid"] != self.pid or info["comm"] != comm:
			raise AgentError("agent started as pid %d comm '%s', expected pid %d comm '%s'"
					 % (info["pid"], info["comm"], self.pid, comm))

	def _read_lines(self):
		for line in self.proc.stdout:
			self.lines.put(line)
		self.lines.put(None)

	def send(self, op, **args):
		args["op"] = op
		self.proc.stdin.write(json.dumps(args) + "\n")
		self.proc.stdin.flush()

	def _next_message(self, timeout_s):
		try:
			line = self.lines.get(timeout=timeout_s)
		except queue.Empty:
			raise AgentError("agent '%s' (pid %d) sent no reply in %s s"
					 % (self.comm, self.pid, timeout_s)) from None
		if line is None:
			raise AgentError("agent '%s' (pid %d) exited with status %s"
					 % (self.comm, self.pid, self.proc.wait()))
		message = json.loads(line)
		if "fatal" in message:
			raise AgentError("agent '%s' (pid %d): %s"
					 % (self.comm, self.pid, message["fatal"]))
		return message

	def reply(self, timeout_s=AGENT_REPLY_TIMEOUT_S):
		while True:
			message = self._next_message(timeout_s)
			if message.get("accepting"):
				self.accepting = True
				continue
			return message

	def wait_accepting(self, timeout_s=AGENT_REPLY_TIMEOUT_S):
		"""Consume the note the agent sends right before it calls accept()."""
		message = self._next_message(timeout_s)
		if not message.get("accepting"):
			raise AgentError("agent '%s' (pid %d) sent %s, expected its accept() note"
					 % (self.comm, self.pid, message))
		self.accepting = True

	def call(self, op, timeout_s=AGENT_REPLY_TIMEOUT_S, **args):
		self.send(op, **args)
		return self.reply(timeout_s)

	def stop(self):
		"""Ask the agent to exit; kill it by pid if it does not within 5 s
		(it may be blocked in accept())."""
		if self.proc.poll() is None:
			try:
				self.send("exit")
			except (BrokenPipeError, OSError):
				pass
			try:
				self.proc.wait(5)
			except subprocess.TimeoutExpired:
				os.kill(self.pid, signal.SIGKILL)
				self.proc.wait()
		self.proc.stdin.close()


PIN_AND_EXEC = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); " \
	"os.execv(sys.argv[2], sys.argv[2:])"


class Daemon:
	"""tcptapd in the foreground with the backend BACKEND, stderr kept in a file."""

	def __init__(self, binary, workdir, label, args, cpu=None):
		self.label = label
		self.socket_path = os.path.join(workdir, label + ".sock")
		self.stderr_path = os.path.join(workdir, label + ".stderr")
		self.argv = [binary, "--socket", self.socket_path, "--backend", BACKEND] + args
		command = self.argv
		if cpu is not None:
			# Pin before exec, so that every thread of tcptapd inherits it;
			# the pid stays the same.
			command = [PYTHON, "-c", PIN_AND_EXEC, str(cpu)] + self.argv
		log("starting%s: %s" % ("" if cpu is None else " on cpu %d" % cpu,
					" ".join(self.argv)))
		with open(self.stderr_path, "w") as stderr_file:
			self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
						     stdout=stderr_file, stderr=stderr_file)
		self.pid = self.proc.pid
		self.exit_status = None

	def stderr_text(self):
		with open(self.stderr_path, errors="replace") as f:
			return f.read()

	def stderr_tail(self):
		lines = self.stderr_text().splitlines()
		return "\n".join(lines[-STDERR_TAIL_LINES:])

	def _probe(self, request):
		"""Return the first line the socket sends after request, or None."""
		probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		probe.settimeout(1.0)
		try:
			probe.connect(self.socket_path)
			probe.sendall((json.dumps(request) + "\n").encode())
			data = b""
			while b"\n" not in data:
				chunk = probe.recv(4096)
				if not chunk:
					return None
				data += chunk
			return json.loads(data.split(b"\n", 1)[0])
		except (OSError, ValueError):
			return None
		finally:
			probe.close()

	def wait_ready(self, request):
		"""Poll until the socket replies to request with a hello. Stop the
		test with FATAL if tcptapd exits or sends nothing for READY_TIMEOUT_S."""
		deadline = time.monotonic() + READY_TIMEOUT_S
		while True:
			status = self.proc.poll()
			if status is not None:
				fatal("tcptapd exited with status %d before it was ready; its stderr:\n%s"
				      % (status, self.stderr_tail()))
			if os.path.exists(self.socket_path):
				first = self._probe(request)
				if first is not None and first.get("type") == "hello":
					log("tcptapd pid %d ready: %s" % (self.pid, json.dumps(first)))
					return first
			if time.monotonic() >= deadline:
				fatal("tcptapd sent no hello on %s within %d s; its stderr:\n%s"
				      % (self.socket_path, READY_TIMEOUT_S, self.stderr_tail()))
			time.sleep(0.1)

	def stop(self):
		"""Send SIGTERM and wait; return the exit status, or None if tcptapd
		had to be killed after STOP_TIMEOUT_S."""
		if self.exit_status is not None:
			return self.exit_status
		if self.proc.poll() is None:
			os.kill(self.pid, signal.SIGTERM)
			try:
				self.proc.wait(STOP_TIMEOUT_S)
			except subprocess.TimeoutExpired:
				log("tcptapd pid %d still running %d s after SIGTERM, killing it"
				    % (self.pid, STOP_TIMEOUT_S))
				os.kill(self.pid, signal.SIGKILL)
				self.proc.wait()
				self.exit_status = None
				return None
		self.exit_status = self.proc.returncode
		return self.exit_status


class Subscriber:
	"""A client of tcptapd's socket. A reader thread sorts the lines into
	hello, snapshot, snapshot_end and live records."""

	def __init__(self, socket_path, request):
		self.request = request
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		self.sock.connect(socket_path)
		self.sock.sendall((json.dumps(request) + "\n").encode())
		self.cond = threading.Condition()
		self.hello = None
		self.snapshot = []
		self.snapshot_end = None
		self.live = []
		self.problems = []	# protocol violations seen by the reader
		self.eof = False
		self.reader = threading.Thread(target=self._read_loop, daemon=True)
		self.reader.start()

	def _read_loop(self):
		pending = b""
		while True:
			try:
				data = self.sock.recv(1 << 16)
			except OSError:
				break
			if not data:
				break
			pending += data
			while b"\n" in pending:
				line, pending = pending.split(b"\n", 1)
				self._handle(line)
		with self.cond:
			if pending:
				self.problems.append("stream ended inside a line: %r" % pending[:200])
			self.eof = True
			self.cond.notify_all()

	def _handle(self, line):
		try:
			record = json.loads(line)
		except ValueError:
			with self.cond:
				self.problems.append("line is not JSON: %r" % line[:200])
			return
		kind = record.get("type")
		with self.cond:
			if self.hello is None:
				if kind == "hello":
					self.hello = record
				else:
					self.problems.append("first line is not a hello: %s" % line[:200])
			elif self.snapshot_end is None:
				if kind == "snapshot":
					self.snapshot.append(record)
				elif kind == "snapshot_end":
					self.snapshot_end = record
				else:
					self.problems.append("'%s' record before snapshot_end: %s"
							     % (kind, line[:200]))
			else:
				self.live.append(record)
				if kind in ("error", "overflow"):
					self.problems.append("daemon sent: %s" % line[:300])
			self.cond.notify_all()

	def wait_snapshot(self, timeout_s=10):
		with self.cond:
			return self.cond.wait_for(lambda: self.snapshot_end is not None or self.eof,
						  timeout_s) and self.snapshot_end is not None

	def wait_for(self, predicate, timeout_s=RECORD_WAIT_S):
		"""Wait until predicate(live records) holds; return whether it does."""
		with self.cond:
			self.cond.wait_for(lambda: self.eof or predicate(self.live), timeout_s)
			return predicate(self.live)

	def records(self):
		with self.cond:
			return list(self.live)

	def close(self):
		try:
			self.sock.shutdown(socket.SHUT_RDWR)
		except OSError:
			pass
		self.sock.close()
		self.reader.join(5)


class Checker:
	"""Collects failed checks. Each failure prints the expected and the
	actual value, and the test goes on so that it reports every problem."""

	def __init__(self):
		self.failures = []
		self.passed = 0

	def fail(self, name, expected, actual):
		self.failures.append(name)
		log("FAIL: %s\n  expected: %s\n  actual:   %s" % (name, expected, actual))
		return False

	def check(self, ok, name, expected, actual):
		if ok:
			self.passed += 1
			return True
		return self.fail(name, expected, actual)

	def equal(self, name, expected, actual):
		return self.check(expected == actual, name, expected, actual)

	def record(self, name, record, fields, window=None):
		"""Compare record with the expected fields and, if given, demand
		window[0] <= ts_ns <= window[1] (CLOCK_MONOTONIC ns)."""
		rows = []
		for key, value in fields.items():
			if record.get(key) != value:
				rows.append((key, value, record.get(key, "(missing)")))
		if window is not None:
			ts = record.get("ts_ns")
			if not isinstance(ts, int) or not window[0] <= ts <= window[1]:
				rows.append(("ts_ns", "in [%d, %d]" % window, ts))
		if not rows:
			self.passed += 1
			return True
		self.failures.append(name)
		table = "\n".join("    %-8s expected %-28s actual %s" % (k, describe(e), describe(a))
				  for k, e, a in rows)
		log("FAIL: %s\n%s\n  record: %s" % (name, table, json.dumps(record)))
		return False

	def finish(self):
		log("%d checks passed, %d failed" % (self.passed, len(self.failures)))
		if self.failures:
			log("FAILED checks:")
			for name in self.failures:
				log("  - " + name)
			return 1
		return 0


class AnyErrno:
	"""Expected value of an "error" field whose errno name is not fixed."""

	def __eq__(self, other):
		return isinstance(other, str) and other.startswith("E") and other.isupper()

	def __repr__(self):
		return "any errno name"


def describe(value):
	return json.dumps(value, default=repr)


class Expect:
	"""A record the test expects: its fields, cookie included, and the
	CLOCK_MONOTONIC window its ts_ns must fall in."""

	def __init__(self, name, fields, window):
		self.name = name
		self.fields = fields
		self.window = window

	@property
	def key(self):
		return (self.fields["type"], self.fields["cookie"])


def event_records(records):
	return [r for r in records if r.get("type") in EVENT_TYPES]


def connection_fields(record_type, agent, netns, local, peer, cookie, tid):
	"""Return the fields tcptapd must report for one end of a connection:
	local is this host's end of the socket, peer the other one."""
	family, saddr = wire_address(local[0])
	peer_family, daddr = wire_address(peer[0])
	assert family == peer_family, (local, peer)
	fields = {"type": record_type, "family": family, "saddr": saddr, "sport": local[1],
		  "daddr": daddr, "dport": peer[1], "pid": agent.pid, "tid": tid,
		  "comm": agent.comm, "uid": agent.uid, "netns": netns.inode, "cookie": cookie}
	if agent.cgroup is not None:
		fields["cgroup"] = agent.cgroup
	return fields


def keys_present(records, expects):
	records = resolve_synthetic_cookies(None, records, expects)
	seen = {(r.get("type"), r.get("cookie")) for r in records}
	return all(e.key in seen for e in expects)


SYNTHETIC_COOKIE_BIT = 1 << 63
TUPLE_FIELDS = ("netns", "family", "saddr", "sport", "daddr", "dport")


def resolve_synthetic_cookies(checker, records, expects):
	"""Return records with tcptap-assigned cookies replaced by the socket's
	own. The kprobe backend cannot get a socket's cookie from the kernel and
	reports one of its own with bit 63 set, which SO_COOKIE never returns.
	Such a record is matched to its expectation by netns and 4-tuple, and all
	records of one synthetic cookie must name the same socket."""
	by_tuple = {tuple(e.fields.get(f) for f in TUPLE_FIELDS): e.fields["cookie"]
		    for e in expects}
	resolved, seen = [], {}
	for record in records:
		cookie = record.get("cookie")
		if not isinstance(cookie, int) or not cookie & SYNTHETIC_COOKIE_BIT:
			resolved.append(record)
			continue
		real = by_tuple.get(tuple(record.get(f) for f in TUPLE_FIELDS))
		if real is None:
			resolved.append(record)
			continue
		if seen.setdefault(cookie, real) != real and checker is not None:
			checker.fail("synthetic cookie %d names one socket" % cookie,
				     "cookie %d" % seen[cookie], json.dumps(record))
		resolved.append(dict(record, cookie=real))
	return resolved


def connections_not_paired(records, conns):
	"""Return the connection ends (cookie, their record types) whose records
	are not exactly an introduction then a close. conns contains (client
	cookie, server cookie) pairs as SO_COOKIE read them. Records with synthetic
	cookies (kprobe backend) cannot be tied to SO_COOKIE values, so they are
	checked by shape: one [connect, close] and one [accept, close] group per
	connection."""
	seen = {}
	for record in event_records(records):
		seen.setdefault(record.get("cookie"), []).append(record["type"])
	if any(isinstance(c, int) and c & SYNTHETIC_COOKIE_BIT for c in seen):
		groups = sorted(tuple(types) for types in seen.values())
		expected = sorted([("connect", "close")] * len(conns) + [("accept", "close")] * len(conns))
		wrong = [g for g in groups if g not in (("connect", "close"), ("accept", "close"))]
		if groups != expected:
			wrong.append(("record groups", len(groups), "expected", len(expected)))
		return wrong
	wrong = []
	for client, server in conns:
		if seen.get(client) != ["connect", "close"]:
			wrong.append((client, seen.get(client)))
		if seen.get(server) != ["accept", "close"]:
			wrong.append((server, seen.get(server)))
	return wrong


def check_expected(checker, records, expects):
	"""Match every expectation to exactly one received record by (type,
	cookie), and fail on every event record that no expectation matches."""
	by_key = {}
	records = resolve_synthetic_cookies(checker, records, expects)
	for record in event_records(records):
		by_key.setdefault((record["type"], record.get("cookie")), []).append(record)
	for expect in expects:
		found = by_key.get(expect.key, [])
		if not found:
			checker.fail("%s: record received" % expect.name, describe(expect.fields),
				     "no %s record with cookie %s" % expect.key)
		elif len(found) > 1:
			checker.fail("%s: exactly one record" % expect.name, describe(expect.fields),
				     "%d records: %s" % (len(found), json.dumps(found)))
		else:
			checker.record(expect.name, found[0], expect.fields, expect.window)
	expected_keys = {e.key for e in expects}
	for record in event_records(records):
		if (record["type"], record.get("cookie")) not in expected_keys:
			checker.fail("no unexpected record", "only the records the test caused",
				     json.dumps(record))


def check_lifecycles(checker, records, seeded=None):
	"""Check per connection: one introduction (connect or accept, or a
	snapshot record in seeded, a dict cookie -> record) before at most one
	close, the close copying the introduction's fields, and no connect or
	close for a cookie that had a connect_failed. Return the open cookies."""
	intro = dict(seeded or {})
	closed = set()
	failed = set()
	for record in event_records(records):
		kind = record["type"]
		cookie = record.get("cookie")
		if kind in INTRO_TYPES:
			if cookie in intro:
				checker.fail("single introduction of cookie %s" % cookie,
					     "one connect/accept", "also %s" % json.dumps(record))
			if cookie in failed:
				checker.fail("no %s after connect_failed of cookie %s" % (kind, cookie),
					     "nothing", json.dumps(record))
			intro[cookie] = record
		elif kind == "close":
			if cookie not in intro:
				checker.fail("close only after an introduction (cookie %s)" % cookie,
					     "a connect/accept/snapshot record before this close",
					     json.dumps(record))
				continue
			if cookie in closed:
				checker.fail("single close of cookie %s" % cookie, "one close",
					     "another %s" % json.dumps(record))
			closed.add(cookie)
			source = intro[cookie]
			diffs = {k: (source.get(k), record.get(k)) for k in INTRO_FIELDS
				 if source.get(k) != record.get(k)}
			checker.check(not diffs, "close of cookie %s copies its %s record" % (
				cookie, source.get("type")), json.dumps(source),
				"%s differs: %s" % (json.dumps(record), diffs))
		elif kind == "connect_failed":
			if cookie in intro or cookie in failed:
				checker.fail("connect_failed of cookie %s alone" % cookie,
					     "no other record for this cookie", json.dumps(record))
			failed.add(cookie)
	return set(intro) - closed


def order_problems(records):
	"""Return (seq problems, ts inversions) over records in arrival order.
	A ts inversion is a record with ts_ns below one received before it;
	each is (record, highest ts_ns seen before)."""
	seq_problems = []
	inversions = []
	last_seq = None
	max_ts = None
	for record in records:
		seq = record.get("seq")
		if seq is not None:
			if last_seq is not None and seq <= last_seq:
				seq_problems.append((record, last_seq))
			last_seq = seq
		ts = record.get("ts_ns")
		if ts is not None:
			if max_ts is not None and ts < max_ts:
				inversions.append((record, max_ts))
			max_ts = ts if max_ts is None else max(max_ts, ts)
	return seq_problems, inversions


def check_stream(checker, subscriber, netns, allow_late=False):
	"""Check the whole stream one subscriber received: no protocol problem,
	the netns filter honoured, seq strictly increasing and above the
	snapshot's, ts_ns non-decreasing. Unless allow_late, no late record
	either; with it, every ts inversion must carry late."""
	records = subscriber.records()
	checker.equal("protocol problems on the subscriber's stream", [], subscriber.problems)

	foreign = [r for r in event_records(records) if r.get("netns") != netns.inode]
	checker.equal("records outside netns %d despite the netns filter" % netns.inode, [],
		      foreign[:5])
	# tcptapd traces the whole host, so a lost record may count samples of
	# other programs' connections. It fails the test only through the
	# records the test then misses.
	lost = [r for r in records if r.get("type") == "lost"]
	if lost:
		log("NOTE: tcptapd lost %d samples (%s); records missing below may be among them"
		    % (sum(r.get("count", 0) for r in lost), json.dumps(lost[:5])))
	if records and subscriber.snapshot_end is not None and "seq" in records[0]:
		checker.check(records[0]["seq"] > subscriber.snapshot_end.get("seq", -1),
			      "first live seq above snapshot_end's seq",
			      "> %s" % subscriber.snapshot_end.get("seq"), records[0]["seq"])

	seq_problems, inversions = order_problems(records)
	checker.equal("records whose seq is not above the previous record's", [],
		      [(r, last) for r, last in seq_problems[:5]])
	late = [r for r in records if r.get("late")]
	if allow_late:
		unflagged = [(r, m) for r, m in inversions if not r.get("late")]
		checker.equal("ts_ns inversions without late:true", [], unflagged[:5])
	else:
		checker.equal("records with ts_ns below an earlier record's", [], inversions[:5])
		checker.equal("late records", [], late[:5])
	return records


class Session:
	"""Owns everything a test creates and removes it in reverse order on
	exit, whatever the exit reason. SIGTERM (meson's timeout) and SIGINT
	become SystemExit so the cleanup runs."""

	def __init__(self):
		self.name = "tcptap-e2e-%d" % os.getpid()
		self.workdir = tempfile.mkdtemp(prefix="tcptap-e2e-")
		self.checker = Checker()
		self.cleanups = []
		self.daemons = []
		self.netns_count = 0

	def __enter__(self):
		def on_signal(signum, frame):
			raise SystemExit("killed by signal %d" % signum)
		signal.signal(signal.SIGTERM, on_signal)
		signal.signal(signal.SIGINT, on_signal)
		return self

	def __exit__(self, exc_type, exc, tb):
		if exc_type is not None and exc_type is not SystemExit:
			self.checker.failures.append("test raised %s: %s" % (exc_type.__name__, exc))
			log("ERROR: the test raised an exception:")
			traceback.print_exception(exc_type, exc, tb, file=sys.stdout)
		for description, action in reversed(self.cleanups):
			try:
				action()
			except Exception as e:
				log("cleanup of %s failed: %s" % (description, e))
				self.checker.failures.append("cleanup of %s" % description)
		if self.checker.failures or exc_type is not None:
			for daemon in self.daemons:
				log("---- stderr of %s (%s), last %d lines ----"
				    % (daemon.label, " ".join(daemon.argv), STDERR_TAIL_LINES))
				log(daemon.stderr_tail())
				log("---- end of stderr of %s ----" % daemon.label)
		else:
			for daemon in self.daemons:
				os.unlink(daemon.stderr_path)
		for daemon in self.daemons:
			# tcptapd leaves its socket file behind when it exits.
			if os.path.exists(daemon.socket_path):
				os.unlink(daemon.socket_path)
		try:
			os.rmdir(self.workdir)
		except OSError:
			log("kept %s" % self.workdir)
		signal.signal(signal.SIGTERM, signal.SIG_DFL)
		signal.signal(signal.SIGINT, signal.SIG_DFL)
		if exc_type is not None and exc_type is not SystemExit:
			self.checker.finish()
			sys.exit(1)
		return False

	def netns(self):
		"""Create a network namespace with lo up; deleted at the end."""
		self.netns_count += 1
		name = "%s-%d" % (self.name, self.netns_count)
		run_command(["ip", "netns", "add", name])
		self.cleanups.append(("network namespace " + name,
				      lambda: run_command(["ip", "netns", "delete", name])))
		run_command(["ip", "-n", name, "link", "set", "lo", "up"])
		netns = Netns(name)
		log("network namespace %s, inode %d" % (name, netns.inode))
		return netns

	def cgroup(self):
		"""Create a cgroup v2 directory for the agents, so the records'
		cgroup field is not the root's id; None without cgroup v2."""
		mount = cgroup2_mount()
		if mount is None:
			log("NOTE: no cgroup v2 mount, the cgroup field is not checked")
			return None
		path = os.path.join(mount, self.name)
		os.mkdir(path)
		self.cleanups.append(("cgroup " + path, lambda: self._remove_cgroup(path)))
		return path

	@staticmethod
	def _remove_cgroup(path):
		# A cgroup stays busy for a moment after its last process was reaped.
		deadline = time.monotonic() + 5
		while True:
			try:
				os.rmdir(path)
				return
			except OSError:
				if time.monotonic() >= deadline:
					raise
				time.sleep(0.05)

	def agent(self, netns, comm, uid=None, cgroup=None):
		agent = Agent(netns, comm, uid=uid, cgroup=cgroup)
		self.cleanups.append(("agent %s pid %d" % (comm, agent.pid), agent.stop))
		return agent

	def process(self, argv):
		"""Start a helper process (e.g. a CPU burner); killed by pid at the end."""
		proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

		def stop():
			if proc.poll() is None:
				os.kill(proc.pid, signal.SIGKILL)
			proc.wait()
		self.cleanups.append(("process pid %d" % proc.pid, stop))
		return proc

	def start_daemon(self, binary, netns, args=(), label=None, cpu=None):
		"""Start tcptapd, pinned to cpu if given, and wait until it replies
		to a subscription filtered to netns with a hello."""
		label = label or "tcptapd-%d" % (len(self.daemons) + 1)
		daemon = Daemon(binary, self.workdir, label, list(args), cpu)
		self.daemons.append(daemon)
		self.cleanups.append(("tcptapd " + label, daemon.stop))
		daemon.wait_ready(subscribe_request(netns))
		return daemon

	def stop_daemon(self, daemon):
		"""Stop tcptapd with SIGTERM, check it exits 0 in time and logged
		no error (syslog levels 0 to 3)."""
		status = daemon.stop()
		self.checker.equal("%s exit status after SIGTERM" % daemon.label, 0, status)
		errors = [line for line in daemon.stderr_text().splitlines()
			  if line[:3] in ("<0>", "<1>", "<2>", "<3>")]
		self.checker.equal("%s error messages" % daemon.label, [], errors[:10])

	def subscribe(self, daemon, netns, **filters):
		"""Subscribe filtered to netns and the extra filters, and wait for
		the snapshot's end."""
		subscriber = Subscriber(daemon.socket_path, subscribe_request(netns, **filters))
		self.cleanups.append(("subscriber of " + daemon.label, subscriber.close))
		if not subscriber.wait_snapshot():
			raise RuntimeError("no snapshot_end from %s within 10 s; received hello %s, "
					   "%d snapshot records, problems %s"
					   % (daemon.label, subscriber.hello, len(subscriber.snapshot),
					      subscriber.problems))
		return subscriber


def subscribe_request(netns, **filters):
	return {"command": "subscribe", "filter": dict(netns=netns.inode, **filters)}


def run(main, min_cpus=1):
	"""Check the environment, run main(session, daemon_path, cpus) and exit
	with the test's status."""
	daemon_path = daemon_path_from_argv(sys.argv)
	cpus = require_environment(min_cpus)
	with Session() as session:
		main(session, daemon_path, cpus)
	sys.exit(session.checker.finish())
