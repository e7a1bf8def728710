# SPDX-License-Identifier: LGPL-2.1-or-later
"""Slow, broken and hostile clients do not harm the daemon or its other clients.

Usage: test-e2e-clients.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

While a load process opens and closes connections in a private network
namespace, a normal client subscribed to that namespace must receive every
record of every connection. Meanwhile, in each of ROUNDS rounds:
- bad requests (malformed JSON, unknown fields, wrong types, a line over the
  4096-byte limit, binary garbage, a line that never ends) each get one error
  record with the right code and a message naming the problem. Then the
  connection is closed. A request of exactly 4096 bytes is served.
- a client that subscribes and never reads, against --client-queue 65536,
  gets an overflow record as its last line and is disconnected, and
  `tcptap stats --json` counts the overflow;
- a client that half-closes (shutdown(SHUT_WR)) after its request keeps
  receiving the same records as the normal client, and one that half-closes
  instead of sending a request is served the default subscription;
- the client over --max-clients gets a too_many_clients error;
- SHORT_CLIENTS clients connect and disconnect, each in one of several ways.
After every round the daemon's open file descriptors must return to their
number before the first round. The first two rounds bring its memory to the
allocator's high-water mark; after that, a leak would grow VmRSS and RssAnon
in every round, so at least one later round must not grow them.
"""

import json
import random
import socket
import time

import stream_util as su
import tt

CLIENT_QUEUE_BYTES = 65536
MAX_CLIENTS = 32
REQUEST_MAX_BYTES = 4096
DAEMON_ARGS = ["--log-level", "debug", "--perf-pages", "256",
	       "--client-queue", str(CLIENT_QUEUE_BYTES), "--max-clients", str(MAX_CLIENTS),
	       "--history", "1024"]
ROUNDS = 4
SHORT_CLIENTS = 2000		# per round
SHORT_CLIENTS_MAX_S = 120	# per round
SHORT_CLIENT_TIMEOUT_S = 5
OVERFLOW_WAIT_S = 60
OVERFLOW_POLL_S = 0.1
FD_SETTLE_S = 10
FD_SETTLE_PAUSE_S = 0.5
# Memory growth allowed in a round after the first: a leak of 128 bytes per
# client exceeds it in every round.
MEMORY_ROUND_TOLERANCE_KIB = SHORT_CLIENTS * 128 // 1024
CHURN = {"pool": 16, "pause_ms": 10, "max_count": 100000, "max_duration_s": 900}
CLOSE_WAIT_S = 30


def garbage_line(seed):
	"""Return deterministic binary garbage (NUL and invalid UTF-8 included)
	ending in one newline."""
	data = random.Random(seed).randbytes(300).replace(b"\n", b"")
	return b"\x00\xff" + data + b"\n"


# (what, request bytes, expected error code, words the message must contain)
BAD_REQUESTS = [
	("malformed JSON", b'{"command": subscribe}\n', "invalid_request", []),
	("unknown field", b'{"fitler": {"port": 80}}\n', "invalid_request", ["fitler"]),
	("unknown filter field", b'{"filter": {"prot": 80}}\n', "invalid_request", ["prot"]),
	("port as a string", b'{"filter": {"port": "80"}}\n', "invalid_request", ["port"]),
	("integer written as 1.0", b'{"filter": {"pid": 1.0}}\n', "invalid_request", ["pid"]),
	("duplicate field", b'{"command": "stats", "command": "dump"}\n', "invalid_request",
	 ["command"]),
	("resume_from without run_id", b'{"resume_from": 1}\n', "invalid_request", ["run_id"]),
	("a JSON array", b'[{"command": "subscribe"}]\n', "invalid_request", []),
	("NUL byte", b'{"command": "sub\x00scribe"}\n', "invalid_request", []),
	("invalid UTF-8", b'{"filter": {"comm": "\xff\xfe"}}\n', "invalid_request", []),
	("binary garbage", garbage_line(1), "invalid_request", []),
	("line of 4097 bytes", b"{}" + b" " * (REQUEST_MAX_BYTES - 1) + b"\n", "request_too_long",
	 [str(REQUEST_MAX_BYTES)]),
	("5000 bytes without a newline", b"x" * 5000, "request_too_long", [str(REQUEST_MAX_BYTES)]),
	("request never terminated", b'{"command": "stats"}', "invalid_request", ["newline"]),
]


class Test:
	def __init__(self, session, tools, netns, daemon, normal):
		self.session = session
		self.tools = tools
		self.checker = session.checker
		self.netns = netns
		self.daemon = daemon
		self.normal = normal

	def client(self, request, label, expect_end=False):
		client = su.StreamClient(self.daemon.socket_path, request, self.tools.schema, label,
					 expect_end=expect_end)
		self.session.cleanups.append(("client " + label, client.close))
		return client

	def bad_requests(self, round_no):
		checker = self.checker
		for what, request, code, words in BAD_REQUESTS:
			label = "round %d, %s" % (round_no, what)
			client = self.client(request, label, expect_end=True)
			checker.check(client.wait_eof(), "%s: connection closed" % label, "EOF",
				      "still open after %d s" % su.EOF_TIMEOUT_S)
			end = client.end or {}
			checker.equal("%s: error code" % label, ("error", code),
				      (end.get("type"), end.get("code")))
			message = end.get("message", "")
			missing = [w for w in words if w not in message]
			checker.equal("%s: words missing from the message %r" % (label, message), [],
				      missing)
			checker.equal("%s: lines before the error" % label, (None, []),
				      (client.hello, client.records()))
			checker.equal("%s: protocol problems" % label, [], client.problems)
			client.close()

		label = "round %d, request of exactly %d bytes" % (round_no, REQUEST_MAX_BYTES)
		line = json.dumps(su.netns_request(self.netns)).encode()
		client = self.client(line.ljust(REQUEST_MAX_BYTES) + b"\n", label)
		checker.check(client.wait_snapshot(), "%s: served" % label, "hello and snapshot_end",
			      "hello %s, end %s" % (client.hello, client.end))
		client.close()

	def never_reading(self, round_no):
		"""Subscribe to everything, read nothing until the daemon counts an
		overflow, then read what is left: the last line must be the overflow."""
		checker = self.checker
		label = "round %d, client that never reads" % round_no
		before = su.read_stats(self.tools, self.daemon, checker, label)["clients"]["overflows"]
		hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		self.session.cleanups.append((label, hog.close))
		hog.connect(self.daemon.socket_path)
		hog.sendall(b"{}\n")
		deadline = time.monotonic() + OVERFLOW_WAIT_S
		overflows = before
		while overflows == before and time.monotonic() < deadline:
			time.sleep(OVERFLOW_POLL_S)
			stats = su.read_stats(self.tools, self.daemon, checker, label)
			overflows = stats["clients"]["overflows"]
		checker.equal("%s: tcptap stats counts one more overflow" % label, before + 1,
			      overflows)

		# The daemon waits one second for the client to read its overflow.
		data = b""
		hog.settimeout(su.EOF_TIMEOUT_S)
		try:
			while True:
				chunk = hog.recv(1 << 16)
				if not chunk:
					break
				data += chunk
		except OSError as e:
			checker.fail("%s: read to the end of the stream" % label, "EOF", e)
		hog.close()
		self.check_overflow_stream(label, data)

	def check_overflow_stream(self, label, data):
		checker = self.checker
		checker.check(data.endswith(b"\n"), "%s: stream ends with a whole line" % label,
			      "a newline at the end", data[-100:])

		records = []
		for line in data.split(b"\n")[:-1]:
			record, problems = self.tools.schema.check_line(line)
			if problems:
				checker.fail("%s: valid line" % label, "schema-valid", (line[:200], problems))
			records.append(record or {})

		types = [r.get("type") for r in records]
		tt.log("%s: %d lines, %d bytes, last %s" % (label, len(records), len(data),
							   json.dumps(records[-1:])))
		if not records or types[-1] != "overflow":
			checker.fail("%s: last line is an overflow" % label, "overflow", types[-3:])
			return

		overflow = records[-1]
		checker.equal("%s: overflow.limit_bytes" % label, CLIENT_QUEUE_BYTES,
			      overflow.get("limit_bytes"))
		checker.check(overflow.get("queued_bytes", 0) > CLIENT_QUEUE_BYTES,
			      "%s: overflow.queued_bytes above the limit" % label,
			      "> %d" % CLIENT_QUEUE_BYTES, overflow.get("queued_bytes"))
		checker.equal("%s: hello first, one overflow" % label, ("hello", 1),
			      (types[0], types.count("overflow")))

		seqs = [r["seq"] for r in records if "seq" in r and r.get("type") != "snapshot_end"]
		checker.check(bool(seqs), "%s: live records before the overflow" % label, "some",
			      "none")
		if seqs:
			checker.equal("%s: overflow.last_seq_sent is the last record's seq" % label,
				      seqs[-1], overflow.get("last_seq_sent"))
			checker.check(overflow.get("newest_seq", 0) >= seqs[-1],
				      "%s: overflow.newest_seq at least last_seq_sent" % label,
				      ">= %d" % seqs[-1], overflow.get("newest_seq"))
			checker.equal("%s: seqs strictly increasing" % label, [],
				      [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a][:5])

	def half_closed(self, round_no):
		"""Start a client that half-closes after its request. It is checked
		at the end of the round by check_half_closed()."""
		client = self.client(su.netns_request(self.netns),
				     "round %d, half-closed after the request" % round_no)
		client.shutdown_write()
		return client

	def half_closed_without_request(self, round_no):
		"""End of file instead of a request is the default subscription, to
		every namespace: check that it is served with hello and a snapshot.
		Its live records are all the machine's TCP traffic, which can make a
		reader of this test fall behind, so an overflow is accepted here
		(the never-reading client tests backpressure)."""
		checker = self.checker
		client = self.client(None, "round %d, half-closed without a request" % round_no,
				     expect_end=True)
		client.shutdown_write()
		checker.check(client.wait_snapshot(), "%s: snapshot" % client.label, "snapshot_end",
			      "hello %s, end %s" % (client.hello, client.end))
		su.check_snapshot_frame(checker, client)
		checker.equal("%s: protocol problems" % client.label, [], client.problems)
		if client.end is not None:
			checker.equal("%s: only an overflow may end the stream" % client.label,
				      "overflow", client.end.get("type"))
		client.close()

	def check_half_closed(self, client):
		"""The client must have received exactly the normal client's records
		from its snapshot on, up to its newest one."""
		checker = self.checker
		label = client.label
		if not client.wait_snapshot():
			checker.fail("%s: snapshot received" % label, "snapshot_end",
				     "hello %s, end %s, problems %s" % (client.hello, client.end,
									 client.problems))
			return
		received = client.records()
		start = client.snapshot_end["seq"]
		last = received[-1]["seq"] if received else start
		self.normal.wait_for(lambda records: records and records[-1]["seq"] >= last)
		expected = [r for r in self.normal.records() if start < r["seq"] <= last]
		checker.check(len(expected) > 0, "%s: live records received" % label, "> 0",
			      len(expected))
		checker.equal("%s: records equal the normal client's" % label, expected, received)
		checker.equal("%s: protocol problems" % label, [], client.problems)
		client.close()

	def too_many_clients(self, round_no):
		checker = self.checker
		label = "round %d, client over --max-clients" % round_no
		existing = su.query_stats(self.daemon, self.tools.schema)["clients"]["connected"] - 1
		idle = []
		for i in range(MAX_CLIENTS - existing):
			client = self.client(su.netns_request(self.netns),
					     "round %d, idle client %d" % (round_no, i + 1))
			if not client.wait_hello():
				checker.fail("round %d, idle client %d: hello" % (round_no, i + 1), "hello",
					     "end %s, problems %s" % (client.end, client.problems))
			idle.append(client)
		extra = self.client(su.netns_request(self.netns), label, expect_end=True)
		checker.check(extra.wait_eof(), "%s: connection closed" % label, "EOF", "open")
		end = extra.end or {}
		checker.equal("%s: error code" % label, ("error", "too_many_clients"),
			      (end.get("type"), end.get("code")))
		checker.equal("%s: no hello" % label, None, extra.hello)
		for client in idle:
			checker.equal("%s: protocol problems" % client.label, [], client.problems)
			client.close()
		extra.close()

	def short_clients(self, round_no, count):
		"""Connect and disconnect count clients, cycling through the ways a
		client can behave; return {kind: problems}."""
		path = self.daemon.socket_path
		dump = json.dumps({"command": "dump", "filter": {"netns": self.netns.inode}}).encode()
		kinds = [
			("close at once", None, None),
			("subscribe, read hello, close", b"{}\n", "hello"),
			("garbage", garbage_line(round_no), "error"),
			("stats", b'{"command": "stats"}\n', "stats"),
			("dump", dump + b"\n", "dump"),
			("half a request, close", b'{"command": "sub', None),
			("subscribe, close unread", b'{"filter": {"port": 1}}\n', None),
		]
		problems = {kind[0]: [] for kind in kinds}
		deadline = time.monotonic() + SHORT_CLIENTS_MAX_S
		done = 0
		for i in range(count):
			if time.monotonic() >= deadline:
				break
			name, request, expect = kinds[i % len(kinds)]
			problem = self.short_client(path, request, expect)
			if problem:
				problems[name].append(problem)
			done += 1
		self.checker.equal("round %d: short clients run within %d s" % (round_no,
				   SHORT_CLIENTS_MAX_S), count, done)
		return problems

	def short_client(self, path, request, expect):
		"""Run one short client; return a problem or None. expect is the
		reply to read: None, "hello", "error", "stats" or "dump"."""
		sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		try:
			# A blocking connect() waits while the listen backlog is full;
			# with a timeout set it would fail with EAGAIN at once.
			sock.connect(path)
			sock.settimeout(SHORT_CLIENT_TIMEOUT_S)
			if request:
				sock.sendall(request)
			if expect is None:
				return None
			data = read_reply(sock, expect == "hello")
		except OSError as e:
			return "socket error: %s" % e
		finally:
			sock.close()

		lines = data.split(b"\n")
		records = []
		for line in lines[:1] if expect == "hello" else lines[:-1]:
			record, problems = self.tools.schema.check_line(line)
			if problems:
				return "invalid line %r: %s" % (line[:200], problems)
			records.append(record)
		return check_short_reply(expect, records)

	def wait_fds(self, expected):
		"""Wait until the daemon has expected open fds; return the last count."""
		deadline = time.monotonic() + FD_SETTLE_S
		while True:
			count = su.fd_count(self.daemon.pid)
			if count == expected or time.monotonic() >= deadline:
				return count
			time.sleep(0.1)

	def round(self, round_no, fds_before):
		tt.log("== round %d" % round_no)
		self.bad_requests(round_no)
		half = self.half_closed(round_no)
		self.half_closed_without_request(round_no)
		self.never_reading(round_no)
		self.too_many_clients(round_no)
		problems = self.short_clients(round_no, SHORT_CLIENTS)
		for kind, found in problems.items():
			self.checker.equal("round %d, %s: problems of the short clients" % (round_no, kind),
					   [], found[:5])
		self.check_half_closed(half)
		fds = self.wait_fds(fds_before)
		self.checker.equal("round %d: open fds of tcptapd back to their number before"
				   % round_no, fds_before, fds)
		memory = read_memory(self.daemon.pid)
		stats = su.query_stats(self.daemon, self.tools.schema)
		tt.log("round %d: tcptapd has %d fds, %s; table %s, merger %s, clients %s"
		       % (round_no, fds, memory, stats["table"], stats["merger"], stats["clients"]))
		return memory


def read_reply(sock, first_line_only):
	"""Read until end of file, or only up to the first newline."""
	data = b""
	while not (first_line_only and b"\n" in data):
		chunk = sock.recv(1 << 16)
		if not chunk:
			break
		data += chunk
	return data


def check_short_reply(expect, records):
	"""Return what is wrong with a short client's reply, or None."""
	types = [r.get("type") for r in records]
	if expect == "hello" and types != ["hello"]:
		return "expected a hello, got %s" % types
	if expect == "error" and [(r.get("type"), r.get("code")) for r in records] != \
			[("error", "invalid_request")]:
		return "expected one invalid_request error, got %s" % records
	if expect == "stats" and types != ["hello", "stats"]:
		return "expected hello and stats, got %s" % types
	if expect == "dump" and (types[:1] != ["hello"] or types[-1:] != ["snapshot_end"] or
				 records[-1].get("count") != types.count("snapshot")):
		return "expected hello, snapshot records and snapshot_end, got %s" % types
	return None


def settled_fd_count(pid):
	"""Return tcptapd's fd count once two readings FD_SETTLE_PAUSE_S apart agree,
	so a client that just left is not counted."""
	count = su.fd_count(pid)
	for _ in range(int(FD_SETTLE_S / FD_SETTLE_PAUSE_S)):
		time.sleep(FD_SETTLE_PAUSE_S)
		again = su.fd_count(pid)
		if again == count:
			break
		count = again
	return count


def read_memory(pid):
	values = {}
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			key = line.split(":")[0]
			if key in ("VmRSS", "RssAnon"):
				values[key] = int(line.split()[1])
	return values


def main(session, tools, cpus):
	checker = session.checker
	netns = session.netns()
	load = su.start_load(session, netns, "tt-clientload")
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns, DAEMON_ARGS)
	normal = su.subscribe(session, daemon, su.netns_request(netns), tools.schema,
			      "normal client")
	load.call("churn_start", **CHURN)
	test = Test(session, tools, netns, daemon, normal)
	fds_before = settled_fd_count(daemon.pid)
	tt.log("tcptapd pid %d: %d fds, %s" % (daemon.pid, fds_before, read_memory(daemon.pid)))

	memory = [test.round(round_no, fds_before) for round_no in range(1, ROUNDS + 1)]
	# The merger's and the table's arrays keep their largest size, which
	# other TCP traffic on the machine can raise in any round. A leak in
	# the client code grows the memory in every round, so the test looks
	# at the round that grew least.
	for key in ("VmRSS", "RssAnon"):
		growth = [after[key] - before[key] for before, after in zip(memory[1:], memory[2:])]
		checker.check(min(growth) <= MEMORY_ROUND_TOLERANCE_KIB,
			      "%s growth of the round that grew least after round 2, KiB" % key,
			      "<= %d" % MEMORY_ROUND_TOLERANCE_KIB, growth)

	tt.log("== the normal client received every record")
	churn = load.call("churn_stop")
	ends = churn["ends"]
	checker.equal("churn ran until the test stopped it", False, churn["limited"])
	expected = 2 * len(ends)
	if not su.wait_records(normal, expected, CLOSE_WAIT_S):
		tt.log("only %d of %d records arrived" % (len(tt.event_records(normal.records())),
							 expected))
	time.sleep(tt.SETTLE_S)
	records = tt.check_stream(checker, normal, netns)
	checker.equal("normal client: records, two per connection end", expected,
		      len(tt.event_records(records)))
	su.check_ground_truth(checker, normal, ends, load, netns, t_launch)
	checker.equal("normal client: connections left open", set(),
		      tt.check_lifecycles(checker, records))

	tt.log("== the daemon still serves")
	late = su.subscribe(session, daemon, su.netns_request(netns), tools.schema, "late client")
	su.check_snapshot_frame(checker, late)
	status, _, problems, _ = su.run_cli(tools, daemon, ["dump", "--json"], "dump")
	checker.equal("tcptap dump after the rounds: status and problems", (0, []),
		      (status, problems))
	stats = su.read_stats(tools, daemon, checker, "final stats")
	checker.check(stats["clients"]["overflows"] >= ROUNDS, "overflows counted", ">= %d" % ROUNDS,
		      stats["clients"]["overflows"])
	checker.check(stats["clients"]["bad_requests"] >= ROUNDS * len(BAD_REQUESTS),
		      "bad requests counted", ">= %d" % (ROUNDS * len(BAD_REQUESTS)),
		      stats["clients"]["bad_requests"])
	checker.check(stats["clients"]["rejected"] >= ROUNDS, "clients over the limit counted",
		      ">= %d" % ROUNDS, stats["clients"]["rejected"])
	session.stop_daemon(daemon)


if __name__ == "__main__":
	su.run(main)
