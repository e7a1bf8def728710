# SPDX-License-Identifier: LGPL-2.1-or-later
"""Sockets that were busy before tcptapd started.

Usage: test-e2e-accept-before-start.py PATH-TO-TCPTAPD

Before tcptapd starts, the test sets up:
- a server blocked in accept(). A client connects after tcptapd is ready,
  and the accept record must name the server's pid, tid and comm, never the
  client's.
- established connections. They must appear in the snapshot with their
  owning processes, and their later closes must carry that attribution.
- a connection waiting in a full accept queue, accepted after the start, and
  a connect() still in SYN-SENT behind it that completes after the start:
  the accept and connect records must name the accepting and the connecting
  process.
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
SEEDED_CONNECTIONS = 20
# The SYN-SENT connect behind the full queue retries its SYN after 1, 3, 7 and
# 15 s, so it completes at one of those times once the queue has room.
RETRY_WAIT_S = 20


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


class BeforeStart:
	def __init__(self, session, netns):
		self.session = session
		self.netns = netns
		self.checker = session.checker
		self.cgroup = session.cgroup()
		self.expects = []
		self.snapshot_expects = {}	# cookie -> (label, fields)
		self.client_pids = set()

	def agent(self, comm, client):
		uid = tt.NOBODY_UID if client else None
		agent = self.session.agent(self.netns, comm, uid=uid, cgroup=self.cgroup)
		if client:
			self.client_pids.add(agent.pid)
		return agent

	def expect(self, label, record_type, agent, end, window, peer=None):
		fields = tt.connection_fields(record_type, agent, self.netns, end["local"],
					      peer or end["peer"], end["cookie"], end["tid"])
		self.expects.append(tt.Expect(label, fields, window))

	def expect_seeded(self, label, agent, end, closing):
		"""A connection end from before the start: a snapshot record naming
		its owning process, then a close copying it. Which thread the
		snapshot names is the daemon's choice, so check_lifecycles()
		compares the tid with the snapshot instead."""
		fields = tt.connection_fields("snapshot", agent, self.netns, end["local"], end["peer"],
					      end["cookie"], end["tid"])
		del fields["tid"]
		self.snapshot_expects[end["cookie"]] = (label, dict(fields))
		fields["type"] = "close"
		self.expects.append(tt.Expect("%s: close" % label, fields,
					      (closing["t0"], closing["t1"])))

	# Before the start.

	def open_established(self):
		tt.log("== %d connections established before the start" % SEEDED_CONNECTIONS)
		self.seed_server = self.agent("tt-seedsrv", client=False)
		self.seed_client = self.agent("tt-seedcli", client=True)
		listener = self.seed_server.call("listen", family="inet", addr="127.0.0.1")
		self.seeded = []
		for _ in range(SEEDED_CONNECTIONS):
			conn = self.seed_client.call("connect", family="inet", addr="127.0.0.1",
						     port=listener["port"])
			if conn["error"] is not None:
				raise RuntimeError("connect before the start failed with %s"
						   % conn["error"])
			acc = self.seed_server.call("accept", sock=listener["sock"])
			self.seeded.append((conn, acc))
		self.seed_server.call("close", sock=listener["sock"])

	def block_in_accept(self):
		tt.log("== server blocked in accept() before the start")
		self.server = self.agent("tt-srvpre", client=False)
		self.client = self.agent("tt-clipre", client=True)
		self.listener = self.server.call("listen", family="inet", addr="127.0.0.1")
		self.server.send("accept", sock=self.listener["sock"])
		wait_blocked_in_accept(self.checker, self.server)

	def fill_queue(self):
		tt.log("== full accept queue and a connect in SYN-SENT before the start")
		self.queue_server = self.agent("tt-srvq", client=False)
		self.queued_client = self.agent("tt-cliq", client=True)
		self.retry_client = self.agent("tt-cliretry", client=True)
		self.queue_listener = self.queue_server.call("listen", family="inet",
							     addr="127.0.0.1", backlog=0)
		port = self.queue_listener["port"]
		self.queued = self.queued_client.call("connect", family="inet", addr="127.0.0.1",
						      port=port)
		if self.queued["error"] is not None:
			raise RuntimeError("connect to the queue failed with %s" % self.queued["error"])
		self.retrying = self.retry_client.call("connect", family="inet", addr="127.0.0.1",
						       port=port, nonblock=True)
		self.checker.equal("connect() behind the full queue", "EINPROGRESS",
				   self.retrying["error"])

	# After the start.

	def finish_blocked_accept(self):
		conn = self.client.call("connect", family="inet", addr="127.0.0.1",
					port=self.listener["port"])
		if conn["error"] is not None:
			raise RuntimeError("connect after the start failed with %s" % conn["error"])
		acc = self.server.reply()
		self.checker.check(acc["t0"] < conn["t0"],
				   "accept() was called before the client connected",
				   "accept t0 < connect t0 = %d" % conn["t0"], acc["t0"])
		client_close = self.client.call("close", sock=conn["sock"])
		self.server.call("recv", sock=acc["sock"])
		server_close = self.server.call("close", sock=acc["sock"])
		self.server.call("close", sock=self.listener["sock"])

		label = "accept() blocked before the start"
		self.expect("%s: client's connect" % label, "connect", self.client, conn,
			    (conn["t0"], conn["t1"]))
		self.expect("%s: server's accept" % label, "accept", self.server, acc,
			    (acc["t0"], acc["t1"]))
		self.expect("%s: client's close" % label, "close", self.client, conn,
			    (client_close["t0"], client_close["t1"]))
		self.expect("%s: server's close" % label, "close", self.server, acc,
			    (server_close["t0"], server_close["t1"]))

	def drain_queue(self):
		label = "queued before the start"
		server, listener = self.queue_server, self.queue_listener
		queued_acc = server.call("accept", sock=listener["sock"])
		outcome = self.retry_client.call("wait", sock=self.retrying["sock"],
						 poll_s=RETRY_WAIT_S, timeout_s=RETRY_WAIT_S + 5)
		self.checker.equal("%s: SO_ERROR of the retried connect" % label, None,
				   outcome["error"])
		retry_acc = server.call("accept", sock=listener["sock"])

		queued_client_close = self.queued_client.call("close", sock=self.queued["sock"])
		server.call("recv", sock=queued_acc["sock"])
		queued_server_close = server.call("close", sock=queued_acc["sock"])
		retry_client_close = self.retry_client.call("close", sock=self.retrying["sock"])
		server.call("recv", sock=retry_acc["sock"])
		retry_server_close = server.call("close", sock=retry_acc["sock"])
		server.call("close", sock=listener["sock"])

		# The queued connection's client end existed before the start, its
		# server end had no process until accept() returned it.
		self.expect_seeded("%s: client end" % label, self.queued_client, self.queued,
				   queued_client_close)
		self.expect("%s: accept" % label, "accept", server, queued_acc,
			    (queued_acc["t0"], queued_acc["t1"]))
		self.expect("%s: server's close" % label, "close", server, queued_acc,
			    (queued_server_close["t0"], queued_server_close["t1"]))

		label = "connect() in SYN-SENT before the start"
		peer = ["127.0.0.1", listener["port"]]
		self.expect("%s: connect" % label, "connect", self.retry_client, self.retrying,
			    (queued_acc["t0"], outcome["t1"]), peer=peer)
		self.expect("%s: accept" % label, "accept", server, retry_acc,
			    (retry_acc["t0"], retry_acc["t1"]))
		self.expect("%s: client's close" % label, "close", self.retry_client, self.retrying,
			    (retry_client_close["t0"], retry_client_close["t1"]), peer=peer)
		self.expect("%s: server's close" % label, "close", server, retry_acc,
			    (retry_server_close["t0"], retry_server_close["t1"]))

	def close_established(self):
		label = "established before the start"
		for index, (conn, acc) in enumerate(self.seeded):
			client_close = self.seed_client.call("close", sock=conn["sock"])
			self.seed_server.call("recv", sock=acc["sock"])
			server_close = self.seed_server.call("close", sock=acc["sock"])
			self.expect_seeded("%s #%d: client end" % (label, index), self.seed_client,
					   conn, client_close)
			self.expect_seeded("%s #%d: server end" % (label, index), self.seed_server,
					   acc, server_close)

	def check_snapshot(self, subscriber):
		snapshot = {}
		for record in subscriber.snapshot:
			snapshot.setdefault(record.get("cookie"), []).append(record)
		for cookie, (label, fields) in self.snapshot_expects.items():
			found = snapshot.pop(cookie, [])
			if len(found) != 1:
				self.checker.fail("%s: one snapshot record" % label, tt.describe(fields),
						  "%d snapshot records with cookie %d: %s"
						  % (len(found), cookie, tt.describe(found)))
			else:
				self.checker.record("%s: snapshot" % label, found[0], fields)
		self.checker.equal("snapshot records of other sockets", [], list(snapshot.values()))
		self.checker.equal("snapshot_end count", len(subscriber.snapshot),
				   subscriber.snapshot_end.get("count"))


def main(session, daemon_path, cpus):
	checker = session.checker
	netns = session.netns()
	test = BeforeStart(session, netns)
	test.open_established()
	test.fill_queue()
	test.block_in_accept()

	daemon = session.start_daemon(daemon_path, netns)
	subscriber = session.subscribe(daemon, netns)
	tt.log("snapshot of %d records" % len(subscriber.snapshot))

	test.finish_blocked_accept()
	test.drain_queue()
	test.close_established()
	test.check_snapshot(subscriber)

	expects = test.expects
	if not subscriber.wait_for(lambda records: tt.keys_present(records, expects)):
		tt.log("not every expected record arrived within %d s" % tt.RECORD_WAIT_S)
	time.sleep(tt.SETTLE_S)
	records = tt.check_stream(checker, subscriber, netns)
	tt.check_expected(checker, records, expects)
	seeded = {r.get("cookie"): r for r in subscriber.snapshot}
	checker.equal("connections left open", set(), tt.check_lifecycles(checker, records, seeded))
	client_accepts = [r for r in records
			  if r.get("type") == "accept" and r.get("pid") in test.client_pids]
	checker.equal("accept records attributed to a client", [], client_accepts)
	session.stop_daemon(daemon)


if __name__ == "__main__":
	tt.run(main)
