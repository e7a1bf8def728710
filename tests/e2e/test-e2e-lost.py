# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lost records are reported and counted, and leave no connection open in the table.

Usage: test-e2e-lost.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

tcptapd runs with one page per CPU ring (4 KiB, 32 samples of 128 bytes). A
load process in a private network namespace keeps HELD connections open, then
opens and closes BURST connections as fast as it can, so the kernel drops
samples, and last closes the held ones. A subscriber filtered to the
namespace and an unfiltered one read the stream, and `tcptap stats --json` is
read before the load and after everything settled. Then:
- the stream carries lost records (ring_full with a cpu, or nested), the
  netns filter passes every one of them, and their counts in the stats seq
  range add up to the increase of stats lost;
- the namespace's connections that miss their connect/accept or their close
  in the stream are never more than the samples the lost records report;
- every connection the stream introduced has exactly one close, copying its
  introduction, and an inferred close only where the real close is missing;
  stats inferred_close grows by the inferred closes the unfiltered
  subscriber received;
- while the held connections are open, no close of theirs arrives and
  `tcptap dump --json` lists exactly the namespace's connections the stream
  introduced and did not close; after every connection closed and the
  daemon reconciled its table, the dump lists none of the namespace.
If a burst caused no inferred close in the namespace, the load bursts again,
at most MAX_ROUNDS times. Then the whole run is repeated with 1024-page
rings, where it must cause no lost record and no inferred close and every
connection must be complete, so the test tells the two cases apart.

Every line of the namespace's stream and of the CLI output is validated
against the schema. The unfiltered subscriber validates only its lost
records, inferred closes and control messages, because other programs on the
machine can publish a million records during the test.
"""

import json
import socket
import threading
import time

import stream_util as su
import tt

SMALL_RING_PAGES = 1
BIG_RING_PAGES = 1024
# Connections per burst, 4 records each. With one page per CPU a burst lost
# 700 to 3000 samples on an otherwise quiet 2-CPU VM, in about 0.4 s.
BURST = 3000
MAX_ROUNDS = 4
# Connections held open through the bursts (each has two ends in the table).
HELD = 20
# Wait for their connect and accept records, which a lost record may replace.
HELD_WAIT_S = 2
# tcptapd reconciles its table on the housekeeping tick (1 s) after a lost
# record was published, so a lost close is replaced within about 2 s.
RECONCILE_SETTLE_S = 3.0
# Bound of the wait until every connection of the namespace has its close.
CLOSE_WAIT_S = 20
POLL_INTERVAL_S = 0.2
# Wait for a filtered client to receive what the unfiltered one already has.
HOST_CATCH_UP_S = 2
# The unfiltered subscriber also receives the machine's other traffic, and must
# not be disconnected as too slow, or its inferred closes cannot be counted.
CLIENT_QUEUE_BYTES = 1 << 28
SEQ_PREFIX = b'{"seq":'
SNAPSHOT_PREFIX = b'{"ts_ns":'
LOST_REASONS = ("ring_full", "nested")
SHOWN = 5


def in_range(records, before, after):
	"""Return the records with before.seq < seq <= after.seq (two stats objects)."""
	return [r for r in records if before["seq"] < r.get("seq", 0) <= after["seq"]]


def lost_records(records):
	return [r for r in records if r.get("type") == "lost"]


def lost_samples(records):
	return sum(r.get("count", 0) for r in lost_records(records))


def inferred_closes(records):
	return [r for r in records if r.get("type") == "close" and r.get("inferred") is True]


def open_cookies(records):
	"""Return the cookies the stream introduced and did not close yet."""
	opened = set()
	for record in records:
		if record.get("type") in tt.INTRO_TYPES:
			opened.add(record.get("cookie"))
		elif record.get("type") == "close":
			opened.discard(record.get("cookie"))
	return opened


def wait_closed(client, t_load_end, held=frozenset()):
	"""Wait until every connection the stream introduced, except those in
	held, has its close and RECONCILE_SETTLE_S passed since t_load_end, at
	most CLOSE_WAIT_S; return the cookies still open."""
	deadline = time.monotonic() + CLOSE_WAIT_S
	settled = t_load_end + RECONCILE_SETTLE_S
	while True:
		remaining = open_cookies(client.records()) - held
		now = time.monotonic()
		if (not remaining and now >= settled) or now >= deadline:
			return remaining
		time.sleep(POLL_INTERVAL_S)


def field_diffs(record, fields):
	return {key: (value, record.get(key, "(missing)")) for key, value in fields.items()
		if record.get(key) != value}


def in_window(record, window):
	ts = record.get("ts_ns")
	return isinstance(ts, int) and window[0] <= ts <= window[1]


def check_against_load(checker, label, records, ends, load, netns):
	"""Compare the namespace's event records with the load's ground truth.
	Return (ends without an introduction, introduced ends without their real
	close)."""
	by_cookie = {e["cookie"]: e for e in ends}
	intros, closes = {}, {}
	for record in tt.event_records(records):
		target = closes if record["type"] == "close" else intros
		target.setdefault(record.get("cookie"), []).append(record)

	foreign = [r for r in tt.event_records(records) if r.get("cookie") not in by_cookie]
	checker.equal("%s: records of connections the load did not make" % label, [],
		      foreign[:SHOWN])

	wrong_intro, wrong_close, wrong_inferred = [], [], []
	missing_intro, missing_close = 0, 0
	for end in ends:
		cookie = end["cookie"]
		intro = intros.get(cookie, [])
		if not intro:
			missing_intro += 1
			continue
		expected = su.end_fields(end, load, netns, su.intro_type(end))
		if field_diffs(intro[0], expected) or not in_window(intro[0], end["intro"]):
			wrong_intro.append((su.describe_end(end), intro[0]))

		close_fields = su.end_fields(end, load, netns, "close")
		real = [r for r in closes.get(cookie, []) if not r.get("inferred")]
		if not real:
			missing_close += 1
		for record in real:
			if field_diffs(record, close_fields) or not in_window(record, end["close"]):
				wrong_close.append((su.describe_end(end), record))
		# An inferred close carries the time the daemon found the loss, and
		# the cpu of the introduction, whose ring the close never reached.
		close_fields["cpu"] = intro[0].get("cpu")
		for record in inferred_closes(closes.get(cookie, [])):
			if field_diffs(record, close_fields):
				wrong_inferred.append((su.describe_end(end), record))

	checker.equal("%s: connect/accept records that differ from the load's connect() "
		      "or accept()" % label, [], wrong_intro[:SHOWN])
	checker.equal("%s: close records that differ from the load's close()" % label, [],
		      wrong_close[:SHOWN])
	checker.equal("%s: inferred closes that differ from their introduction" % label, [],
		      wrong_inferred[:SHOWN])
	return missing_intro, missing_close


def check_closes(checker, label, records):
	"""Check for one close per introduced connection, and an inferred close
	only where the real close is missing."""
	open_left = tt.check_lifecycles(checker, records)
	checker.equal("%s: connections the stream introduced and never closed" % label, [],
		      sorted(open_left)[:SHOWN])
	real = {r.get("cookie") for r in tt.event_records(records)
		if r["type"] == "close" and not r.get("inferred")}
	both = [r for r in inferred_closes(records) if r.get("cookie") in real]
	checker.equal("%s: inferred closes of connections whose real close is in the stream"
		      % label, [], both[:SHOWN])


def check_lost_records(checker, label, records, ncpus):
	"""Check that each lost record names its reason, and ring_full an existing CPU."""
	malformed = []
	for record in lost_records(records):
		reason = record.get("reason")
		if reason == "ring_full":
			good = isinstance(record.get("cpu"), int) and 0 <= record["cpu"] < ncpus
		else:
			good = reason == "nested" and "cpu" not in record
		if not good or not isinstance(record.get("count"), int) or record["count"] < 1:
			malformed.append(record)
	checker.equal("%s: lost records without a valid reason, cpu or count (reasons %s)"
		      % (label, "/".join(LOST_REASONS)), [], malformed[:SHOWN])


def check_ns_dump(checker, tools, daemon, netns, label, expected):
	"""`tcptap dump --json` must list exactly the cookies in expected of the
	namespace's connections. Return the cookies it lists."""
	status, records, problems, stderr = su.run_cli(tools, daemon, ["dump", "--json"],
						       label + " dump")
	checker.equal("%s: tcptap dump --json exit status and stderr" % label, (0, ""),
		      (status, stderr))
	checker.equal("%s: problems in the dump output" % label, [], problems)
	types = [r.get("type") for r in records]
	checker.equal("%s: dump is hello, snapshot records, snapshot_end" % label,
		      ("hello", "snapshot_end"), (types[0] if types else None,
						  types[-1] if types else None))
	listed = {r.get("cookie"): r for r in records
		  if r.get("type") == "snapshot" and r.get("netns") == netns.inode}
	tt.log("%s: dump lists %d connections, %d of them in the test namespace"
	       % (label, types.count("snapshot"), len(listed)))
	checker.equal("%s: dump entries of the test namespace that should not be there"
		      % label, [], [r for c, r in listed.items() if c not in expected][:SHOWN])
	checker.equal("%s: open connections of the test namespace missing from the dump"
		      % label, [], sorted(set(expected) - set(listed))[:SHOWN])
	return set(listed)


class HostCounter:
	"""An unfiltered subscriber that keeps only the seq of each record and the
	lost records and inferred closes, which it validates against the schema.
	Other programs on the machine can publish a million records during the
	test, which this client could neither keep nor validate in time. Event
	and lost records start with their seq (docs/protocol.md gives the key
	order for reading lines quickly), so the seq is read without parsing."""

	def __init__(self, socket_path, schema, label):
		self.schema = schema
		self.label = label
		self.cond = threading.Condition()
		self.snapshot_seq = None
		self.last_seq = None
		self.lost = []		# lost records
		self.inferred = []	# inferred close records
		self.problems = []
		self.eof = False
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		self.sock.connect(socket_path)
		self.sock.sendall(b'{"command":"subscribe"}\n')
		self.reader = threading.Thread(target=self._read_loop, daemon=True)
		self.reader.start()

	def _read_loop(self):
		pending = b""
		while True:
			try:
				data = self.sock.recv(1 << 20)
			except OSError as e:
				with self.cond:
					self.problems.append("recv failed: %s" % e)
				break
			if not data:
				break
			lines = (pending + data).split(b"\n")
			pending = lines.pop()
			with self.cond:
				for line in lines:
					self._handle(line)
				self.cond.notify_all()
		with self.cond:
			if pending:
				self.problems.append("stream ended inside a line: %r" % pending[:200])
			self.eof = True
			self.cond.notify_all()

	def _handle(self, line):
		if line.startswith(SNAPSHOT_PREFIX):
			return
		if not line.startswith(SEQ_PREFIX):
			self._handle_control(line)
			return
		end = line.find(b",", len(SEQ_PREFIX))
		try:
			seq = int(line[len(SEQ_PREFIX):end])
		except ValueError:
			self.problems.append("no integer seq at the start of %r" % line[:200])
			return
		if self.snapshot_seq is None:
			self.problems.append("record before snapshot_end: %r" % line[:200])
		elif seq != (self.last_seq if self.last_seq is not None
			     else self.snapshot_seq) + 1:
			self.problems.append("seq %d after %s: unfiltered records must be "
					     "consecutive" % (seq, self.last_seq))
		self.last_seq = seq
		if b'"type":"lost"' in line or b'"inferred":true' in line:
			record, problems = self.schema.check_line(line)
			self.problems += ["%s in %r" % (p, line[:300]) for p in problems]
			if record is None:
				return
			if record.get("type") == "lost":
				self.lost.append(record)
			elif record.get("type") == "close" and record.get("inferred") is True:
				self.inferred.append(record)

	def _handle_control(self, line):
		record, problems = self.schema.check_line(line)
		self.problems += ["%s in %r" % (p, line[:300]) for p in problems]
		kind = record.get("type") if isinstance(record, dict) else None
		if kind == "snapshot_end":
			self.snapshot_seq = record.get("seq")
		elif kind != "hello":
			self.problems.append("daemon sent %r" % line[:300])

	def wait_snapshot(self, timeout_s=su.SNAPSHOT_TIMEOUT_S):
		with self.cond:
			return self.cond.wait_for(lambda: self.snapshot_seq is not None or self.eof,
						  timeout_s) and self.snapshot_seq is not None

	def wait_seq(self, seq, timeout_s=tt.RECORD_WAIT_S):
		"""Wait until the record with seq arrived; return whether it did."""
		def arrived():
			return self.last_seq is not None and self.last_seq >= seq
		with self.cond:
			self.cond.wait_for(lambda: self.eof or arrived(), timeout_s)
			return arrived()

	def close(self):
		try:
			self.sock.shutdown(socket.SHUT_RDWR)
		except OSError:
			pass
		self.sock.close()
		self.reader.join(5)


def subscribe_host(session, daemon, schema, label):
	client = HostCounter(daemon.socket_path, schema, label)
	session.cleanups.append(("client " + label, client.close))
	if not client.wait_snapshot():
		raise RuntimeError("%s: no snapshot_end within %d s; problems %s"
				   % (label, su.SNAPSHOT_TIMEOUT_S, client.problems))
	return client


def check_counters(checker, label, before, after, mine, host, netns):
	"""Compare the stats differences with the records of the stats seq range."""
	mine_window = in_range(mine, before, after)
	checker.equal("%s: problems on the unfiltered stream" % label, [], host.problems[:SHOWN])
	checker.check(host.last_seq is not None and host.last_seq >= after["seq"],
		      "%s: unfiltered subscriber reached the seq of stats after" % label,
		      ">= %d" % after["seq"], host.last_seq)

	lost_delta = after["lost"] - before["lost"]
	checker.equal("%s: lost samples in the stream equal the increase of stats lost"
		      % label, lost_delta, lost_samples(mine_window))
	checker.equal("%s: the netns filter passes every lost record (seqs)" % label,
		      [r["seq"] for r in in_range(host.lost, before, after)],
		      [r["seq"] for r in lost_records(mine_window)])

	inferred_delta = after["inferred_close"] - before["inferred_close"]
	checker.equal("%s: inferred closes published equal the increase of stats "
		      "inferred_close" % label, inferred_delta,
		      len(in_range(host.inferred, before, after)))
	host_mine = [r["seq"] for r in in_range(host.inferred, before, after)
		     if r.get("netns") == netns.inode]
	checker.equal("%s: the netns filter passes the namespace's inferred closes (seqs)"
		      % label, host_mine, [r["seq"] for r in inferred_closes(mine_window)])
	return lost_delta


def check_held(checker, label, records, held, listed):
	"""Check that no connection held open through the bursts got a close.
	Return the held ends the stream introduced."""
	cookies = {e["cookie"] for e in held}
	introduced = {r.get("cookie") for r in records
		      if r.get("type") in tt.INTRO_TYPES and r.get("cookie") in cookies}
	closed = [r for r in records if r.get("type") == "close" and r.get("cookie") in cookies]
	checker.equal("%s: closes of connections that are still open" % label, [],
		      closed[:SHOWN])
	tt.log("%s: %d of %d held connection ends introduced, %d listed in the dump"
	       % (label, len(introduced), len(cookies), len(listed & cookies)))
	return introduced


def log_stats(label, when, stats):
	tt.log("%s: stats %s %s" % (label, when, json.dumps({k: stats[k] for k in (
		"seq", "lost", "inferred_close", "dropped_orphan_close", "kernel")})))


def burst_until_inferred(load, mine, label, rounds, held):
	"""Run bursts until the stream has an inferred close, at most rounds
	times; return the load's ends."""
	ends = []
	for round_number in range(1, rounds + 1):
		t0 = time.monotonic()
		ends += load.call("burst", count=BURST)["ends"]
		t_burst_end = time.monotonic()
		remaining = wait_closed(mine, t_burst_end, held)
		records = mine.records()
		tt.log("%s: round %d, %d connections in %.2f s; stream has %d lost samples, %d "
		       "inferred closes, %d connections still open"
		       % (label, round_number, BURST, t_burst_end - t0, lost_samples(records),
			  len(inferred_closes(records)), len(remaining)))
		if inferred_closes(records) or remaining:
			break
	return ends


def run_phase(session, tools, netns, load, pages, label):
	"""Run tcptapd with pages per CPU ring, burst and check. Return a summary."""
	checker = session.checker
	tt.log("== %s: --perf-pages %d" % (label, pages))
	args = ["--log-level", "debug", "--perf-pages", str(pages),
		"--client-queue", str(CLIENT_QUEUE_BYTES)]
	daemon = session.start_daemon(tools.tcptapd, netns, args, label="tcptapd-" + label)
	host = subscribe_host(session, daemon, tools.schema, label + " unfiltered")
	mine = su.subscribe(session, daemon, su.netns_request(netns), tools.schema,
			    label + " namespace")
	ncpus = mine.hello["cpus"]
	before = su.read_stats(tools, daemon, checker, label + " stats before")
	log_stats(label, "before", before)
	t_start = time.monotonic()

	# Connections open through the burst: the reconciliation after each
	# lost record must not close them.
	held = load.call("hold", count=HELD)["ends"]
	held_cookies = frozenset(e["cookie"] for e in held)
	mine.wait_for(lambda r: held_cookies <= open_cookies(r), HELD_WAIT_S)

	# Unless the small rings drop a close of the namespace, the checks below
	# prove nothing, so they get up to MAX_ROUNDS bursts. The big ones get
	# one burst, which must lose nothing.
	rounds = MAX_ROUNDS if pages == SMALL_RING_PAGES else 1
	ends = burst_until_inferred(load, mine, label, rounds, held_cookies)
	listed = check_ns_dump(checker, tools, daemon, netns, label + " while held",
			       open_cookies(mine.records()) & held_cookies)
	introduced = check_held(checker, label, mine.records(), held, listed)

	ends += load.call("release")["ends"]
	remaining = wait_closed(mine, time.monotonic())
	tt.log("%s: released the held connections, %d connections still open"
	       % (label, len(remaining)))
	after = su.read_stats(tools, daemon, checker, label + " stats after")
	log_stats(label, "after", after)
	host.wait_seq(after["seq"])
	# The namespace's client reads on its own thread, so wait until it has
	# the records of the range that the unfiltered client lists for it.
	owed = {r["seq"] for r in in_range(host.lost, before, after)} | \
		{r["seq"] for r in in_range(host.inferred, before, after)
		 if r.get("netns") == netns.inode}
	mine.wait_for(lambda r: owed <= {x.get("seq") for x in r}, HOST_CATCH_UP_S)
	ghosts = check_ns_dump(checker, tools, daemon, netns, label + " after all closed", set())
	elapsed = time.monotonic() - t_start

	records = mine.records()
	tt.check_stream(checker, mine, netns, allow_late=pages == SMALL_RING_PAGES)
	check_lost_records(checker, label, records, ncpus)
	check_closes(checker, label, records)
	missing_intro, missing_close = check_against_load(checker, label, records, ends, load,
							   netns)
	lost_delta = check_counters(checker, label, before, after, records, host, netns)
	# A connection that lacks its connect/accept or its real close lost a
	# sample, so a shortfall beyond the lost count is a silent loss.
	checker.check(missing_intro + missing_close <= lost_delta,
		      "%s: records missing from the namespace's connections are covered by lost "
		      "records" % label, "<= %d lost samples" % lost_delta,
		      "%d missing connect/accept, %d missing real close"
		      % (missing_intro, missing_close))
	session.stop_daemon(daemon)
	window = lost_records(in_range(records, before, after))
	return {"lost": lost_delta, "lost_in_stream": lost_samples(records),
		"lost_by_reason": {reason: sum(r["count"] for r in window if r["reason"] == reason)
				   for reason in LOST_REASONS},
		"records_published": after["seq"] - before["seq"],
		"namespace_records": len(tt.event_records(records)),
		"inferred": len(inferred_closes(records)), "missing_intro": missing_intro,
		"missing_close": missing_close, "held_introduced": len(introduced),
		"ghosts": len(ghosts), "ends": len(ends), "seconds": round(elapsed, 1)}


def main(session, tools, cpus):
	checker = session.checker
	netns = session.netns()
	load = su.start_load(session, netns, "tt-lostload")

	small = run_phase(session, tools, netns, load, SMALL_RING_PAGES, "small-ring")
	tt.log("small-ring summary: %s" % json.dumps(small))
	checker.check(small["lost"] > 0, "small-ring: the burst overflowed the rings",
		      "> 0 lost samples", small["lost"])
	checker.check(small["inferred"] > 0, "small-ring: a lost close was inferred within "
		      "%d bursts" % MAX_ROUNDS, "> 0 inferred closes in the namespace",
		      small["inferred"])

	big = run_phase(session, tools, netns, load, BIG_RING_PAGES, "big-ring")
	tt.log("big-ring summary: %s" % json.dumps(big))
	# A loss here fails the control run even if it hit other programs'
	# records, because the daemon traces the whole host. Heavy traffic of
	# other programs can cause such losses, nested ones in particular, so the
	# message shows how many records all namespaces published meanwhile.
	checker.check(big["lost"] == 0 and big["lost_in_stream"] == 0,
		      "big-ring: lost samples (stats and stream)", "0 and 0",
		      "%d and %d, by reason %s; %d records published in all namespaces, %d in "
		      "the test namespace" % (big["lost"], big["lost_in_stream"],
					      big["lost_by_reason"], big["records_published"],
					      big["namespace_records"]))
	checker.equal("big-ring: inferred closes in the namespace", 0, big["inferred"])
	checker.equal("big-ring: connections missing their connect/accept or their close",
		      (0, 0), (big["missing_intro"], big["missing_close"]))


if __name__ == "__main__":
	su.run(main)
