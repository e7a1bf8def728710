# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot and live stream fit together while connections come and go at start-up.

Usage: test-e2e-startup.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

A load process in a private network namespace opens LONG_LIVED connections,
then opens and closes connections every few milliseconds from before tcptapd
starts until after it serves. A subscriber filtered to the namespace must get
every connection open at its snapshot exactly once (the long-lived ones as
seeded, with the load's pid and comm), a connect or accept and a close for
every connection opened after the snapshot, no cookie introduced twice and
no close without an introduction. Then tcptapd is stopped with SIGTERM and
started again while the load keeps running, and a new subscriber of the new
run (a new run_id) must pass the same checks. The load reports its sockets'
cookies, addresses and CLOCK_MONOTONIC windows, so every record is matched by
cookie and checked against the 4-tuple, process and time the load saw.
"""

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
# Rings of 4 MiB per CPU, so a burst of other traffic on the machine while the
# daemon seeds does not overflow them.
DAEMON_ARGS = ["--log-level", "debug", "--perf-pages", "1024"]


def count_during(ends, t_from, t_to, key):
	"""Count ends whose window key ("open" or "close") starts in [t_from, t_to]."""
	return sum(1 for e in ends if e[key] is not None and t_from <= e[key][0] <= t_to)


def start_and_subscribe(session, tools, netns, label):
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns, DAEMON_ARGS, label="tcptapd-" + label)
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
	t_stop1 = su.now_ns()
	session.stop_daemon(first)
	checker.check(client1.wait_eof(), "first subscriber: end of stream after SIGTERM",
		      "EOF", "still open")
	t_launch2, second, client2 = start_and_subscribe(session, tools, netns, "second")
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
	session.stop_daemon(second)


if __name__ == "__main__":
	su.run(main)
