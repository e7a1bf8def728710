# SPDX-License-Identifier: LGPL-2.1-or-later
"""State that exists before tcptapd starts.

Usage: test-e2e-accept-before-start.py PATH-TO-TCPTAPD

A server process is blocked in accept() before tcptapd starts; a client
connects after tcptapd is ready. The accept record must name the server's
pid, tid and comm, never the client's. A connection established before the
start must appear in the snapshot with its owning processes, and its later
close must carry the snapshot's attribution.
"""

import platform
import time

import tt

# accept and accept4 syscall numbers, to see in /proc/PID/syscall that the
# server really blocks in accept() before tcptapd starts.
ACCEPT_SYSCALLS = {
	"x86_64": {43, 288},
	"aarch64": {202, 242},
}
BLOCKED_WAIT_S = 5


def wait_blocked_in_accept(checker, agent):
	"""Check that agent sits in accept() or accept4(), polling
	/proc/PID/syscall for at most BLOCKED_WAIT_S."""
	agent.wait_accepting()
	numbers = ACCEPT_SYSCALLS.get(platform.machine())
	if numbers is None:
		tt.log("NOTE: accept syscall numbers unknown on %s, waiting 0.5 s instead"
		       % platform.machine())
		time.sleep(0.5)
		return
	deadline = time.monotonic() + BLOCKED_WAIT_S
	current = None
	while time.monotonic() < deadline:
		with open("/proc/%d/syscall" % agent.pid) as f:
			current = f.read().split()[0]
		if current.isdigit() and int(current) in numbers:
			tt.log("server pid %d blocked in syscall %s" % (agent.pid, current))
			return
		time.sleep(0.05)
	checker.fail("server blocked in accept() before tcptapd starts",
		     "/proc/%d/syscall shows one of %s" % (agent.pid, sorted(numbers)), current)


def main(session, daemon_path, cpus):
	checker = session.checker
	netns = session.netns()
	cgroup = session.cgroup()
	server = session.agent(netns, "tt-srvpre", cgroup=cgroup)
	client = session.agent(netns, "tt-clipre", uid=tt.NOBODY_UID, cgroup=cgroup)
	seed_server = session.agent(netns, "tt-seedsrv", cgroup=cgroup)
	seed_client = session.agent(netns, "tt-seedcli", uid=tt.NOBODY_UID, cgroup=cgroup)

	tt.log("== connection established before tcptapd starts")
	seed_listener = seed_server.call("listen", family="inet", addr="127.0.0.1")
	seed_conn = seed_client.call("connect", family="inet", addr="127.0.0.1",
				     port=seed_listener["port"])
	if seed_conn["error"] is not None:
		raise RuntimeError("connect before the start failed with %s" % seed_conn["error"])
	seed_acc = seed_server.call("accept", sock=seed_listener["sock"])
	seed_server.call("close", sock=seed_listener["sock"])

	tt.log("== server blocked in accept() before tcptapd starts")
	listener = server.call("listen", family="inet", addr="127.0.0.1")
	server.send("accept", sock=listener["sock"])
	wait_blocked_in_accept(checker, server)

	daemon = session.start_daemon(daemon_path, netns)
	subscriber = session.subscribe(daemon, netns)

	conn = client.call("connect", family="inet", addr="127.0.0.1", port=listener["port"])
	if conn["error"] is not None:
		raise RuntimeError("connect after the start failed with %s" % conn["error"])
	acc = server.reply()
	checker.check(acc["t0"] < conn["t0"], "accept() was called before the client connected",
		      "accept t0 < connect t0 = %d" % conn["t0"], acc["t0"])
	client_close = client.call("close", sock=conn["sock"])
	server.call("recv", sock=acc["sock"])
	server_close = server.call("close", sock=acc["sock"])
	server.call("close", sock=listener["sock"])

	seed_client_close = seed_client.call("close", sock=seed_conn["sock"])
	seed_server.call("recv", sock=seed_acc["sock"])
	seed_server_close = seed_server.call("close", sock=seed_acc["sock"])

	expects = [
		tt.Expect("client's connect", tt.connection_fields(
			"connect", client, netns, conn["local"], conn["peer"], conn["cookie"],
			conn["tid"]), (conn["t0"], conn["t1"])),
		tt.Expect("accept of the server blocked before the start", tt.connection_fields(
			"accept", server, netns, acc["local"], acc["peer"], acc["cookie"],
			acc["tid"]), (acc["t0"], acc["t1"])),
		tt.Expect("client's close", tt.connection_fields(
			"close", client, netns, conn["local"], conn["peer"], conn["cookie"],
			conn["tid"]), (client_close["t0"], client_close["t1"])),
		tt.Expect("server's close", tt.connection_fields(
			"close", server, netns, acc["local"], acc["peer"], acc["cookie"],
			acc["tid"]), (server_close["t0"], server_close["t1"])),
	]

	# Connections from before the start: the snapshot names the owning
	# process; which thread and cgroup is the daemon's choice, so those two
	# are compared with the snapshot record by check_lifecycles() instead.
	seeded_ends = [
		("client end", seed_client, seed_conn, seed_client_close),
		("server end", seed_server, seed_acc, seed_server_close),
	]
	snapshot = {r.get("cookie"): r for r in subscriber.snapshot}
	tt.log("snapshot: %s" % list(snapshot.values()))
	for label, agent, end, closing in seeded_ends:
		fields = tt.connection_fields("snapshot", agent, netns, end["local"], end["peer"],
					      end["cookie"], end["tid"])
		del fields["tid"]
		fields.pop("cgroup", None)
		record = snapshot.pop(end["cookie"], None)
		if record is None:
			checker.fail("snapshot has the %s of the connection from before the start"
				     % label, tt.describe(fields), "no snapshot record with cookie %d"
				     % end["cookie"])
		else:
			checker.record("snapshot of the %s from before the start" % label, record,
				       fields)
		fields["type"] = "close"
		expects.append(tt.Expect("close of the %s from before the start" % label, fields,
					 (closing["t0"], closing["t1"])))
	checker.equal("snapshot records for other connections", [], list(snapshot.values()))
	checker.equal("snapshot_end count", len(subscriber.snapshot),
		      subscriber.snapshot_end.get("count"))

	if not subscriber.wait_for(lambda records: tt.keys_present(records, expects)):
		tt.log("not every expected record arrived within %d s" % tt.RECORD_WAIT_S)
	time.sleep(tt.SETTLE_S)
	records = tt.check_stream(checker, subscriber, netns)
	tt.check_expected(checker, records, expects)
	seeded = {r.get("cookie"): r for r in subscriber.snapshot}
	checker.equal("connections left open", set(), tt.check_lifecycles(checker, records, seeded))
	client_accepts = [r for r in records
			  if r.get("type") == "accept" and r.get("pid") == client.pid]
	checker.equal("accept records attributed to the client", [], client_accepts)
	session.stop_daemon(daemon)


if __name__ == "__main__":
	tt.run(main)
