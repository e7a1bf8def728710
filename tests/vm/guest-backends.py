# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run the end-to-end tests under each backend and compare the records they produce.

Usage: guest-backends.py TCPTAPD E2E_DIR OUT_DIR BACKEND...

For each BACKEND, in the order given, run the end-to-end tests of E2E_DIR (tests/e2e) against
TCPTAPD started with --backend BACKEND: every test makes its own checks, exactly as it does on
the host with the tracepoint backend. The records of the tests listed in COMPARED_TESTS are
kept and compared across backends, the last BACKEND being the reference, field by field:
type, family, addresses, comm, uid, error, late, and which ports are equal, in stream order.
Fields that differ between two runs by construction are left out: seq, ts_ns, pid, tid,
cookie, cgroup, netns, cpu and the port numbers themselves.

A failed test keeps its daemon's stderr in OUT_DIR/<backend>-<test>/. Prints one line per
test and backend, then "backends: N passed, M failed"; exits 1 if anything failed.
"""

import importlib.util
import json
import os
import shutil
import sys

TESTS = [
	("connections", "test-e2e-connections.py"),
	("accept-before-start", "test-e2e-accept-before-start.py"),
	("stall", "test-e2e-stall.py"),
]
COMPARED_TESTS = ("connections", "accept-before-start")
COMPARED_FIELDS = ("type", "family", "saddr", "daddr", "comm", "uid", "error", "late")
PORT_FIELDS = ("sport", "dport")
MIN_CPUS = 2			# the stall test pins load to two CPUs
READY_TIMEOUT_S = 90		# BPF verification under TCG takes far longer than on hardware
MAX_DIFFS_SHOWN = 10


def load_module(name, path):
	spec = importlib.util.spec_from_file_location(name, path)
	module = importlib.util.module_from_spec(spec)
	spec.loader.exec_module(module)
	return module


def normalize(snapshot, live, event_types):
	"""Reduce a test's records to the fields compared across backends. Port numbers become
	names (P1, P2, ...) in order of first appearance, so equal ports stay equal. Snapshot
	records are sorted by comm first: the daemon lists its table in no defined order."""
	ports = {}
	rows = []
	ordered = sorted(snapshot, key=lambda r: (r.get("comm", ""), r.get("type", "")))
	ordered += [r for r in live if r.get("type") in event_types]
	for record in ordered:
		row = {key: record.get(key) for key in COMPARED_FIELDS}
		for key in PORT_FIELDS:
			port = record.get(key)
			ports.setdefault(port, "P%d" % (len(ports) + 1))
			row[key] = ports[port]
		rows.append(row)
	return rows


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


class Runner:
	def __init__(self, tt, daemon_path, e2e_dir, out_dir, cpus):
		self.tt = tt
		self.daemon_path = daemon_path
		self.e2e_dir = e2e_dir
		self.out_dir = out_dir
		self.cpus = cpus
		self.modules = {name: load_module("e2e_" + name.replace("-", "_"),
						  os.path.join(e2e_dir, path)) for name, path in TESTS}
		self.records = {}	# (backend, test) -> normalized rows
		self.results = []	# (label, passed)

	def session_class(self):
		tt = self.tt

		class RecordingSession(tt.Session):
			"""A tt.Session that keeps every subscriber it hands out."""

			def __init__(self):
				super().__init__()
				self.subscribers = []

			def subscribe(self, daemon, netns):
				subscriber = super().subscribe(daemon, netns)
				self.subscribers.append(subscriber)
				return subscriber

		return RecordingSession

	def run_test(self, backend, name):
		tt = self.tt
		label = "%s under --backend %s" % (name, backend)
		tt.log("\n==== %s ====" % label)
		tt.BACKEND = backend
		session = self.session_class()()
		exit_code = 0
		try:
			with session:
				self.modules[name].main(session, self.daemon_path, self.cpus)
		except SystemExit as e:
			# tt.fatal() and a test that raised end up here with a non-zero code.
			exit_code = e.code if isinstance(e.code, int) else 1
		ok = session.checker.finish() == 0 and exit_code == 0
		self.results.append((label, ok))
		if not ok:
			self.keep_logs(session, "%s-%s" % (backend, name))
		if name in COMPARED_TESTS and session.subscribers:
			subscriber = session.subscribers[0]
			live = subscriber.records()
			self.records[(backend, name)] = normalize(subscriber.snapshot, live,
								  tt.EVENT_TYPES)
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
		diffs = []
		for index in range(max(len(expected), len(actual))):
			want = expected[index] if index < len(expected) else None
			got = actual[index] if index < len(actual) else None
			if want != got:
				diffs.append((index, want, got))
		if not diffs:
			tt.log("PASS: %s (%d records)" % (label, len(expected)))
			self.results.append((label, True))
			return
		tt.log("FAIL: %s: %d of %d records differ; first ones:" % (
			label, len(diffs), max(len(expected), len(actual))))
		for index, want, got in diffs[:MAX_DIFFS_SHOWN]:
			tt.log("  record %d\n    expected (%s): %s\n    actual   (%s): %s" % (
				index, reference, json.dumps(want), backend, json.dumps(got)))
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
		for name, _ in TESTS:
			runner.run_test(backend, name)
	reference = backends[-1]
	for backend in backends[:-1]:
		for name in COMPARED_TESTS:
			runner.compare(reference, backend, name)
	return runner.summary()


if __name__ == "__main__":
	sys.exit(main(sys.argv))
