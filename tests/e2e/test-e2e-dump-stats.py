# SPDX-License-Identifier: LGPL-2.1-or-later
"""tcptap dump and tcptap stats against the real daemon.

Usage: test-e2e-dump-stats.py PATH-TO-TCPTAPD PATH-TO-TCPTAP PATH-TO-SCHEMA

A load process in a private network namespace keeps connections open, some
opened before tcptapd starts and some after. `tcptap dump --json` and `tcptap dump` must list
each end with its process, 4-tuple, cookie and origin (seeded for the ones
from before the start, connect or accept for the others). Then the load makes
BURST connections and REFUSED refused connects between two `tcptap stats
--json` readings. An unfiltered subscriber sees every published record, so
the difference of each counter must equal what it received in that seq range,
and the records of the test namespace must be exactly what the load did.
"""

import subprocess
import time

import stream_util as su
import tt

HELD_BEFORE = 3
HELD_AFTER = 2
BURST = 50
REFUSED = 10
# The unfiltered subscriber must not be disconnected as too slow while other
# traffic on the machine floods it, or the counters cannot be compared.
DAEMON_ARGS = ["--log-level", "debug", "--perf-pages", "1024", "--client-queue", str(1 << 28)]
EVENT_TYPES = ("connect", "accept", "close", "connect_failed")


def expected_snapshot(ends, load, netns, origin_of):
	expected = {}
	for end in ends:
		fields = su.end_fields(end, load, netns, "snapshot")
		fields["origin"] = origin_of(end)
		expected[end["cookie"]] = fields
	return expected


def check_json_dump(checker, tools, daemon, expected):
	status, records, problems, stderr = su.run_cli(tools, daemon, ["dump", "--json"], "dump")
	checker.equal("tcptap dump --json: exit status", 0, status)
	checker.equal("tcptap dump --json: stderr", "", stderr)
	checker.equal("tcptap dump --json: problems", [], problems)
	types = [r.get("type") for r in records]
	checker.equal("tcptap dump --json: hello first, snapshot_end last", ("hello", "snapshot_end"),
		      (types[0] if types else None, types[-1] if types else None))
	snapshot = [r for r in records if r.get("type") == "snapshot"]
	end = records[-1] if records else {}
	checker.equal("tcptap dump --json: snapshot_end.count", len(snapshot), end.get("count"))
	by_cookie = {r.get("cookie"): r for r in snapshot}
	for cookie, fields in expected.items():
		record = by_cookie.get(cookie)
		if record is None:
			checker.fail("tcptap dump --json lists cookie %d" % cookie, tt.describe(fields),
				     "missing")
		else:
			checker.record("tcptap dump --json: entry of cookie %d" % cookie, record, fields)
	return records


def check_text_dump(checker, tools, daemon, expected):
	"""The text table has one row per entry: ORIGIN PID COMM IP SADDR SPORT
	DADDR DPORT COOKIE."""
	result = subprocess.run([tools.tcptap, "dump", "--socket", daemon.socket_path],
				stdin=subprocess.DEVNULL, capture_output=True, text=True,
				timeout=su.CLI_TIMEOUT_S)
	checker.equal("tcptap dump: exit status and stderr", (0, ""),
		      (result.returncode, result.stderr))
	lines = result.stdout.splitlines()
	header = lines[0].split() if lines else []
	checker.equal("tcptap dump: header", ["ORIGIN", "PID", "COMM", "IP", "SADDR", "SPORT",
					      "DADDR", "DPORT", "COOKIE"], header)
	rows = {}
	for line in lines[1:]:
		columns = line.split()
		if columns and columns[-1].isdigit():
			rows[int(columns[-1])] = columns
	for cookie, fields in expected.items():
		ip = "4" if fields["family"] == "inet" else "6"
		want = [fields["origin"], str(fields["pid"]), fields["comm"], ip, fields["saddr"],
			str(fields["sport"]), fields["daddr"], str(fields["dport"]), str(cookie)]
		checker.equal("tcptap dump: row of cookie %d" % cookie, want, rows.get(cookie))


def delta(before, after, *path):
	for key in path:
		before, after = before[key], after[key]
	return after - before


def check_table_count(checker, tools, daemon, everything):
	"""Compare stats table.entries with a dump's count. Records published
	between the two change the table, so they are taken into account from
	what the unfiltered subscriber received."""
	status, records, problems, _ = su.run_cli(tools, daemon, ["dump", "--json"], "dump")
	stats = su.query_stats(daemon, tools.schema)
	end = records[-1] if records else {}
	if end.get("type") != "snapshot_end":
		checker.fail("tcptap dump --json ends with snapshot_end", "snapshot_end", end)
		return
	everything.wait_for(lambda received: received and received[-1]["seq"] >= stats["seq"])
	between = [r for r in everything.records() if end["seq"] < r["seq"] <= stats["seq"]]
	opened = sum(1 for r in between if r["type"] in ("connect", "accept"))
	closed = sum(1 for r in between if r["type"] == "close")
	tt.log("dump at seq %d: %d entries; stats at seq %d: %d entries; %d opened, %d closed "
	       "between" % (end["seq"], end["count"], stats["seq"], stats["table"]["entries"],
			    opened, closed))
	checker.equal("stats table.entries: the dump's count plus the records since",
		      end["count"] + opened - closed, stats["table"]["entries"])


def check_counters(checker, before, after, everything, mine):
	"""Compare the stats difference with the records of the seq range."""
	window = [r for r in everything if before["seq"] < r["seq"] <= after["seq"]]
	checker.equal("records received in the stats seq range, by seq",
		      list(range(before["seq"] + 1, after["seq"] + 1)), [r["seq"] for r in window])
	for kind in EVENT_TYPES:
		checker.equal("stats events.%s difference equals the records published" % kind,
			      sum(1 for r in window if r["type"] == kind),
			      delta(before, after, "events", kind))
	lost = [r for r in window if r["type"] == "lost"]
	checker.equal("stats lost difference equals the lost records' counts",
		      sum(r["count"] for r in lost), delta(before, after, "lost"))
	checker.equal("stats late difference equals the late records",
		      sum(1 for r in window if r.get("late")), delta(before, after, "late"))
	checker.equal("stats merger.released difference: published plus dropped",
		      delta(before, after, "seq") + delta(before, after, "dropped_duplicate") +
		      delta(before, after, "dropped_orphan_close"),
		      delta(before, after, "merger", "released"))
	checker.equal("stats clients.accepted difference: the second stats client", 1,
		      delta(before, after, "clients", "accepted"))
	checker.equal("stats clients.connected: two subscribers and the stats client", 3,
		      after["clients"]["connected"])

	ours = [r for r in mine if before["seq"] < r["seq"] <= after["seq"]]
	counts = {kind: sum(1 for r in ours if r["type"] == kind) for kind in EVENT_TYPES}
	checker.equal("records of the test namespace in the seq range",
		      {"connect": BURST, "accept": BURST, "close": 2 * BURST,
		       "connect_failed": REFUSED}, counts)
	for kind in EVENT_TYPES:
		checker.check(delta(before, after, "events", kind) >= counts[kind],
			      "stats events.%s difference covers the test's records" % kind,
			      ">= %d" % counts[kind], delta(before, after, "events", kind))


def check_refused(checker, mine, attempts, load, netns):
	failed = {r.get("cookie"): r for r in mine if r.get("type") == "connect_failed"}
	for attempt in attempts:
		what = "connect_failed of the refused connect from port %d" % attempt["local"][1]
		checker.equal("%s: connect() failed with ECONNREFUSED" % what, 111, attempt["error"])
		record = failed.get(attempt["cookie"])
		if record is None:
			checker.fail(what, "a connect_failed record with cookie %d" % attempt["cookie"],
				     "none")
			continue
		fields = {"type": "connect_failed", "error": "ECONNREFUSED", "pid": load.pid,
			  "tid": load.pid, "comm": load.comm, "family": "inet", "saddr": "127.0.0.1",
			  "sport": attempt["local"][1], "daddr": "127.0.0.1",
			  "dport": attempt["peer"][1], "netns": netns.inode}
		checker.record(what, record, fields, tuple(attempt["window"]))


def main(session, tools, cpus):
	checker = session.checker
	netns = session.netns()
	load = su.start_load(session, netns, "tt-dumpload")
	before_start = load.call("hold", count=HELD_BEFORE)["ends"]
	t_launch = su.now_ns()
	daemon = session.start_daemon(tools.tcptapd, netns, DAEMON_ARGS)
	everything = su.subscribe(session, daemon, {}, tools.schema, "unfiltered subscriber")
	mine_client = su.subscribe(session, daemon, su.netns_request(netns), tools.schema,
				   "namespace subscriber")
	after_start = load.call("hold", count=HELD_AFTER)["ends"]
	checker.check(su.wait_records(mine_client, len(after_start)),
		      "introductions of the connections held after the start", len(after_start),
		      len(mine_client.records()))

	tt.log("== dump")
	before_cookies = {e["cookie"] for e in before_start}
	expected = expected_snapshot(before_start + after_start, load, netns,
				     lambda e: "seeded" if e["cookie"] in before_cookies
				     else su.intro_type(e))
	check_json_dump(checker, tools, daemon, expected)
	check_text_dump(checker, tools, daemon, expected)
	check_table_count(checker, tools, daemon, everything)

	tt.log("== stats")
	stats_before = su.read_stats(tools, daemon, checker, "stats before")
	checker.equal("stats backend", "tracepoint", stats_before.get("backend"))
	checker.equal("stats per-CPU entries", everything.hello["cpus"], len(stats_before["cpus"]))
	ends = load.call("burst", count=BURST)["ends"]
	attempts = load.call("refuse", count=REFUSED)["attempts"]
	expected_records = len(after_start) + 2 * len(ends) + REFUSED
	if not su.wait_records(mine_client, expected_records):
		tt.log("only %d of %d records arrived" % (len(mine_client.records()), expected_records))
	time.sleep(tt.SETTLE_S)
	stats_after = su.read_stats(tools, daemon, checker, "stats after")
	everything.wait_for(lambda records: records and records[-1]["seq"] >= stats_after["seq"])
	tt.log("stats before %s" % stats_before)
	tt.log("stats after %s" % stats_after)
	check_counters(checker, stats_before, stats_after, everything.records(),
		       mine_client.records())
	check_refused(checker, mine_client.records(), attempts, load, netns)

	tt.log("== stream of the test namespace")
	released = load.call("release")["ends"]
	closes = len(released)
	su.wait_records(mine_client, expected_records + closes)
	time.sleep(tt.SETTLE_S)
	tt.check_stream(checker, mine_client, netns)
	su.check_snapshot_frame(checker, mine_client)
	su.check_ground_truth(checker, mine_client, ends + released, load, netns, t_launch,
			      attempts=attempts)
	seeded = {r.get("cookie"): r for r in mine_client.snapshot}
	checker.equal("connections left open", set(),
		      tt.check_lifecycles(checker, mine_client.records(), seeded))
	checker.equal("unfiltered subscriber: protocol problems", [], everything.problems)
	session.stop_daemon(daemon)


if __name__ == "__main__":
	su.run(main)
