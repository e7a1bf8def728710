# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run the end-to-end tests under each backend and compare the records they produce.

Usage: guest-backends.py TCPTAPD E2E_DIR OUT_DIR BACKEND...

For each BACKEND, in the order given, run the end-to-end tests of E2E_DIR (tests/e2e) against
TCPTAPD started with --backend BACKEND: every test makes its own checks, exactly as it does on
the host with the tracepoint backend. The records of the tests listed in COMPARED_TESTS are
kept and compared across backends, the last BACKEND being the reference.

The comparison works per connection, because that is where the order of records is defined.
Records belong to one connection when they name the same two endpoints (address and port),
in either direction. Each connection becomes the list of its records in stream order. Type,
family, addresses, comm, uid, error and late are compared field by field. Each port is replaced
by the endpoint it belongs to: A is the first record's source, B its destination.
Every backend must produce the same set of such connections. Fields that differ between two
runs by construction are left out: seq, ts_ns, pid, tid, cookie, cgroup, netns, cpu and the
port numbers themselves.

Each test's full output goes to OUT_DIR/<backend>-<test>.log, of which only a summary and the
first failures are printed. The compared records are written to
OUT_DIR/records-<backend>-<test>.json, and a failed test keeps its daemon's stderr in
OUT_DIR/<backend>-<test>/. Ends with "backends: N passed, M failed"; exits 1 if anything
failed.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import sys

# (name, file, backends it runs under or None for all). The kernel suite on the host already
# runs the migrate test with the tracepoint backend, and it takes about a minute under TCG.
TESTS = [
	("connections", "test-e2e-connections.py", None),
	("accept-before-start", "test-e2e-accept-before-start.py", None),
	("stall", "test-e2e-stall.py", None),
	("migrate", "test-e2e-migrate.py", ("kprobe", "fentry")),
]
COMPARED_TESTS = ("connections", "accept-before-start")
COMPARED_FIELDS = ("type", "comm", "uid", "family", "saddr", "daddr", "error", "late")
MIN_CPUS = 2			# the stall and migrate tests pin load to two CPUs
READY_TIMEOUT_S = 90		# BPF verification under TCG takes far longer than on hardware
MAX_DIFFS_SHOWN = 10
MAX_FAILURE_LINES_SHOWN = 40
STATS_TIMEOUT_S = 10
# Counters of the stats reply shown for every daemon a test stops.
STATS_SHOWN = ("events", "lost", "late", "dropped_duplicate", "dropped_orphan_close")


def load_module(name, path):
	spec = importlib.util.spec_from_file_location(name, path)
	module = importlib.util.module_from_spec(spec)
	spec.loader.exec_module(module)
	return module


def connection_signatures(snapshot, live, event_types):
	"""Reduce a test's records to one signature per connection (see the module docstring),
	returned sorted so that two runs compare as multisets. Snapshot records come first in
	their connection, because the snapshot precedes the live records, and sorted by comm,
	because the daemon lists its table in no defined order."""
	connections = {}
	ordered = sorted(snapshot, key=lambda r: (r.get("comm", ""), r.get("uid", 0)))
	for record in ordered + [r for r in live if r.get("type") in event_types]:
		source = (record.get("saddr"), record.get("sport"))
		destination = (record.get("daddr"), record.get("dport"))
		key = frozenset((source, destination))
		connections.setdefault(key, []).append(record)
	signatures = []
	for records in connections.values():
		first = records[0]
		names = {(first.get("saddr"), first.get("sport")): "A",
			 (first.get("daddr"), first.get("dport")): "B"}
		rows = []
		for record in records:
			row = [record.get(key) for key in COMPARED_FIELDS]
			row.append(names.get((record.get("saddr"), record.get("sport")), "?"))
			row.append(names.get((record.get("daddr"), record.get("dport")), "?"))
			rows.append(tuple(row))
		signatures.append(tuple(rows))
	return sorted(signatures, key=repr)


def describe_signature(signature):
	fields = COMPARED_FIELDS + ("sport", "dport")
	return json.dumps([{k: v for k, v in zip(fields, row) if v is not None}
			   for row in signature])


def cookie_summary(records, event_types):
	"""Count, by record type, how many records carry cookie 0."""
	summary = {}
	for record in records:
		kind = record.get("type")
		if kind not in event_types and kind != "snapshot":
			continue
		zero, total = summary.get(kind, (0, 0))
		summary[kind] = (zero + (record.get("cookie") == 0), total + 1)
	return ", ".join("%s %d/%d" % (kind, zero, total)
			 for kind, (zero, total) in sorted(summary.items()))


def daemon_stats(socket_path):
	"""Return tcptapd's stats reply as a dict, or {"error": reason}."""
	try:
		with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
			sock.settimeout(STATS_TIMEOUT_S)
			sock.connect(socket_path)
			sock.sendall(b'{"command": "stats"}\n')
			data = b""
			while True:
				chunk = sock.recv(65536)
				if not chunk:
					break
				data += chunk
	except OSError as e:
		return {"error": str(e)}
	for line in data.splitlines():
		record = json.loads(line)
		if record.get("type") == "stats":
			return record
	return {"error": "no stats record in %r" % data[:200]}


def show_excerpt(log_path):
	"""Print the lines of a test's output that summarize it: FATAL lines, the daemons'
	counters, the check totals, and the first MAX_FAILURE_LINES_SHOWN lines of failures."""
	failure_lines = 0
	in_failure = False
	with open(log_path, errors="replace") as f:
		for line in f:
			line = line.rstrip("\n")
			if line.startswith("FAIL"):
				in_failure = True
			elif not line.startswith(" "):
				in_failure = False
			if in_failure:
				failure_lines += 1
				if failure_lines <= MAX_FAILURE_LINES_SHOWN:
					print(line)
			elif (line.startswith(("FATAL", "stats of ")) or
			      line.endswith("failed") and "checks passed" in line):
				print(line)
	if failure_lines > MAX_FAILURE_LINES_SHOWN:
		print("... %d more lines of failures in %s" % (
			failure_lines - MAX_FAILURE_LINES_SHOWN, log_path))
	sys.stdout.flush()


def multiset_difference(left, right):
	"""Return the items of left that right lacks, counting repeats."""
	remaining = list(right)
	difference = []
	for item in left:
		if item in remaining:
			remaining.remove(item)
		else:
			difference.append(item)
	return difference


class Runner:
	def __init__(self, tt, daemon_path, e2e_dir, out_dir, cpus):
		self.tt = tt
		self.daemon_path = daemon_path
		self.e2e_dir = e2e_dir
		self.out_dir = out_dir
		self.cpus = cpus
		self.modules = {name: load_module("e2e_" + name.replace("-", "_"),
						  os.path.join(e2e_dir, path)) for name, path, _ in TESTS}
		self.records = {}	# (backend, test) -> normalized rows
		self.results = []	# (label, passed)

	def session_class(self):
		"""Return a tt.Session subclass that records the subscribers and logs the daemon's
		counters before it stops."""
		tt = self.tt

		class RecordingSession(tt.Session):
			"""A tt.Session that keeps every subscriber it hands out and logs each
			daemon's counters before it stops the daemon."""

			def __init__(self):
				super().__init__()
				self.subscribers = []

			def subscribe(self, daemon, netns, **filters):
				subscriber = super().subscribe(daemon, netns, **filters)
				self.subscribers.append(subscriber)
				return subscriber

			def stop_daemon(self, daemon):
				stats = daemon_stats(daemon.socket_path)
				tt.log("stats of %s before it stops: %s" % (daemon.label, json.dumps(
					{k: stats[k] for k in STATS_SHOWN + ("error",) if k in stats})))
				super().stop_daemon(daemon)

		return RecordingSession

	def run_test(self, backend, name):
		"""Run one end-to-end test with its output in OUT_DIR/<backend>-<test>.log, and show
		its summary, counters and first failures here."""
		tt = self.tt
		label = "%s under --backend %s" % (name, backend)
		log_path = os.path.join(self.out_dir, "%s-%s.log" % (backend, name))
		tt.log("\n==== %s (output in %s) ====" % (label, log_path))
		tt.BACKEND = backend
		session = self.session_class()()
		exit_code = 0

		with open(log_path, "w") as log_file, contextlib.redirect_stdout(log_file):
			try:
				with session:
					self.modules[name].main(session, self.daemon_path, self.cpus)
			except SystemExit as e:
				# tt.fatal() and a test that raised end up here with a non-zero code.
				exit_code = e.code if isinstance(e.code, int) else 1
			ok = session.checker.finish() == 0 and exit_code == 0
		show_excerpt(log_path)
		self.results.append((label, ok))
		if not ok:
			self.keep_logs(session, "%s-%s" % (backend, name))

		if name in COMPARED_TESTS and session.subscribers:
			subscriber = session.subscribers[0]
			live = subscriber.records()
			path = os.path.join(self.out_dir, "records-%s-%s.json" % (backend, name))
			with open(path, "w") as f:
				json.dump({"snapshot": subscriber.snapshot, "live": live}, f, indent=0)
			self.records[(backend, name)] = connection_signatures(
				subscriber.snapshot, live, tt.EVENT_TYPES)
			tt.log("cookie 0 in %s: %s" % (label, cookie_summary(
				subscriber.snapshot + live, tt.EVENT_TYPES) or "no records"))

	def keep_logs(self, session, label):
		"""Copy the daemon logs a failed session kept to the shared folder."""
		if not os.path.isdir(session.workdir):
			return
		target = os.path.join(self.out_dir, label)
		shutil.copytree(session.workdir, target, dirs_exist_ok=True,
				ignore=shutil.ignore_patterns("*.sock"))
		self.tt.log("daemon logs of %s kept in %s" % (label, target))

	def compare(self, reference, backend, name):
		tt = self.tt
		label = "%s records of --backend %s equal --backend %s's" % (name, backend, reference)
		expected = self.records.get((reference, name))
		actual = self.records.get((backend, name))
		if expected is None or actual is None:
			tt.log("FAIL: %s: no records from %s" % (
				label, reference if expected is None else backend))
			self.results.append((label, False))
			return
		missing = multiset_difference(expected, actual)
		extra = multiset_difference(actual, expected)
		if not missing and not extra:
			tt.log("PASS: %s (%d connections)" % (label, len(expected)))
			self.results.append((label, True))
			return
		tt.log("FAIL: %s: %d of %d connections differ, %d connections only under %s"
		       % (label, len(missing), len(expected), len(extra), backend))
		for signature in missing[:MAX_DIFFS_SHOWN]:
			tt.log("  only under %s: %s" % (reference, describe_signature(signature)))
		for signature in extra[:MAX_DIFFS_SHOWN]:
			tt.log("  only under %s: %s" % (backend, describe_signature(signature)))
		self.results.append((label, False))

	def summary(self):
		failed = [label for label, ok in self.results if not ok]
		self.tt.log("\nresults:")
		for label, ok in self.results:
			self.tt.log("  %s: %s" % ("PASS" if ok else "FAIL", label))
		self.tt.log("backends: %d passed, %d failed" % (len(self.results) - len(failed),
								  len(failed)))
		return 1 if failed else 0


def main(argv):
	if len(argv) < 5:
		print(__doc__, file=sys.stderr)
		return 2
	daemon_path, e2e_dir, out_dir, backends = argv[1], argv[2], argv[3], argv[4:]
	sys.path.insert(0, e2e_dir)
	import tt

	tt.READY_TIMEOUT_S = READY_TIMEOUT_S
	cpus = tt.require_environment(MIN_CPUS)
	runner = Runner(tt, daemon_path, e2e_dir, out_dir, cpus)
	for backend in backends:
		for name, _, only in TESTS:
			if only is None or backend in only:
				runner.run_test(backend, name)
	reference = backends[-1]
	for backend in backends[:-1]:
		for name in COMPARED_TESTS:
			runner.compare(reference, backend, name)
	return runner.summary()


if __name__ == "__main__":
	sys.exit(main(sys.argv))
