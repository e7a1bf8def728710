# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers of the stream tests (start-up, resume, clients, dump and stats).

They add what these tests need beyond tt.py. Every line a test receives is
validated against docs/tcptap.schema.json. A socket client also follows
resumed streams and error replies. The load generator process (stream_load.py)
reports its ground truth, and check_ground_truth() compares a stream with it.
The rest reads the daemon's file descriptors and memory and runs the tcptap
CLI.

The tests take three arguments: the tcptapd binary, the tcptap binary and the
schema file. Like tt.py, a test that cannot run prints
"FATAL: <test> cannot run: <reason>" and exits 1.
"""

import decimal
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import tt

try:
	import jsonschema
except ImportError:
	jsonschema = None

LOAD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_load.py")
LOAD_REPLY_TIMEOUT_S = 60
LOAD_STOP_TIMEOUT_S = 5
CLI_TIMEOUT_S = 30
SNAPSHOT_TIMEOUT_S = 15
EOF_TIMEOUT_S = 10
# Maximum time from a kernel event to its release to the clients: the default
# --max-hold (100 ms) plus the release tick, with room for a busy machine.
RELEASE_MARGIN_NS = 1 * 10**9
# A record line (event, lost, snapshot) is at most this long, newline included.
JSON_RECORD_MAX_BYTES = 640
RECORD_TYPES = ("connect", "accept", "close", "connect_failed", "lost", "snapshot")
FOREVER_NS = 2**63


def now_ns():
	return time.monotonic_ns()


def parse_args(argv):
	"""Return (tcptapd, tcptap, schema) from the command line, or stop with FATAL."""
	if len(argv) != 4:
		tt.fatal("usage: %s PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA" % tt.TEST_NAME)
	tcptapd, tcptap, schema = argv[1:]
	for path, what in ((tcptapd, "tcptapd"), (tcptap, "tcptap")):
		if not os.access(path, os.X_OK):
			tt.fatal("%s binary '%s' is missing or not executable" % (what, path))
	if not os.path.isfile(schema):
		tt.fatal("schema '%s' not found" % schema)
	if jsonschema is None:
		tt.fatal("the jsonschema module is missing: install Debian's python3-jsonschema "
			 "and run the test with /usr/bin/python3")
	return tcptapd, tcptap, schema


def run(main, min_cpus=1):
	"""Check the environment, run main(session, tools, cpus) and exit with the
	test's status. tools has tcptapd, tcptap and schema."""
	tcptapd, tcptap, schema_path = parse_args(sys.argv)
	cpus = tt.require_environment(min_cpus)
	tools = Tools(tcptapd, tcptap, SchemaChecker(schema_path))
	with tt.Session() as session:
		# Registered first, so it runs last: tcptapd leaves its socket file.
		session.cleanups.append(("sockets in " + session.workdir,
					 lambda: remove_sockets(session.workdir)))
		main(session, tools, cpus)
		tools.schema.report(session.checker)
	sys.exit(session.checker.finish())


def remove_sockets(directory):
	for name in os.listdir(directory):
		if name.endswith(".sock"):
			os.unlink(os.path.join(directory, name))


class Tools:
	def __init__(self, tcptapd, tcptap, schema):
		self.tcptapd = tcptapd
		self.tcptap = tcptap
		self.schema = schema


# ---- schema ----

def _reject_constant(name):
	raise ValueError("%s is not valid JSON" % name)


def _reject_duplicates(pairs):
	obj = {}
	for key, value in pairs:
		if key in obj:
			raise ValueError('duplicate key "%s"' % key)
		obj[key] = value
	return obj


def _has_fraction(value):
	if isinstance(value, decimal.Decimal):
		return True
	if isinstance(value, dict):
		return any(_has_fraction(v) for v in value.values())
	if isinstance(value, list):
		return any(_has_fraction(v) for v in value)
	return False


class SchemaChecker:
	"""Validates stream lines with Draft202012Validator and format assertions
	(the ipv4 and ipv6 address formats).

	check_line() parses a line strictly at once, but defers the schema
	validation, which costs about a millisecond per line: run in the socket
	readers it would slow them until the daemon disconnects them as too slow.
	report() validates every distinct line received, once, at the end of the
	test. Several clients receive the same bytes for the same record, so each
	distinct line is validated once."""

	def __init__(self, path):
		with open(path, encoding="utf-8") as f:
			schema = json.load(f)
		cls = jsonschema.Draft202012Validator
		cls.check_schema(schema)
		self.validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
		# Each branch of the schema's oneOf fixes "type" to values no other
		# branch admits, so a message valid against the branch its type
		# names is valid against the whole schema. Validating that branch
		# alone is several times faster and gives readable reasons.
		base = {k: v for k, v in schema.items() if k != "oneOf"}
		self.branches = {name: cls(dict(base, **{"$ref": "#/$defs/" + name}),
					   format_checker=cls.FORMAT_CHECKER)
				 for name in schema["$defs"]}
		self.lock = threading.Lock()
		self.lines = 0
		self.pending = set()
		self.validated = set()
		self.invalid = []

	@staticmethod
	def parse(raw):
		"""Parse one line (bytes, without its newline) as strict JSON.
		Return (message or None, list of problems)."""
		problems = []
		message = None
		try:
			message = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
					     object_pairs_hook=_reject_duplicates,
					     parse_float=decimal.Decimal)
		except ValueError as e:
			problems.append("invalid JSON: %s" % e)
		if isinstance(message, dict):
			# The schema's "integer" also admits 1.0, the protocol does not.
			# stats members are the daemon's own and may be fractional.
			if message.get("type") != "stats" and _has_fraction(message):
				problems.append("a number with a fraction or exponent")
			if message.get("type") in RECORD_TYPES and len(raw) + 1 > JSON_RECORD_MAX_BYTES:
				problems.append("record line of %d bytes, over %d"
						% (len(raw) + 1, JSON_RECORD_MAX_BYTES))
			if message.get("type") == "stats":
				message = _plain_numbers(message)
		return message, problems

	def check_line(self, raw):
		"""Parse raw strictly and queue it for validation. Return (message or
		None, the problems found so far); schema problems come in report()."""
		message, problems = self.parse(raw)
		with self.lock:
			self.lines += 1
			if problems:
				self.invalid.append((raw[:300], problems))
			elif raw not in self.validated:
				self.pending.add(raw)
		return message, problems

	def _reasons(self, message):
		kind = message.get("type") if isinstance(message, dict) else None
		if kind in tt.EVENT_TYPES:
			kind = "event"
		branch = self.branches.get(kind) if isinstance(kind, str) else None
		if branch is None:
			return [] if self.validator.is_valid(message) else \
				["does not match any message type"]
		return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top level)",
				    e.message)
			for e in branch.iter_errors(message)]

	def validate_pending(self):
		with self.lock:
			pending, self.pending = self.pending, set()
		for raw in pending:
			message, _ = self.parse(raw)
			reasons = self._reasons(message)
			with self.lock:
				self.validated.add(raw)
				if reasons:
					self.invalid.append((raw[:300], reasons))

	def report(self, checker):
		"""Validate what is pending and add the checks: lines were received
		and none of them is invalid."""
		self.validate_pending()
		tt.log("schema: %d lines received, %d distinct lines validated, %d invalid"
		       % (self.lines, len(self.validated), len(self.invalid)))
		checker.check(self.lines > 0, "lines validated against the schema", "> 0", self.lines)
		checker.equal("lines that fail the schema", [],
			      [(raw, problems) for raw, problems in self.invalid[:10]])


def _plain_numbers(value):
	if isinstance(value, decimal.Decimal):
		return float(value)
	if isinstance(value, dict):
		return {k: _plain_numbers(v) for k, v in value.items()}
	if isinstance(value, list):
		return [_plain_numbers(v) for v in value]
	return value


# ---- socket clients ----

class StreamClient:
	"""A client of tcptapd's socket. It sends request (a dict as one JSON
	line, bytes unchanged, or None for nothing), validates every line it
	receives and sorts them into hello, snapshot, snapshot_end, live records
	and a final error or overflow. A resumed stream (hello with resumed:
	true) has no snapshot. problems lists protocol violations; an error or
	overflow counts as one unless expect_end is set."""

	def __init__(self, socket_path, request, schema, label, expect_end=False):
		self.label = label
		self.schema = schema
		self.expect_end = expect_end
		self.cond = threading.Condition()
		self.hello = None
		self.snapshot = []
		self.snapshot_end = None
		self.t_snapshot_end = None
		self.live = []
		self.end = None
		self.problems = []
		self.eof = False
		self.t_eof = None
		self.lines = 0
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		self.t_connect = now_ns()
		self.sock.connect(socket_path)
		if isinstance(request, dict):
			request = (json.dumps(request) + "\n").encode()
		self.send_error = None
		if request:
			try:
				self.sock.sendall(request)
			except (BrokenPipeError, ConnectionResetError) as e:
				# The daemon may reject a connection at once (too_many_clients)
				# and close it; its error line is still there to read.
				self.send_error = e
		self.reader = threading.Thread(target=self._read_loop, daemon=True)
		self.reader.start()

	def _read_loop(self):
		pending = b""
		while True:
			try:
				data = self.sock.recv(1 << 16)
			except OSError as e:
				with self.cond:
					self.problems.append("%s: recv failed: %s" % (self.label, e))
				break
			if not data:
				break
			pending += data
			while b"\n" in pending:
				line, pending = pending.split(b"\n", 1)
				self._handle(line)
		with self.cond:
			if pending:
				self.problems.append("%s: stream ended inside a line: %r"
						     % (self.label, pending[:200]))
			self.eof = True
			self.t_eof = now_ns()
			self.cond.notify_all()

	def _handle(self, line):
		record, problems = self.schema.check_line(line)
		with self.cond:
			self.lines += 1
			for problem in problems:
				self.problems.append("%s: %s in %r" % (self.label, problem, line[:300]))
			if isinstance(record, dict):
				self._sort(record, line)
			self.cond.notify_all()

	def _sort(self, record, line):
		kind = record.get("type")
		if self.end is not None:
			self.problems.append("%s: line after the final %s: %r"
					     % (self.label, self.end.get("type"), line[:300]))
			return
		if kind in ("error", "overflow"):
			self.end = record
			if not self.expect_end:
				self.problems.append("%s: daemon sent %r" % (self.label, line[:300]))
			return
		if self.hello is None:
			if kind == "hello":
				self.hello = record
			else:
				self.problems.append("%s: first line is not a hello: %r"
						     % (self.label, line[:300]))
			return
		if self.hello.get("resumed") is not True and self.snapshot_end is None \
				and kind in ("snapshot", "snapshot_end"):
			if kind == "snapshot":
				self.snapshot.append(record)
			else:
				self.snapshot_end = record
				self.t_snapshot_end = now_ns()
			return
		if kind in ("hello", "snapshot", "snapshot_end"):
			self.problems.append("%s: unexpected %s: %r" % (self.label, kind, line[:300]))
			return
		self.live.append(record)

	def records(self):
		with self.cond:
			return list(self.live)

	def wait_hello(self, timeout_s=SNAPSHOT_TIMEOUT_S):
		with self.cond:
			return self.cond.wait_for(lambda: self.hello is not None or self.eof or
						  self.end is not None, timeout_s) and \
				self.hello is not None

	def wait_snapshot(self, timeout_s=SNAPSHOT_TIMEOUT_S):
		with self.cond:
			self.cond.wait_for(lambda: self.snapshot_end is not None or self.eof,
					   timeout_s)
			return self.snapshot_end is not None

	def wait_for(self, predicate, timeout_s=tt.RECORD_WAIT_S):
		"""Wait until predicate(live records) holds; return whether it does."""
		with self.cond:
			self.cond.wait_for(lambda: self.eof or predicate(self.live), timeout_s)
			return predicate(self.live)

	def wait_eof(self, timeout_s=EOF_TIMEOUT_S):
		with self.cond:
			return self.cond.wait_for(lambda: self.eof, timeout_s)

	def shutdown_write(self):
		"""Half-close: the daemon reads end of file, the client keeps reading."""
		self.sock.shutdown(socket.SHUT_WR)

	def close(self):
		try:
			self.sock.shutdown(socket.SHUT_RDWR)
		except OSError:
			pass
		self.sock.close()
		self.reader.join(5)


def subscribe(session, daemon, request, schema, label, wait=True, expect_end=False):
	"""Connect a StreamClient, which is closed at the end of the test. With
	wait, wait for its snapshot (or its hello, for a resume) or fail the test."""
	client = StreamClient(daemon.socket_path, request, schema, label, expect_end=expect_end)
	session.cleanups.append(("client " + label, client.close))
	if wait:
		resuming = isinstance(request, dict) and "resume_from" in request
		ok = client.wait_hello() and (client.hello.get("resumed") is True or
					      client.wait_snapshot())
		if not ok and not resuming:
			raise RuntimeError("%s: no snapshot_end within %d s; hello %s, %d snapshot "
					   "records, problems %s" % (label, SNAPSHOT_TIMEOUT_S,
					   client.hello, len(client.snapshot), client.problems))
	return client


def netns_request(netns, **extra):
	request = {"command": "subscribe", "filter": {"netns": netns.inode}}
	request.update(extra)
	return request


def check_snapshot_frame(checker, client):
	"""Check hello and snapshot_end agree and that the snapshot count matches."""
	label = client.label
	if client.hello is None or client.snapshot_end is None:
		checker.fail("%s: hello and snapshot_end received" % label, "both",
			     "hello %s, snapshot_end %s" % (client.hello, client.snapshot_end))
		return
	checker.equal("%s: snapshot_end.seq equals hello.snapshot_seq" % label,
		      client.hello.get("snapshot_seq"), client.snapshot_end.get("seq"))
	checker.equal("%s: snapshot_end.count equals the snapshot records" % label,
		      len(client.snapshot), client.snapshot_end.get("count"))
	cookies = [r.get("cookie") for r in client.snapshot]
	duplicates = sorted({c for c in cookies if cookies.count(c) > 1})
	checker.equal("%s: cookies listed twice in the snapshot" % label, [], duplicates)


# ---- the load generator ----

class LoadError(Exception):
	pass


class Load:
	"""One stream_load.py process in a test namespace."""

	def __init__(self, netns, comm):
		self.comm = comm
		self.lines = queue.Queue()
		self.proc = subprocess.Popen([tt.PYTHON, LOAD_PATH, "--netns", netns.path,
					      "--comm", comm], stdin=subprocess.PIPE,
					     stdout=subprocess.PIPE, text=True, bufsize=1)
		self.pid = self.proc.pid
		self.reader = threading.Thread(target=self._read_lines, daemon=True)
		self.reader.start()
		info = self.reply(tt.AGENT_START_TIMEOUT_S)
		if info.get("pid") != self.pid or info.get("comm") != comm:
			raise LoadError("load started as %s, expected pid %d comm '%s'"
					% (info, self.pid, comm))
		self.uid = info["uid"]
		self.cgroup = cgroup_id(self.pid)

	def _read_lines(self):
		for line in self.proc.stdout:
			self.lines.put(line)
		self.lines.put(None)

	def send(self, op, **args):
		args["op"] = op
		self.proc.stdin.write(json.dumps(args) + "\n")
		self.proc.stdin.flush()

	def reply(self, timeout_s=LOAD_REPLY_TIMEOUT_S):
		try:
			line = self.lines.get(timeout=timeout_s)
		except queue.Empty:
			raise LoadError("load pid %d sent no reply in %s s" % (self.pid, timeout_s)) \
				from None
		if line is None:
			raise LoadError("load pid %d exited with status %s" % (self.pid, self.proc.wait()))
		message = json.loads(line)
		if "fatal" in message:
			raise LoadError("load pid %d: %s" % (self.pid, message["fatal"]))
		return message

	def call(self, op, timeout_s=LOAD_REPLY_TIMEOUT_S, **args):
		self.send(op, **args)
		return self.reply(timeout_s)

	def stop(self):
		if self.proc.poll() is None:
			try:
				self.send("exit")
			except OSError:
				pass
			try:
				self.proc.wait(LOAD_STOP_TIMEOUT_S)
			except subprocess.TimeoutExpired:
				os.kill(self.pid, signal.SIGKILL)
				self.proc.wait()
		self.proc.stdin.close()


def start_load(session, netns, comm):
	load = Load(netns, comm)
	session.cleanups.append(("load %s pid %d" % (comm, load.pid), load.stop))
	tt.log("load '%s' pid %d in netns %d" % (comm, load.pid, netns.inode))
	return load


def cgroup_id(pid):
	"""Return the cgroup v2 id (directory inode) of pid, or None without cgroup v2."""
	mount = tt.cgroup2_mount()
	if mount is None:
		return None
	with open("/proc/%d/cgroup" % pid) as f:
		for line in f:
			hierarchy, _, path = line.rstrip("\n").split(":", 2)
			if hierarchy == "0":
				return os.stat(mount + path).st_ino
	return None


def end_fields(end, load, netns, record_type):
	"""Return the fields tcptapd must report for one end of a load connection.
	The load is single-threaded, so tid is its pid."""
	family, saddr = tt.wire_address(end["local"][0])
	_, daddr = tt.wire_address(end["peer"][0])
	fields = {"type": record_type, "pid": load.pid, "tid": load.pid, "comm": load.comm,
		  "uid": load.uid, "family": family, "saddr": saddr, "sport": end["local"][1],
		  "daddr": daddr, "dport": end["peer"][1], "netns": netns.inode,
		  "cookie": end["cookie"]}
	if load.cgroup is not None:
		fields["cgroup"] = load.cgroup
	return fields


def intro_type(end):
	return "connect" if end["role"] == "client" else "accept"


def describe_end(end):
	return "%s end of load connection %d (%s, cookie %d, %s:%d -> %s:%d)" % (
		end["role"], end["conn"], end["family"], end["cookie"], end["local"][0],
		end["local"][1], end["peer"][0], end["peer"][1])


def check_ground_truth(checker, client, ends, load, netns, t_launch, t_cover_end=FOREVER_NS,
		       attempts=()):
	"""Check one subscriber's snapshot and live records against the load's
	ground truth.

	t_launch is when this daemon was started; records of events before
	t_cover_end must have arrived (the daemon ran and was read until then).
	Times are CLOCK_MONOTONIC ns. The rules:
	- nothing about an end that closed before the daemon started;
	- an end open before the daemon started and still open after the
	  snapshot is in the snapshot with origin seeded;
	- an end opened more than RELEASE_MARGIN_NS before the subscription and
	  still open after the snapshot is in the snapshot;
	- an end opened after the snapshot is introduced live by connect or
	  accept, inside its connect()/accept() window;
	- every end open after the snapshot is introduced exactly once, in the
	  snapshot or live;
	- an introduced end whose close() ended before t_cover_end has exactly
	  one close, inside its close() window;
	- no snapshot entry for an end that closed more than RELEASE_MARGIN_NS
	  before the subscription, and no record for a connection the load did
	  not make. attempts are the load's refused connects, whose
	  connect_failed records the caller checks."""
	label = client.label
	t_sub, t_snap = client.t_connect, client.t_snapshot_end
	snapshot = {r.get("cookie"): r for r in client.snapshot}
	intros, closes = {}, {}
	failed = {}
	for record in tt.event_records(client.records()):
		target = {"close": closes, "connect_failed": failed}.get(record["type"], intros)
		target.setdefault(record.get("cookie"), []).append(record)

	by_cookie = {e["cookie"]: e for e in ends}
	attempted = {a["cookie"] for a in attempts}
	foreign = [c for c in set(snapshot) | set(intros) | set(closes) if c not in by_cookie]
	foreign += [c for c in failed if c not in attempted]
	checker.equal("%s: records of connections the load did not make" % label, [],
		      [snapshot.get(c) or (intros.get(c) or closes.get(c) or failed.get(c))[0]
		       for c in foreign][:5])

	for end in ends:
		cookie = end["cookie"]
		what = "%s: %s" % (label, describe_end(end))
		open_t0, open_t1 = end["open"]
		close = end["close"]
		in_snapshot = cookie in snapshot
		live_intros = intros.get(cookie, [])
		live_closes = closes.get(cookie, [])
		open_after_snapshot = close is None or close[0] > t_snap

		if close is not None and close[1] < t_launch:
			checker.equal("%s closed before the daemon started: no records" % what,
				      [], ([snapshot[cookie]] if in_snapshot else []) + live_intros +
				      live_closes)
			continue

		if open_after_snapshot and open_t1 < t_cover_end:
			checker.equal("%s is open after the snapshot: introductions" % what, 1,
				      int(in_snapshot) + len(live_intros))

		fields = end_fields(end, load, netns, "snapshot")
		if open_t1 < t_launch and open_after_snapshot:
			fields["origin"] = "seeded"
			if in_snapshot:
				checker.record("%s existed before the start: snapshot record" % what,
					       snapshot[cookie], fields)
			else:
				checker.fail("%s existed before the start: in the snapshot" % what,
					     tt.describe(fields), "no snapshot record with cookie %d"
					     % cookie)
		elif open_t1 < t_sub - RELEASE_MARGIN_NS and open_after_snapshot:
			if in_snapshot:
				checker.record("%s opened before the subscription: snapshot record"
					       % what, snapshot[cookie], fields)
			else:
				checker.fail("%s opened before the subscription: in the snapshot"
					     % what, tt.describe(fields),
					     "no snapshot record with cookie %d" % cookie)

		if open_t0 > t_snap and open_t1 < t_cover_end:
			checker.equal("%s opened after the snapshot: not in the snapshot" % what,
				      None, snapshot.get(cookie))
			if len(live_intros) == 1:
				checker.record("%s opened after the snapshot: %s record"
					       % (what, intro_type(end)), live_intros[0],
					       end_fields(end, load, netns, intro_type(end)),
					       tuple(end["intro"]))

		if close is not None and close[1] < t_sub - RELEASE_MARGIN_NS:
			checker.equal("%s closed before the subscription: not in the snapshot" % what,
				      None, snapshot.get(cookie))

		introduced = in_snapshot or live_intros
		if introduced and close is not None and close[1] < t_cover_end:
			if len(live_closes) != 1:
				checker.fail("%s: one close record" % what, "1 close",
					     "%d: %s" % (len(live_closes), json.dumps(live_closes)))
			else:
				checker.record("%s: close record" % what, live_closes[0],
					       end_fields(end, load, netns, "close"), tuple(close))


# ---- the daemon and the CLI ----

def fd_count(pid):
	return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			if line.startswith("VmRSS:"):
				return int(line.split()[1])
	raise RuntimeError("no VmRSS in /proc/%d/status" % pid)


def run_cli(tools, daemon, args, label):
	"""Run tcptap with args and --socket; validate each stdout line. Return
	(exit status, records, problems, stderr)."""
	argv = [tools.tcptap] + args + ["--socket", daemon.socket_path]
	result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
				timeout=CLI_TIMEOUT_S)
	records, problems = [], []
	for line in result.stdout.splitlines():
		record, line_problems = tools.schema.check_line(line)
		problems += ["%s: %s in %r" % (label, p, line[:300]) for p in line_problems]
		if record is not None:
			records.append(record)
	return result.returncode, records, problems, result.stderr.decode(errors="replace")


def read_stats(tools, daemon, checker, label):
	"""Return the stats object of `tcptap stats --json`, checking the reply's shape."""
	status, records, problems, stderr = run_cli(tools, daemon, ["stats", "--json"], label)
	checker.equal("%s: tcptap stats exit status" % label, 0, status)
	checker.equal("%s: problems in the stats output" % label, [], problems)
	types = [r.get("type") for r in records]
	if types != ["hello", "stats"]:
		checker.fail("%s: stats reply is hello then stats" % label, ["hello", "stats"],
			     "%s, stderr %r" % (types, stderr))
		raise RuntimeError("%s: tcptap stats failed" % label)
	return records[1]


def query_stats(daemon, schema, label="stats request"):
	"""Return the daemon's stats object, requested directly on its socket
	(faster than running tcptap, for checks that race other traffic)."""
	client = StreamClient(daemon.socket_path, {"command": "stats"}, schema, label)
	try:
		if not client.wait_eof():
			raise RuntimeError("%s: the daemon did not close the connection" % label)
		stats = [r for r in client.records() if r.get("type") == "stats"]
		if client.problems or len(stats) != 1:
			raise RuntimeError("%s: expected hello and one stats line, got %s, problems %s"
					   % (label, client.records(), client.problems))
		return stats[0]
	finally:
		client.close()


def wait_records(client, count, timeout_s=tt.RECORD_WAIT_S):
	"""Wait until client has at least count live event records; return whether it has."""
	return client.wait_for(lambda records: len(tt.event_records(records)) >= count, timeout_s)


def check_kernel_counters(checker, daemon, schema, label):
	"""Log the daemon's loss counters and check that no BPF program run was
	skipped. The kernel skips a program run that would nest in another on
	the same CPU (a softirq interrupting it), and no record in the stream then
	reports the loss to a client. Returns the stats object."""
	stats = query_stats(daemon, schema, label + " stats")
	tt.log("%s: seq %d, events %s, lost %d, late %d, dropped_duplicate %d, "
	       "dropped_orphan_close %d, kernel %s" % (
		       label, stats["seq"], stats["events"], stats["lost"], stats["late"],
		       stats["dropped_duplicate"], stats["dropped_orphan_close"], stats["kernel"]))
	checker.equal("%s: BPF program runs the kernel skipped (records lost silently)" % label,
		      0, stats["kernel"]["recursion_misses"])
	return stats
