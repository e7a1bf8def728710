# SPDX-License-Identifier: LGPL-2.1-or-later
"""Exact records for loopback connections in a private network namespace.

Usage: test-e2e-connections.py PATH-TO-TCPTAPD

Named processes connect, accept, exchange a byte and close over IPv4, IPv6
and IPv4-mapped IPv6; others get refused, time out after connect() returned
EINPROGRESS, or close a connect still in progress. Every record must match
the process, thread, uid, cgroup, addresses, ports, cookie and time window
the processes observed themselves, and nothing else may appear.
"""

import time

import tt

# Backlog 0 lets the accept queue hold one connection; SYNs beyond it are
# dropped, so a connect with TCP_SYNCNT=1 gives up after the initial SYN and
# one retransmission: about 1 s + 2 s.
SYNCNT_TIMEOUT_MIN_NS = 2 * 10**9
ACCEPT_DELAY_S = 1.0
# A third subscriber filters on this comm, the client of the first scenario.
FILTERED_COMM = "tt-cli4"


class Scenarios:
	def __init__(self, session, netns):
		self.session = session
		self.netns = netns
		self.cgroup = session.cgroup()
		self.checker = session.checker
		self.expects = []
		self.client_pids = set()

	def agent(self, comm, client):
		"""Start an agent. Clients run as uid 65534 and servers as root, so
		the uid tells them apart too."""
		uid = tt.NOBODY_UID if client else None
		agent = self.session.agent(self.netns, comm, uid=uid, cgroup=self.cgroup)
		if client:
			self.client_pids.add(agent.pid)
		return agent

	def expect(self, name, record_type, agent, local, peer, cookie, tid, window, **extra):
		fields = tt.connection_fields(record_type, agent, self.netns, local, peer, cookie, tid)
		fields.update(extra)
		self.expects.append(tt.Expect(name, fields, window))
		return fields

	def exchange(self, label, suffix, listen, connect, closer="client", accept_delay_s=0.0,
		     thread=False, accept_args=None, family="inet"):
		"""Connect, accept, send a byte each way and close. closer is
		"client" or "server" (that end closes first) or "server-reset" (the
		server aborts with a RST, so the client's socket closes in the
		server's system call). listen, connect and accept_args are the
		agents' request arguments."""
		tt.log("== %s" % label)
		server = self.agent("tt-srv" + suffix, client=False)
		client = self.agent("tt-cli" + suffix, client=True)
		listener = server.call("listen", **listen)
		conn = client.call("connect", port=listener["port"], thread=thread, **connect)
		if conn["error"] is not None:
			raise RuntimeError("%s: connect failed with %s" % (label, conn["error"]))
		if accept_delay_s:
			time.sleep(accept_delay_s)
		acc = server.call("accept", sock=listener["sock"], **(accept_args or {}))

		client.call("send", sock=conn["sock"], data="x")
		self.checker.equal("%s: byte from client" % label, "x",
				   server.call("recv", sock=acc["sock"])["data"])
		server.call("send", sock=acc["sock"], data="y")
		self.checker.equal("%s: byte from server" % label, "y",
				   client.call("recv", sock=conn["sock"])["data"])

		if closer == "client":
			client_close = client.call("close", sock=conn["sock"])
			self.checker.equal("%s: server reads EOF" % label, "",
					   server.call("recv", sock=acc["sock"])["data"])
			server_close = server.call("close", sock=acc["sock"])
		elif closer == "server":
			server_close = server.call("close", sock=acc["sock"])
			self.checker.equal("%s: client reads EOF" % label, "",
					   client.call("recv", sock=conn["sock"])["data"])
			client_close = client.call("close", sock=conn["sock"])
		else:
			server_close = server.call("close", sock=acc["sock"], linger0=True)
			# The RST closed the client's socket inside the server's close().
			client_close = server_close
			client.call("close", sock=conn["sock"])
		server.call("close", sock=listener["sock"])

		# The test's own view must mirror before it can judge the daemon's.
		self.checker.equal("%s: client's local end is the server's peer" % label,
				   conn["local"], acc["peer"])
		self.checker.equal("%s: client's peer is the server's local end" % label,
				   conn["peer"], acc["local"])
		if thread:
			self.checker.check(conn["tid"] != client.pid, "%s: connect ran in a thread" % label,
					   "tid != pid %d" % client.pid, conn["tid"])
		if (accept_args or {}).get("thread"):
			self.checker.check(acc["tid"] != server.pid, "%s: accept ran in a thread" % label,
					   "tid != pid %d" % server.pid, acc["tid"])

		window = (conn["t0"], conn["t1"])
		intro = self.expect("%s: client's connect" % label, "connect", client, conn["local"],
				    conn["peer"], conn["cookie"], conn["tid"], window)
		self.checker.equal("%s: reported family" % label, family, intro["family"])
		self.expect("%s: server's accept" % label, "accept", server, acc["local"], acc["peer"],
			    acc["cookie"], acc["tid"], (acc["t0"], acc["t1"]))
		self.expect("%s: client's close" % label, "close", client, conn["local"], conn["peer"],
			    conn["cookie"], conn["tid"], (client_close["t0"], client_close["t1"]))
		self.expect("%s: server's close" % label, "close", server, acc["local"], acc["peer"],
			    acc["cookie"], acc["tid"], (server_close["t0"], server_close["t1"]))
		if accept_delay_s:
			tt.log("%s: accept() returned %.3f s after connect() did"
			       % (label, (acc["t1"] - conn["t1"]) / 1e9))

	def closed_before_accept(self, label, suffix, reset):
		"""The client closes (with a FIN, or with a RST if reset) while its
		connection still waits in the accept queue, and the server accepts
		it afterwards. The accept record must still come first, attributed to
		the server. After a RST the connection is already closed when
		accept() returns, so its close belongs to that same accept() call."""
		tt.log("== %s" % label)
		server = self.agent("tt-srv" + suffix, client=False)
		client = self.agent("tt-cli" + suffix, client=True)
		listener = server.call("listen", family="inet", addr="127.0.0.1")
		conn = client.call("connect", family="inet", addr="127.0.0.1", port=listener["port"])
		if conn["error"] is not None:
			raise RuntimeError("%s: connect failed with %s" % (label, conn["error"]))
		client_close = client.call("close", sock=conn["sock"], linger0=reset)
		time.sleep(0.2)
		acc = server.call("accept", sock=listener["sock"])
		if reset:
			server_window = (acc["t0"], acc["t1"])
			server.call("close", sock=acc["sock"])
		else:
			self.checker.equal("%s: server reads EOF" % label, "",
					   server.call("recv", sock=acc["sock"])["data"])
			server_close = server.call("close", sock=acc["sock"])
			server_window = (server_close["t0"], server_close["t1"])
			self.checker.equal("%s: client's local end is the server's peer" % label,
					   conn["local"], acc["peer"])
		server.call("close", sock=listener["sock"])

		server_local = [listener["addr"], listener["port"]]
		self.expect("%s: client's connect" % label, "connect", client, conn["local"],
			    conn["peer"], conn["cookie"], conn["tid"], (conn["t0"], conn["t1"]))
		self.expect("%s: client's close" % label, "close", client, conn["local"], conn["peer"],
			    conn["cookie"], conn["tid"], (client_close["t0"], client_close["t1"]))
		self.expect("%s: server's accept" % label, "accept", server, server_local,
			    conn["local"], acc["cookie"], acc["tid"], (acc["t0"], acc["t1"]))
		self.expect("%s: server's close" % label, "close", server, server_local,
			    conn["local"], acc["cookie"], acc["tid"], server_window)

	def refused(self, label, suffix, family, loopback):
		"""A blocking connect to a bound port without a listener gets a RST."""
		tt.log("== %s" % label)
		client = self.agent("tt-ref" + suffix, client=True)
		closed_port = client.call("bind", family=family, addr=loopback)
		conn = client.call("connect", family=family, addr=loopback, port=closed_port["port"])
		self.checker.equal("%s: connect() result" % label, "ECONNREFUSED", conn["error"])
		self.checker.check(conn["local"][1] != 0, "%s: connect used a source port" % label,
				   "port != 0", conn["local"][1])
		# After the RST the socket's own address reads as the wildcard, so
		# the expected source address is the loopback address the SYN
		# really left from.
		self.expect("%s: connect_failed" % label, "connect_failed", client,
			    [loopback, conn["local"][1]], [loopback, closed_port["port"]],
			    conn["cookie"], conn["tid"], (conn["t0"], conn["t1"]), error="ECONNREFUSED")
		client.call("close", sock=conn["sock"])
		client.call("close", sock=closed_port["sock"])

	def full_backlog(self):
		"""Fill a backlog-0 listener with one connection, then (a) let a
		non-blocking connect with TCP_SYNCNT=1 time out and (b) close a
		non-blocking connect that is still in SYN-SENT."""
		label = "ipv4 full backlog"
		tt.log("== %s" % label)
		server = self.agent("tt-srvfull", client=False)
		filler = self.agent("tt-fill", client=True)
		late = self.agent("tt-late", client=True)
		interrupted = self.agent("tt-intr", client=True)
		listener = server.call("listen", family="inet", addr="127.0.0.1", backlog=0)
		port = listener["port"]

		fill = filler.call("connect", family="inet", addr="127.0.0.1", port=port)
		if fill["error"] is not None:
			raise RuntimeError("%s: filler connect failed with %s" % (label, fill["error"]))

		pending = late.call("connect", family="inet", addr="127.0.0.1", port=port,
				    nonblock=True, syncnt=1)
		self.checker.equal("%s: non-blocking connect() result" % label, "EINPROGRESS",
				   pending["error"])
		aborted = interrupted.call("connect", family="inet", addr="127.0.0.1", port=port,
					   nonblock=True)
		self.checker.equal("%s: second non-blocking connect() result" % label, "EINPROGRESS",
				   aborted["error"])
		time.sleep(0.3)
		abort_close = interrupted.call("close", sock=aborted["sock"])

		outcome = late.call("wait", sock=pending["sock"], poll_s=10, timeout_s=15)
		self.checker.equal("%s: SO_ERROR after SYN retries" % label, "ETIMEDOUT", outcome["error"])
		self.checker.check(outcome["t1"] - pending["t1"] >= SYNCNT_TIMEOUT_MIN_NS,
				   "%s: failure came after connect() returned" % label,
				   ">= %d ns later" % SYNCNT_TIMEOUT_MIN_NS, outcome["t1"] - pending["t1"])
		late.call("close", sock=pending["sock"])

		fill_close = filler.call("close", sock=fill["sock"])
		# The filler's server end was never accepted: closing the listener
		# aborts it, and tcptapd must report nothing for it.
		server.call("close", sock=listener["sock"])

		self.expect("%s: filler's connect" % label, "connect", filler, fill["local"],
			    fill["peer"], fill["cookie"], fill["tid"], (fill["t0"], fill["t1"]))
		self.expect("%s: filler's close" % label, "close", filler, fill["local"], fill["peer"],
			    fill["cookie"], fill["tid"], (fill_close["t0"], fill_close["t1"]))
		peer = ["127.0.0.1", port]
		self.expect("%s: connect_failed after SYN retries" % label, "connect_failed", late,
			    pending["local"], peer, pending["cookie"], pending["tid"],
			    (pending["t1"] + SYNCNT_TIMEOUT_MIN_NS, outcome["t1"]), error="ETIMEDOUT")
		self.expect("%s: connect_failed of a connect closed in SYN-SENT" % label,
			    "connect_failed", interrupted, aborted["local"], peer, aborted["cookie"],
			    aborted["tid"], (abort_close["t0"], abort_close["t1"]), error=tt.AnyErrno())


def run_scenarios(scenarios):
	v4_listen = {"family": "inet", "addr": "127.0.0.1"}
	v4_connect = {"family": "inet", "addr": "127.0.0.1"}
	v6_listen = {"family": "inet6", "addr": "::1"}
	v6_connect = {"family": "inet6", "addr": "::1"}

	scenarios.exchange("ipv4, client closes first", "4", v4_listen, v4_connect, closer="client")
	scenarios.exchange("ipv4, server closes first", "4s", v4_listen, v4_connect, closer="server")
	scenarios.exchange("ipv6, client closes first", "6", v6_listen, v6_connect, closer="client",
			   family="inet6")
	scenarios.exchange("ipv6, server closes first", "6s", v6_listen, v6_connect, closer="server",
			   family="inet6")
	scenarios.exchange("ipv4, accept 1 s after the handshake", "4d", v4_listen, v4_connect,
			   accept_delay_s=ACCEPT_DELAY_S)
	scenarios.exchange("ipv4, connect from a second thread", "4t", v4_listen, v4_connect,
			   thread=True)
	scenarios.exchange("ipv4, accept from a second thread", "4at", v4_listen, v4_connect,
			   accept_args={"thread": True})
	scenarios.exchange("ipv6, accept system call", "6a", v6_listen, v6_connect,
			   accept_args={"plain": True}, family="inet6")
	scenarios.exchange("ipv4, server resets", "4x", v4_listen, v4_connect, closer="server-reset")
	# Both ends are AF_INET6 sockets carrying IPv4-mapped addresses.
	scenarios.exchange("ipv4-mapped ipv6", "m", {"family": "inet6", "addr": "::", "v6only": False},
			   {"family": "inet6", "addr": "::ffff:127.0.0.1", "v6only": False})
	scenarios.closed_before_accept("ipv4, client closes before accept", "4q", reset=False)
	scenarios.closed_before_accept("ipv4, client resets before accept", "4r", reset=True)
	scenarios.refused("ipv4 refused", "4", "inet", "127.0.0.1")
	scenarios.refused("ipv6 refused", "6", "inet6", "::1")
	scenarios.full_backlog()


def check_records(session, subscriber, scenarios):
	checker = session.checker
	expects = scenarios.expects
	if not subscriber.wait_for(lambda records: tt.keys_present(records, expects)):
		tt.log("not every expected record arrived within %d s" % tt.RECORD_WAIT_S)
	time.sleep(tt.SETTLE_S)
	records = tt.check_stream(checker, subscriber, scenarios.netns)
	tt.log("received %d live records" % len(records))
	tt.check_expected(checker, records, expects)
	open_cookies = tt.check_lifecycles(checker, records)
	checker.equal("connections still open after every socket was closed", set(), open_cookies)

	client_accepts = [r for r in records
			  if r.get("type") == "accept" and r.get("pid") in scenarios.client_pids]
	checker.equal("accept records attributed to a client process", [], client_accepts)
	unattributed = [r for r in tt.event_records(records) if not r.get("pid")]
	checker.equal("records without a process", [], unattributed)


def check_other_subscribers(checker, subscriber, twin, by_comm, comm):
	"""A second client with the same filter receives the same records, and
	a client that also filters by comm receives exactly that subset, with
	the same seq: seq numbers the merged stream, not one client's view."""
	records = subscriber.records()
	twin_records = twin.records()
	checker.equal("records of a second subscriber with the same filter (count)", len(records),
		      len(twin_records))
	differing = [(a, b) for a, b in zip(records, twin_records) if a != b]
	checker.equal("records that differ between two subscribers with the same filter", [],
		      differing[:5])
	subset = [r for r in tt.event_records(records) if r.get("comm") == comm]
	received = tt.event_records(by_comm.records())
	checker.check(len(subset) > 0, "records of comm '%s' in the stream" % comm, "> 0", 0)
	checker.equal("records of a subscriber filtered by comm '%s'" % comm, subset, received)


def main(session, daemon_path, cpus):
	netns = session.netns()
	daemon = session.start_daemon(daemon_path, netns)
	subscriber = session.subscribe(daemon, netns)
	twin = session.subscribe(daemon, netns)
	by_comm = session.subscribe(daemon, netns, comm=FILTERED_COMM)
	session.checker.equal("hello's backend", tt.BACKEND, subscriber.hello.get("backend"))
	session.checker.equal("snapshot of a new namespace", [], subscriber.snapshot)

	scenarios = Scenarios(session, netns)
	run_scenarios(scenarios)
	check_records(session, subscriber, scenarios)
	check_other_subscribers(session.checker, subscriber, twin, by_comm, FILTERED_COMM)
	session.stop_daemon(daemon)


if __name__ == "__main__":
	tt.run(main)
