# SPDX-License-Identifier: LGPL-2.1-or-later
"""Resuming a subscription after a disconnect.

Usage: test-e2e-resume.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

A client subscribed to a private network namespace processes part of its live
records and disconnects. A load process makes more connections, and the
client comes back with resume_from and run_id. It must get hello with
resumed: true, no snapshot, and then exactly the records after its last seq,
first from the history and then live. They must be the same records, seq for
seq, as a reference client that stayed connected received, also with a
narrower filter. Against a daemon started
with --history 50, a resume from a seq older than the history, with a wrong
run_id or from a seq never published gets resumed: false, a resume_error and
a full snapshot; a resume from exactly the oldest seq the history still
covers is accepted and one seq further back is not.
"""

import time

import stream_util as su
import tt

SMALL_HISTORY = 50
# Large enough that other TCP traffic on the machine cannot evict the
# records of the exact-replay part while it runs.
LARGE_HISTORY = 1 << 20
RECORDS_PER_CONNECTION = 4	# connect, accept and the close of each end
PROCESSED_BEFORE_DISCONNECT = 5
BOUNDARY_ATTEMPTS = 10
BOUNDARY_PAUSE_S = 0.3
DAEMON_ARGS = ["--log-level", "debug", "--perf-pages", "1024"]
WRONG_RUN_ID = "0123456789abcdef0123456789abcdef"


def burst(load, ends, count):
	ends += load.call("burst", count=count)["ends"]
	return count * RECORDS_PER_CONNECTION


def check_resumed(checker, client, resume_from):
	label = client.label
	hello = client.hello or {}
	checker.equal("%s: hello.resumed" % label, True, hello.get("resumed"))
	checker.equal("%s: no resume_error" % label, None, hello.get("resume_error"))
	checker.equal("%s: hello.snapshot_seq is the resume point" % label, resume_from,
		      hello.get("snapshot_seq"))
	checker.equal("%s: snapshot records after an accepted resume" % label, [],
		      client.snapshot)
	checker.equal("%s: snapshot_end after an accepted resume" % label, None,
		      client.snapshot_end)


def check_rejected(checker, client, run_id):
	"""A rejected resume is a fresh subscription: resume_error, then a snapshot."""
	label = client.label
	hello = client.hello or {}
	checker.equal("%s: hello.resumed" % label, False, hello.get("resumed"))
	error = hello.get("resume_error")
	checker.check(isinstance(error, str) and error != "", "%s: resume_error names the reason"
		      % label, "a non-empty string", error)
	tt.log("%s: resume_error %r" % (label, error))
	checker.equal("%s: run_id of this run" % label, run_id, hello.get("run_id"))
	checker.check(client.wait_snapshot(), "%s: snapshot follows the rejected resume" % label,
		      "snapshot_end", "none")
	su.check_snapshot_frame(checker, client)


def exact_replay(session, tools, netns, load):
	"""Resume against a large history: the replay equals what a client that
	never left received."""
	checker = session.checker
	ends = []
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns,
				      DAEMON_ARGS + ["--history", str(LARGE_HISTORY)],
				      label="tcptapd-large-history")
	request = su.netns_request(netns)
	reference = su.subscribe(session, daemon, request, tools.schema, "reference")
	first = su.subscribe(session, daemon, request, tools.schema, "client before disconnect")
	run_id = first.hello["run_id"]

	expected = burst(load, ends, 3)
	for client in (reference, first):
		checker.check(su.wait_records(client, expected), "%s: first burst received"
			      % client.label, expected, len(client.records()))
	processed = first.records()[:PROCESSED_BEFORE_DISCONNECT]
	last_seq = processed[-1]["seq"]
	first.close()
	tt.log("client processed %d records up to seq %d and disconnected"
	       % (len(processed), last_seq))
	checker.equal("records before the disconnect equal the reference's",
		      reference.records()[:PROCESSED_BEFORE_DISCONNECT], processed)

	expected += burst(load, ends, 3)
	checker.check(su.wait_records(reference, expected), "reference: second burst received",
		      expected, len(reference.records()))

	resumed = su.subscribe(session, daemon, su.netns_request(
		netns, resume_from=last_seq, run_id=run_id), tools.schema, "resumed client")
	closes_only = su.subscribe(session, daemon, {
		"command": "subscribe", "filter": {"netns": netns.inode, "types": ["close"]},
		"resume_from": last_seq, "run_id": run_id}, tools.schema, "resumed client, closes only")
	expected += burst(load, ends, 2)
	checker.check(su.wait_records(reference, expected), "reference: third burst received",
		      expected, len(reference.records()))

	missing = [r for r in reference.records() if r["seq"] > last_seq]
	missing_closes = [r for r in missing if r["type"] == "close"]
	resumed.wait_for(lambda records: len(records) >= len(missing))
	closes_only.wait_for(lambda records: len(records) >= len(missing_closes))
	time.sleep(tt.SETTLE_S)

	for client in (resumed, closes_only):
		check_resumed(checker, client, last_seq)
		tt.check_stream(checker, client, netns)
	checker.equal("resumed client: exactly the records after seq %d" % last_seq, missing,
		      resumed.records())
	checker.equal("resumed client with a close filter: exactly the closes after seq %d"
		      % last_seq, missing_closes, closes_only.records())

	check_reference(checker, reference, ends, load, netns, t_launch)
	session.stop_daemon(daemon)


def check_reference(checker, reference, ends, load, netns, t_launch):
	su.check_snapshot_frame(checker, reference)
	tt.check_stream(checker, reference, netns)
	su.check_ground_truth(checker, reference, ends, load, netns, t_launch)
	checker.equal("%s: connections left open" % reference.label, set(),
		      tt.check_lifecycles(checker, reference.records()))


def resume_and_check_boundary(session, tools, daemon, netns, run_id, back, accepted):
	"""Resume from the newest seq minus back and expect accepted. The history
	is global, so a record of any namespace published between reading the
	newest seq and the resume moves the boundary: such an attempt is
	repeated. Returns whether one attempt ran undisturbed."""
	checker = session.checker
	label = "resume %d records back" % back
	for attempt in range(BOUNDARY_ATTEMPTS):
		newest = su.query_stats(daemon, tools.schema)["seq"]
		client = su.subscribe(session, daemon, su.netns_request(
			netns, resume_from=newest - back, run_id=run_id), tools.schema,
			"%s (attempt %d)" % (label, attempt + 1))
		after = su.query_stats(daemon, tools.schema)["seq"]
		if after != newest:
			tt.log("%s: %d records of other traffic were published meanwhile, again"
			       % (label, after - newest))
			client.close()
			time.sleep(BOUNDARY_PAUSE_S)
			continue
		if accepted:
			check_resumed(checker, client, newest - back)
		else:
			check_rejected(checker, client, run_id)
		client.close()
		return True
	checker.fail("%s: one attempt without other traffic" % label,
		     "no record published during one of %d attempts" % BOUNDARY_ATTEMPTS,
		     "other TCP traffic on this machine moved the history every time")
	return False


def evicted_history(session, tools, netns, load):
	"""Resumes that the daemon must reject against --history 50."""
	checker = session.checker
	ends = []
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns,
				      DAEMON_ARGS + ["--history", str(SMALL_HISTORY)],
				      label="tcptapd-small-history")
	request = su.netns_request(netns)
	reference = su.subscribe(session, daemon, request, tools.schema, "small-history reference")
	first = su.subscribe(session, daemon, request, tools.schema, "small-history client")
	run_id = first.hello["run_id"]
	# Connections held open through the resumes, so the snapshots that follow
	# a rejected resume have something to list: one intro per end.
	held = load.call("hold", count=2)["ends"]
	expected = len(held)
	expected += burst(load, ends, 2)
	checker.check(su.wait_records(first, expected), "small-history client: records received",
		      expected, len(first.records()))
	last_seq = first.records()[-1]["seq"]
	first.close()

	expected += burst(load, ends, SMALL_HISTORY // RECORDS_PER_CONNECTION + 5)
	checker.check(su.wait_records(reference, expected), "small-history reference: records "
		      "received", expected, len(reference.records()))
	newest = su.query_stats(daemon, tools.schema)["seq"]
	checker.check(newest - last_seq > SMALL_HISTORY, "records published since the disconnect",
		      "> %d" % SMALL_HISTORY, newest - last_seq)

	tt.log("== resume from an evicted seq")
	stale = su.subscribe(session, daemon, su.netns_request(
		netns, resume_from=last_seq, run_id=run_id), tools.schema, "resume from evicted seq")
	check_rejected(checker, stale, run_id)
	held_cookies = sorted(e["cookie"] for e in held)
	checker.equal("resume from evicted seq: the snapshot lists the held connections",
		      held_cookies, sorted(r.get("cookie") for r in stale.snapshot))

	tt.log("== resume with a wrong run_id")
	wrong = su.subscribe(session, daemon, su.netns_request(
		netns, resume_from=newest, run_id=WRONG_RUN_ID), tools.schema, "resume wrong run_id")
	check_rejected(checker, wrong, run_id)
	checker.equal("resume with a wrong run_id: the snapshot lists the held connections",
		      held_cookies, sorted(r.get("cookie") for r in wrong.snapshot))

	tt.log("== resume from a seq never published")
	future = su.subscribe(session, daemon, su.netns_request(
		netns, resume_from=newest + 10**9, run_id=run_id), tools.schema,
		"resume from a future seq")
	check_rejected(checker, future, run_id)

	tt.log("== the oldest resumable seq and the one before it")
	resume_and_check_boundary(session, tools, daemon, netns, run_id, SMALL_HISTORY, True)
	resume_and_check_boundary(session, tools, daemon, netns, run_id, SMALL_HISTORY + 1, False)

	tt.log("== rejected resumes still stream live records")
	count = burst(load, ends, 1)
	ends += load.call("release")["ends"]
	count += len(held)
	for client in (stale, wrong, future):
		client.wait_for(lambda records: len(tt.event_records(records)) >= count)
	time.sleep(tt.SETTLE_S)
	tail = [r for r in reference.records() if r["seq"] > stale.snapshot_end["seq"]]
	for client in (stale, wrong, future):
		tt.check_stream(checker, client, netns)
		live = [r for r in reference.records() if r["seq"] > client.snapshot_end["seq"]]
		checker.equal("%s: live records equal the reference's" % client.label, live,
			      client.records())
	checker.check(len(tail) >= count, "records after the rejected resumes", ">= %d" % count,
		      len(tail))
	check_reference(checker, reference, ends, load, netns, t_launch)
	session.stop_daemon(daemon)


def main(session, tools, cpus):
	netns = session.netns()
	load = su.start_load(session, netns, "tt-resumeload")
	tt.log("== resume against a large history")
	exact_replay(session, tools, netns, load)
	tt.log("== resume against --history %d" % SMALL_HISTORY)
	evicted_history(session, tools, netns, load)


if __name__ == "__main__":
	su.run(main)
