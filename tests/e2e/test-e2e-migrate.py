# SPDX-License-Identifier: LGPL-2.1-or-later
"""Per-connection order when a connection's records come from two CPUs.

Usage: test-e2e-migrate.py PATH-TO-TCPTAPD

One process connects and accepts on one CPU, moves itself to the other CPU
and closes both ends at once, alternating the direction every iteration,
while a CPU burner runs on each CPU. The introduction and the close of a
connection then sit in two different per-CPU rings a few microseconds apart.
Every connection must arrive as connect/accept before close, no close may
come without its introduction, and the stream must stay in ts_ns order.
"""

import time

import tt

ITERATIONS = 20000
DURATION_S = 20
RECORDS_PER_CONNECTION = 4	# connect, accept and two closes
BURNER_LIFETIME_S = 120		# burners exit on their own if cleanup never runs
# The loop writes thousands of records per second and tcptapd also traces
# every other program on the host. Larger rings keep losses, which this test
# is not about, from hiding the order it checks.
PERF_PAGES = 1024
BURNER = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
	pass
"""


def main(session, daemon_path, cpus):
	checker = session.checker
	cpu_a, cpu_b = cpus[0], cpus[1]
	netns = session.netns()
	cgroup = session.cgroup()
	daemon = session.start_daemon(daemon_path, netns, ["--perf-pages", str(PERF_PAGES)])
	subscriber = session.subscribe(daemon, netns)
	migrator = session.agent(netns, "tt-migrate", cgroup=cgroup)

	burners = [session.process([tt.PYTHON, "-c", BURNER, str(cpu), str(BURNER_LIFETIME_S)])
		   for cpu in (cpu_a, cpu_b)]
	tt.log("CPU burners pid %s" % [b.pid for b in burners])
	result = migrator.call("churn", timeout_s=DURATION_S + 60, connect_cpu=cpu_a,
			       close_cpu=cpu_b, alternate=True, count=ITERATIONS,
			       duration_s=DURATION_S)
	conns = result["conns"]
	tt.log("%d connections in %.1f s" % (len(conns), (result["t1"] - result["t0"]) / 1e9))
	checker.check(len(conns) >= 100, "connections made", ">= 100", len(conns))

	expected = RECORDS_PER_CONNECTION * len(conns)
	if not subscriber.wait_for(lambda records: len(records) >= expected, 60):
		tt.log("only %d of %d records arrived within 60 s"
		       % (len(subscriber.records()), expected))
	time.sleep(tt.SETTLE_S)
	records = tt.check_stream(checker, subscriber, netns)
	tt.log("%d records received, %d expected" % (len(records), expected))

	open_cookies = tt.check_lifecycles(checker, records)
	checker.equal("connections left open", set(), open_cookies)
	seen = {}
	for record in tt.event_records(records):
		seen.setdefault(record.get("cookie"), []).append(record["type"])
	wrong = []
	for client, server in conns:
		if seen.get(client) != ["connect", "close"]:
			wrong.append({"cookie": client, "records": seen.get(client)})
		if seen.get(server) != ["accept", "close"]:
			wrong.append({"cookie": server, "records": seen.get(server)})
	checker.equal("connections not reported as introduction then close (first 10)", [],
		      wrong[:10])
	checker.equal("connections not reported as introduction then close", 0, len(wrong))
	foreign = [r for r in tt.event_records(records) if r.get("pid") != migrator.pid]
	checker.equal("records of other processes", [], foreign[:5])
	cpus_seen = sorted({r.get("cpu") for r in tt.event_records(records)})
	checker.equal("cpus the records came from", sorted({cpu_a, cpu_b}), cpus_seen)
	session.stop_daemon(daemon)


if __name__ == "__main__":
	tt.run(main, min_cpus=2)
