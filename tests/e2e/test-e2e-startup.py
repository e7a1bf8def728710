# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot and live stream fit together while connections come and go at start-up.

Usage: test-e2e-startup.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

A load process in a private network namespace opens LONG_LIVED connections,
then opens and closes connections every few milliseconds from before tcptapd
starts until after it serves. A subscriber filtered to the namespace must get
every connection open at its snapshot exactly once, the long-lived ones as
seeded with the load's pid and comm. Every connection opened after the
snapshot must get a connect or accept and a close. No cookie may be
introduced twice, and no close may come without an introduction.

Then tcptapd is stopped with SIGTERM and started again while the load keeps
running, and a subscriber of the new run (a new run_id) must pass the same
checks. The second start pauses ATTACH_GAP_MS between attaching the
state-change program and the accept programs. Meanwhile the load opens a
connection every TRICKLE_PAUSE_S until the daemon serves, and keeps them open
to the end. Those made in the gap have their handshake traced but not their
accept(), and their closes must still be reported. The load reports its sockets' cookies, addresses and CLOCK_MONOTONIC
windows, so every record is matched by cookie and checked against the
4-tuple, process and time the load saw. Last, tcptapd is stopped while a
client reads slowly, and that client's stream must end with a whole line.
"""

import json
import socket
import threading
import time

import stream_util as su
import tt

LONG_LIVED = 8			# connections held from before the first start to the end
CHURN_POOL = 24			# churned connections open at once
CHURN_PAUSE_MS = 2
CHURN_MAX_COUNT = 40000		# bounds of the churn, far above what one run needs
CHURN_MAX_DURATION_S = 180
CHURN_BEFORE_START_S = 1.5
CHURN_AFTER_SNAPSHOT_S = 2.0
CLOSE_WAIT_S = 30
# Connections made in a burst while the slow reader lags, and its reading pace.
SLOW_BURST = 3000
SLOW_READ_BYTES = 997
SLOW_READ_PAUSE_S = 0.001
SLOW_READ_BEFORE_STOP_BYTES = 1 << 20
SLOW_READ_WAIT_S = 20
# Rings of 4 MiB per CPU, so a burst of other traffic on the machine while the
# daemon seeds does not overflow them.
DAEMON_ARGS = ["--log-level", "debug", "--perf-pages", "1024"]
ATTACH_GAP_MS = 400
TRICKLE_PAUSE_S = 0.02
TRICKLE_MAX_COUNT = 1000


def count_during(ends, t_from, t_to, key):
	"""Count ends whose window key ("open" or "close") starts in [t_from, t_to]."""
	return sum(1 for e in ends if e[key] is not None and t_from <= e[key][0] <= t_to)


class Trickle:
	"""Opens one connection of the load every TRICKLE_PAUSE_S and keeps it
	open, at most TRICKLE_MAX_COUNT, until stop()."""

	def __init__(self, load):
		self.load = load
		self.count = 0
		self.done = threading.Event()
		self.thread = threading.Thread(target=self._run, daemon=True)
		self.thread.start()

	def _run(self):
		while not self.done.is_set() and self.count < TRICKLE_MAX_COUNT:
			self.load.call("hold", count=1)
			self.count += 1
			self.done.wait(TRICKLE_PAUSE_S)

	def stop(self):
		self.done.set()
		self.thread.join(su.LOAD_REPLY_TIMEOUT_S)
		return self.count


def start_and_subscribe(session, tools, netns, label, extra_args=()):
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns, DAEMON_ARGS + list(extra_args),
				      label="tcptapd-" + label)
	client = su.subscribe(session, daemon, su.netns_request(netns), tools.schema,
			      label + " subscriber")
	tt.log("%s: %d snapshot records at seq %s" % (label, len(client.snapshot),
						     client.snapshot_end.get("seq")))
	return t_launch, daemon, client


def check_run(checker, label, client, ends, held, load, netns, t_launch, t_cover_end):
	su.check_snapshot_frame(checker, client)
	tt.check_stream(checker, client, netns)
	su.check_ground_truth(checker, client, ends, load, netns, t_launch, t_cover_end)
	seeded = {r.get("cookie"): r for r in client.snapshot}
	open_cookies = tt.check_lifecycles(checker, client.records(), seeded)

	held_cookies = {e["cookie"] for e in held}
	held_seeded = [r for r in client.snapshot
		       if r.get("cookie") in held_cookies and r.get("origin") == "seeded"]
	checker.equal("%s: long-lived ends in the snapshot as seeded" % label,
		      len(held_cookies), len(held_seeded))

	# The load must really have opened and closed connections while this
	# daemon started, or the test proved nothing about the race.
	t_snap = client.t_snapshot_end
	opened = count_during(ends, t_launch, t_snap, "open")
	closed = count_during(ends, t_launch, t_snap, "close")
	tt.log("%s: %d ends opened and %d closed between the start and the snapshot"
	       % (label, opened, closed))
	checker.check(opened > 0, "%s: ends opened during start-up" % label, "> 0", opened)
	checker.check(closed > 0, "%s: ends closed during start-up" % label, "> 0", closed)
	return open_cookies


def main(session, tools, cpus):
	checker = session.checker
	netns = session.netns()
	load = su.start_load(session, netns, "tt-startload")
	held = load.call("hold", count=LONG_LIVED)["ends"]
	load.call("churn_start", pool=CHURN_POOL, pause_ms=CHURN_PAUSE_MS,
		  max_count=CHURN_MAX_COUNT, max_duration_s=CHURN_MAX_DURATION_S)
	time.sleep(CHURN_BEFORE_START_S)

	tt.log("== first start while the load runs")
	t_launch1, first, client1 = start_and_subscribe(session, tools, netns, "first")
	time.sleep(CHURN_AFTER_SNAPSHOT_S)

	tt.log("== restart while the load runs")
	su.check_kernel_counters(checker, first, tools.schema, "first run")
	t_stop1 = su.now_ns()
	session.stop_daemon(first)
	checker.check(client1.wait_eof(), "first subscriber: end of stream after SIGTERM",
		      "EOF", "still open")
	trickle = Trickle(load)
	t_launch2, second, client2 = start_and_subscribe(session, tools, netns, "second",
							 ["--test-attach-gap", str(ATTACH_GAP_MS)])
	tt.log("second: the load held %d connections opened during the start" % trickle.stop())
	time.sleep(CHURN_AFTER_SNAPSHOT_S)

	tt.log("== close everything")
	released = load.call("release")["ends"]
	churn = load.call("churn_stop")
	tt.log("load churned %d connections" % churn["count"])
	checker.equal("churn ran until the test stopped it (not cut by its bounds)", False,
		      churn["limited"])
	ends = churn["ends"] + released

	t_snap2 = client2.t_snapshot_end
	must_close = {e["cookie"] for e in ends if e["close"][0] > t_snap2} | \
		{r.get("cookie") for r in client2.snapshot}

	def all_closed(records):
		return must_close <= {r.get("cookie") for r in records if r.get("type") == "close"}
	if not client2.wait_for(all_closed, CLOSE_WAIT_S):
		tt.log("not every close arrived within %d s" % CLOSE_WAIT_S)
	time.sleep(tt.SETTLE_S)

	tt.log("== checks of the first run (%d live records)" % len(client1.records()))
	check_run(checker, "first", client1, ends, held, load, netns, t_launch1,
		  t_stop1 - su.RELEASE_MARGIN_NS)
	tt.log("== checks of the second run (%d live records)" % len(client2.records()))
	open_cookies = check_run(checker, "second", client2, ends, held, load, netns, t_launch2,
				 su.FOREVER_NS)
	checker.equal("second: connections left open after the load closed all", set(),
		      open_cookies)

	run_ids = (client1.hello.get("run_id"), client2.hello.get("run_id"))
	checker.check(run_ids[0] != run_ids[1], "run_id changes across a restart",
		      "two different ids", run_ids)
	for client in (client1, client2):
		checker.equal("%s: backend" % client.label, "tracepoint", client.hello.get("backend"))
	su.check_kernel_counters(checker, second, tools.schema, "second run")
	stop_with_slow_reader(session, tools, netns, load, second)


class SlowReader:
	"""A subscriber that reads SLOW_READ_BYTES every SLOW_READ_PAUSE_S, so the
	daemon's writes to it often fill its socket buffer in the middle of a line."""

	def __init__(self, daemon, request):
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		self.sock.connect(daemon.socket_path)
		self.sock.sendall((json.dumps(request) + "\n").encode())
		self.data = bytearray()
		self.stop = threading.Event()
		self.thread = threading.Thread(target=self._read, daemon=True)
		self.thread.start()

	def _read(self):
		while not self.stop.is_set():
			chunk = self.sock.recv(SLOW_READ_BYTES)
			if not chunk:
				return
			self.data += chunk
			time.sleep(SLOW_READ_PAUSE_S)

	def finish(self):
		"""Read the rest at full speed until end of file; return everything."""
		self.stop.set()
		self.thread.join(su.EOF_TIMEOUT_S)
		self.sock.settimeout(su.EOF_TIMEOUT_S)
		while True:
			chunk = self.sock.recv(1 << 16)
			if not chunk:
				break
			self.data += chunk
		self.sock.close()
		return bytes(self.data)


def stop_with_slow_reader(session, tools, netns, load, daemon):
	"""Stop tcptapd with SIGTERM while a client lags behind a burst: what the
	client received must end with a whole line."""
	checker = session.checker
	tt.log("== stop while a client reads slowly")
	reader = SlowReader(daemon, su.netns_request(netns))
	session.cleanups.append(("slow reader", reader.sock.close))
	load.call("burst", count=SLOW_BURST)
	# The daemon writes a large backlog in one sendmsg() once the reader has
	# made room, and such a write can stop in the middle of a line. Let
	# that happen a few times before the SIGTERM.
	deadline = time.monotonic() + SLOW_READ_WAIT_S
	while len(reader.data) < SLOW_READ_BEFORE_STOP_BYTES and time.monotonic() < deadline:
		time.sleep(0.05)
	tt.log("slow reader read %d bytes before the SIGTERM" % len(reader.data))
	session.stop_daemon(daemon)
	data = reader.finish()
	tt.log("slow reader received %d bytes" % len(data))
	checker.check(data.endswith(b"\n"), "slow reader: stream cut by SIGTERM ends with a whole "
		      "line", "a newline at the end", data[-120:])
	lines = data.split(b"\n")
	for line in lines[:-1]:
		record, problems = tools.schema.check_line(line)
		if problems:
			checker.fail("slow reader: valid line", "strict JSON", (line[:200], problems))
			break


if __name__ == "__main__":
	su.run(main)
