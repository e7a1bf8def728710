#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run the tcptap client against a fake tcptapd and check its output and exit status.

Usage: test-cli.py PATH-TO-TCPTAP

The fake daemon is a UNIX socket server in a temporary directory. For each case it accepts
one client, reads its request line and sends canned lines, so every byte the client sees is
known. Cases that need another user (permission denied) run the client through setpriv.
"""

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

TCPTAP = os.path.abspath(sys.argv[1])

# Upper bound in seconds for every wait in this file: a client run, an accept, a join.
TIMEOUT_S = 30

# The client's limits, as tcptap.c defines them.
LINE_MAX_BYTES = 1024 * 1024
REPLY_TIMEOUT_S = 10

NOT_RUNNING = ("tcptap: cannot connect to {}: daemon not running "
               "(start it with 'systemctl start tcptapd')\n")

failures = []


def check(name, expected, actual):
    """Record a failure, with expected and actual values, unless they are equal."""
    if expected != actual:
        failures.append(name)
        print(f"FAIL {name}\n  expected: {expected!r}\n  actual:   {actual!r}")
        return False
    return True


def check_true(name, condition, detail):
    if not condition:
        failures.append(name)
        print(f"FAIL {name}\n  {detail}")
    return condition


def line(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


class FakeDaemon:
    """Serve one client: read its request line, send `lines`, then close or hold the socket.

    chunk: send each line in pieces of this many bytes, to exercise the client's partial reads.
    hold_s: keep the connection open this long after the last line, or until the client closes.
    repeat: send `lines` again and again, up to this many times or until the client is gone.
    pause: (index, seconds) to sleep before sending lines[index].
    """

    def __init__(self, path, lines=(), chunk=None, hold_s=0.0, repeat=1, pause=None):
        self.path = path
        self.lines = list(lines)
        self.chunk = chunk
        self.hold_s = hold_s
        self.repeat = repeat
        self.pause = pause
        self.request = None
        self.connected = False
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _accept(self):
        deadline = time.monotonic() + TIMEOUT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.listener.accept()
                return conn
            except socket.timeout:
                continue
        return None

    def _read_request(self, conn):
        data = b""
        while b"\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    def _send(self, conn, data):
        if self.chunk is None:
            conn.sendall(data)
            return
        for i in range(0, len(data), self.chunk):
            conn.sendall(data[i:i + self.chunk])
            time.sleep(0.001)

    def _hold(self, conn):
        conn.settimeout(0.1)
        deadline = time.monotonic() + self.hold_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if not conn.recv(4096):
                    return
            except socket.timeout:
                continue

    def _serve(self):
        conn = self._accept()
        if conn is None:
            return
        self.connected = True
        with conn:
            conn.settimeout(TIMEOUT_S)
            try:
                self.request = self._read_request(conn)
                for _ in range(self.repeat):
                    for index, data in enumerate(self.lines):
                        if self.pause and self.pause[0] == index:
                            time.sleep(self.pause[1])
                        self._send(conn, data)
                self._hold(conn)
            except OSError:
                # The client went away first, as it does after an error or a closed pipe.
                pass

    def finish(self):
        self.stop.set()
        self.thread.join(TIMEOUT_S)
        self.listener.close()
        return self.request


class Result:
    def __init__(self, proc, request, elapsed_s):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.request = request
        self.elapsed_s = elapsed_s

    def request_json(self):
        if not self.request or not self.request.endswith(b"\n"):
            return None
        return json.loads(self.request)


def run(args, lines=(), env=None, **daemon_options):
    """Run tcptap ARGS --socket SOCK against a fake daemon serving `lines`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tcptapd.sock")
        daemon = FakeDaemon(path, lines, **daemon_options)
        start = time.monotonic()
        try:
            proc = subprocess.run([TCPTAP, *args, "--socket", path], capture_output=True,
                                  timeout=TIMEOUT_S, env=env)
        finally:
            request = daemon.finish()
        return Result(proc, request, time.monotonic() - start)


def run_plain(args):
    """Run tcptap without a daemon, for usage errors and --help."""
    return subprocess.run([TCPTAP, *args], capture_output=True, timeout=TIMEOUT_S)


def stderr_lines(result):
    return result.stderr.decode(errors="replace").splitlines()


def check_one_error_line(name, result, pattern, exit_status=1):
    """Check the exit status and that stderr is exactly one line matching pattern."""
    check(f"{name}: exit status", exit_status, result.returncode)
    lines = stderr_lines(result)
    check(f"{name}: stderr line count", 1, len(lines))
    check_true(f"{name}: stderr text", lines and re.search(pattern, lines[0]),
               f"expected a line matching {pattern!r}, got {lines!r}")


def check_json_error(name, result, code, pattern=""):
    """Check that stderr contains exactly one JSON error object with this code."""
    lines = stderr_lines(result)
    check(f"{name}: stderr line count", 1, len(lines))
    try:
        error = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        error = None
    if not check_true(f"{name}: stderr is JSON", isinstance(error, dict), f"stderr: {lines!r}"):
        return
    check(f"{name}: error type", "error", error.get("type"))
    check(f"{name}: error code", code, error.get("code"))
    check_true(f"{name}: error message", re.search(pattern, str(error.get("message"))),
               f"expected a message matching {pattern!r}, got {error.get('message')!r}")


MONOTONIC_NOW_NS = time.clock_gettime_ns(time.CLOCK_MONOTONIC)

HELLO = {"type": "hello", "protocol": 1, "version": "0.1.0", "backend": "tracepoint", "cpus": 2,
         "clock": "CLOCK_MONOTONIC", "boot_id": "1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
         "run_id": "8c1d2e3f", "snapshot_seq": 11}


def ts(seconds_ago):
    return MONOTONIC_NOW_NS - int(seconds_ago * 1e9)


def event(seq, type_, seconds_ago, **fields):
    record = {"seq": seq, "ts_ns": ts(seconds_ago), "type": type_, "pid": 1234, "tid": 1234,
              "comm": "curl", "uid": 1000, "family": "inet", "saddr": "127.0.0.1",
              "sport": 40000, "daddr": "127.0.0.1", "dport": 80, "netns": 4026531840,
              "cookie": 4097, "cgroup": 1, "cpu": 0}
    record.update(fields)
    return record


def snapshot(origin, seconds_ago, **fields):
    record = event(0, "snapshot", seconds_ago, origin=origin, **fields)
    del record["seq"]
    return record


def snapshot_end(count, seq=11):
    return {"type": "snapshot_end", "seq": seq, "count": count}


def expected_time(seconds_ago):
    """Wall-clock time in UTC, as milliseconds of the day, for a record seconds_ago old."""
    offset_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - \
        time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    wall = datetime.datetime.fromtimestamp((ts(seconds_ago) + offset_ns) / 1e9,
                                           datetime.timezone.utc)
    return ((wall.hour * 60 + wall.minute) * 60 + wall.second) * 1000 + \
        wall.microsecond // 1000


def parse_time(text):
    m = re.fullmatch(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)", text)
    if not m:
        return None
    h, mi, s, ms = (int(g) for g in m.groups())
    return ((h * 60 + mi) * 60 + s) * 1000 + ms


def check_time(name, seconds_ago, text):
    actual = parse_time(text)
    if not check_true(f"{name}: TIME format", actual is not None,
                      f"expected HH:MM:SS.mmm, got {text!r}"):
        return
    expected = expected_time(seconds_ago)
    # Both sides take the clock offset at slightly different moments, and 200 ms covers that.
    diff = min(abs(actual - expected), 86400000 - abs(actual - expected))
    check_true(f"{name}: TIME value", diff <= 200,
               f"expected about {expected} ms of the day, got {actual} ({text})")


UTC = dict(os.environ, TZ="UTC")

WATCH_HEADER = ["TIME", "TYPE", "PID", "COMM", "IP", "SADDR", "SPORT", "DADDR", "DPORT"]


def test_watch_text():
    lines = [
        line(HELLO),
        line(snapshot("connect", 9, pid=100, comm="sshd", saddr="192.0.2.1", sport=22,
                      daddr="192.0.2.2", dport=50000, cookie=11)),
        line(snapshot("seeded", 8, pid=0, comm="", family="inet6", saddr="2001:db8::1",
                      sport=443, daddr="2001:db8::2", dport=51000, cookie=12)),
        line(snapshot_end(2)),
        line(event(12, "connect", 7)),
        line(event(13, "accept", 6, pid=77, comm="nginx", sport=80, dport=40002)),
        line(event(14, "close", 5)),
        line(event(15, "connect_failed", 4, pid=55, comm="wget", dport=81,
                   error="ECONNREFUSED")),
        line(event(16, "connect", 3, late=True, family="inet6", saddr="::1", daddr="::1")),
        line({"seq": 17, "ts_ns": ts(2), "type": "lost", "reason": "ring_full", "cpu": 1,
              "count": 12}),
        line({"seq": 18, "ts_ns": ts(1), "type": "future_record_type", "detail": 1}),
        line({"seq": 19, "ts_ns": ts(1), "type": "lost", "reason": "nested", "count": 2}),
        line(event(20, "close", 1, comm="evil\x1b[31m")),
    ]
    result = run(["watch"], lines, env=UTC)

    check("watch text: request", {"command": "subscribe"}, result.request_json())
    rows = result.stdout.decode().splitlines()
    check("watch text: row count", 9, len(rows))
    if not rows:
        return
    check("watch text: header", WATCH_HEADER, rows[0].split())

    expected = [
        (9, ["snapshot", "100", "sshd", "4", "192.0.2.1", "22", "192.0.2.2", "50000"]),
        (7, ["connect", "1234", "curl", "4", "127.0.0.1", "40000", "127.0.0.1", "80"]),
        (6, ["accept", "77", "nginx", "4", "127.0.0.1", "80", "127.0.0.1", "40002"]),
        (5, ["close", "1234", "curl", "4", "127.0.0.1", "40000", "127.0.0.1", "80"]),
        (4, ["connect_failed", "55", "wget", "4", "127.0.0.1", "40000", "127.0.0.1", "81",
             "ECONNREFUSED"]),
        (3, ["connect", "1234", "curl", "6", "::1", "40000", "::1", "80", "late"]),
        (1, ["close", "1234", "evil?[31m", "4", "127.0.0.1", "40000", "127.0.0.1", "80"]),
    ]
    data_rows = [rows[1]] + rows[3:]
    for index, ((seconds_ago, fields), row) in enumerate(zip(expected, data_rows)):
        check(f"watch text: row {index} fields", fields, row.split()[1:])
        check_time(f"watch text: row {index}", seconds_ago, row.split()[0])

    # The seeded connection has an empty comm, so its row has one field less.
    check("watch text: seeded snapshot row",
          ["snapshot", "0", "6", "2001:db8::1", "443", "2001:db8::2", "51000"],
          rows[2].split()[1:])
    check("watch text: columns aligned", rows[0].index("SPORT") + len("SPORT"),
          rows[1].index(" 22 ") + len(" 22"))
    check("watch text: no escape bytes", False, b"\x1b" in result.stdout)

    check("watch text: exit status after the daemon closed", 1, result.returncode)
    errors = stderr_lines(result)
    check("watch text: stderr line count", 3, len(errors))
    check_true("watch text: lost line",
               errors and re.fullmatch(r"tcptap: 12 events lost on cpu 1 at "
                                       r"\d\d:\d\d:\d\d\.\d\d\d: .*--perf-pages.*", errors[0]),
               f"stderr: {errors!r}")
    check_true("watch text: nested lost line",
               len(errors) > 1 and re.fullmatch(r"tcptap: 2 events lost: .*nested.*", errors[1]),
               f"stderr: {errors!r}")
    check_true("watch text: disconnect line",
               len(errors) > 2 and re.fullmatch(r"tcptap: the daemon closed the connection.*",
                                                errors[2]),
               f"stderr: {errors!r}")


def test_watch_ipv6_width():
    lines = [line(HELLO), line(snapshot_end(0)),
             line(event(12, "connect", 1, family="inet6", saddr="2001:db8:aaaa:bbbb:cccc:dddd:eeee:1",
                        daddr="2001:db8::2"))]
    result = run(["watch", "-6"], lines, env=UTC)
    rows = result.stdout.decode().splitlines()
    check("watch -6: row count", 2, len(rows))
    if len(rows) < 2:
        return
    header = rows[0]
    check("watch -6: address column width", 40, header.index("SPORT") - header.index("SADDR"))
    check("watch -6: SPORT aligned", header.index("SPORT") + len("SPORT"),
          rows[1].index(" 40000 ") + len(" 40000"))
    default = run(["watch"], lines[:2], env=UTC).stdout.decode().splitlines()
    check("watch: default address column width", 16,
          default[0].index("SPORT") - default[0].index("SADDR") if default else None)


def test_watch_json_passthrough():
    # Spacing, key order and escapes that a re-encoder would change.
    lines = [
        b'{"type": "hello", "protocol": 1, "version": "0.1.0", "backend": "tracepoint", '
        b'"cpus": 2, "clock": "CLOCK_MONOTONIC", "boot_id": "b", "run_id": "r", '
        b'"snapshot_seq": 3}\n',
        b'{"ts_ns":1,"type":"snapshot","pid":1,"tid":1,"comm":"a\\/b\\u00e9","uid":0,'
        b'"family":"inet","saddr":"127.0.0.1","sport":1,"daddr":"127.0.0.1","dport":2,'
        b'"netns":1,"cookie":1,"cgroup":1,"cpu":0,"origin":"seeded"}\n',
        b'{"type":"snapshot_end","seq":3,"count":1}\n',
        b'{"cpu":1,"seq":4,"ts_ns":5,"type":"connect","pid":1,"tid":1,"comm":"x","uid":0,'
        b'"family":"inet6","saddr":"::1","sport":3,"daddr":"::1","dport":4,"netns":1,'
        b'"cookie":18446744073709551615,"cgroup":1,"late":true}\n',
        b'{"seq":5,"ts_ns":6,"type":"lost","cpu":0,"count":3}\n',
        b'{"seq":6,"type":"future_record_type","value":1.5e3}   \n',
    ]
    for chunk in (None, 7):
        name = f"watch --json (chunk {chunk})"
        result = run(["watch", "--json"], lines, chunk=chunk)
        check(f"{name}: stdout byte for byte", b"".join(lines).decode(),
              result.stdout.decode())
        check(f"{name}: exit status", 1, result.returncode)
        check_json_error(name, result, "disconnected", "closed the connection")


def test_watch_filters():
    lines = [line(HELLO), line(snapshot_end(0))]
    result = run(["watch", "-p", "42", "--comm", "curl/7", "--port", "443", "-6", "--type",
                  "close,connect", "--type", "close", "--netns", "4026531840", "--cgroup",
                  "18446744073709551615", "--no-snapshot"], lines)
    check("watch filters: request", {
        "command": "subscribe",
        "filter": {"types": ["connect", "close"], "pid": 42, "comm": "curl/7", "port": 443,
                   "family": "inet6", "netns": 4026531840, "cgroup": 18446744073709551615},
    }, result.request_json())
    check("watch filters: request is one line", 1, result.request.count(b"\n"))

    result = run(["--ipv4", "watch", "--pid=7", "-t", "connect_failed,accept"], lines)
    check("watch short filters: request", {
        "command": "subscribe",
        "filter": {"types": ["accept", "connect_failed"], "pid": 7, "family": "inet"},
    }, result.request_json())


def test_watch_no_snapshot():
    lines = [line(HELLO), line(snapshot("connect", 3)), line(snapshot_end(1)),
             line(event(12, "connect", 2))]
    result = run(["watch", "--no-snapshot"], lines, env=UTC)
    types = [row.split()[1] for row in result.stdout.decode().splitlines()[1:]]
    check("watch --no-snapshot: text rows", ["connect"], types)

    result = run(["watch", "--no-snapshot", "--json"], lines)
    check("watch --no-snapshot --json: lines",
          (lines[0] + lines[2] + lines[3]).decode(), result.stdout.decode())


def test_watch_idle_stream():
    # A live stream may be silent for longer than the reply timeout.
    lines = [line(HELLO), line(snapshot_end(0)), line(event(12, "connect", 0))]
    result = run(["watch", "--json"], lines, pause=(2, REPLY_TIMEOUT_S + 1))
    check("watch idle: stdout", b"".join(lines).decode(), result.stdout.decode())
    check_json_error("watch idle", result, "disconnected")


DUMP_HEADER = ["ORIGIN", "PID", "COMM", "IP", "SADDR", "SPORT", "DADDR", "DPORT", "COOKIE"]


def test_dump():
    lines = [
        line(HELLO),
        line(snapshot("connect", 3, pid=100, comm="sshd", saddr="192.0.2.1", sport=22,
                      daddr="192.0.2.2", dport=50000, cookie=11)),
        line(snapshot("accept", 2, pid=7, comm="nginx", family="inet6", saddr="::1", sport=80,
                      daddr="::1", dport=41000, cookie=18446744073709551615)),
        line(snapshot("seeded", 1, pid=9, comm="redis", cookie=13)),
        line(snapshot_end(3)),
    ]
    # The daemon closes a dump after snapshot_end. A daemon that holds it open must not stall
    # the client.
    result = run(["dump"], lines, hold_s=TIMEOUT_S)
    check("dump: request", {"command": "dump"}, result.request_json())
    check("dump: exit status", 0, result.returncode)
    check("dump: stderr", b"", result.stderr)
    rows = [row.split() for row in result.stdout.decode().splitlines()]
    check("dump: rows", [
        DUMP_HEADER,
        ["connect", "100", "sshd", "4", "192.0.2.1", "22", "192.0.2.2", "50000", "11"],
        ["accept", "7", "nginx", "6", "::1", "80", "::1", "41000", "18446744073709551615"],
        ["seeded", "9", "redis", "4", "127.0.0.1", "40000", "127.0.0.1", "80", "13"],
    ], rows)

    result = run(["dump", "--json"], lines)
    check("dump --json: stdout byte for byte", b"".join(lines).decode(), result.stdout.decode())
    check("dump --json: exit status", 0, result.returncode)
    check("dump --json: stderr", b"", result.stderr)

    result = run(["dump"], lines[:4] + [line(snapshot_end(4))])
    check_one_error_line("dump count mismatch", result,
                         r"^tcptap: protocol error in line 5 .*counts 4 records but 3 arrived")

    result = run(["dump"], lines[:3])
    check_one_error_line("dump cut short", result,
                         r"^tcptap: the daemon closed the connection before the end of the "
                         r"snapshot$")

    result = run(["dump"], [line(HELLO), line({"type": "snapshot", "origin": "connect"}),
                            line(snapshot_end(1))])
    check_one_error_line("dump missing fields", result,
                         r"^tcptap: protocol error in line 2 .*field 'ts_ns' is missing")


STATS = {"type": "stats", "events": {"connect": 5, "accept": 2, "close": 4, "connect_failed": 1},
         "lost": 0, "late": 3, "clients": 1,
         "cpus": [{"cpu": 0, "frontier_lag_ns": 1200, "stalled": False},
                  {"cpu": 1, "frontier_lag_ns": 35000, "stalled": True, "note": "slow"}],
         "tags": ["a", "b"], "empty": []}


def test_stats():
    lines = [line(HELLO), line(STATS)]
    result = run(["stats"], lines)
    check("stats: request", {"command": "stats"}, result.request_json())
    check("stats: exit status", 0, result.returncode)
    check("stats: stderr", b"", result.stderr)
    out = result.stdout.decode().splitlines()
    expected_lines = [
        r"daemon:",
        r"  backend: +tracepoint",
        r"  cpus: +2",
        r"  run_id: +8c1d2e3f",
        r"events:",
        r"  connect: +5",
        r"  connect_failed: +1",
        r"late: +3",
        r"cpus:",
        r"  cpu +frontier_lag_ns +stalled +note",
        r"    0 +1200 +false +-",
        r"    1 +35000 +true +slow",
        r"tags: +a, b",
        r"empty: +-",
    ]
    for pattern in expected_lines:
        check_true(f"stats: line {pattern!r}", any(re.fullmatch(pattern, o) for o in out),
                   f"no line matches {pattern!r} in:\n" + "\n".join(out))
    check("stats: type keys hidden", [], [o for o in out if o.lstrip().startswith("type")])
    check("stats: no trailing blanks", [], [o for o in out if o != o.rstrip()])

    result = run(["stats", "--json"], lines)
    check("stats --json: stdout byte for byte", b"".join(lines).decode(), result.stdout.decode())
    check("stats --json: exit status", 0, result.returncode)

    result = run(["stats"], [line(HELLO)])
    check_one_error_line("stats missing", result, r"closed the connection before sending the "
                                                  r"stats$")

    result = run(["stats"], [line(HELLO), line(snapshot_end(0))])
    check_one_error_line("stats wrong record", result,
                         r"^tcptap: protocol error in line 2 .*expected a stats record, got "
                         r"'snapshot_end'")


def test_not_running():
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "missing.sock")
        result = subprocess.run([TCPTAP, "stats", "--socket", missing], capture_output=True,
                                timeout=TIMEOUT_S)
        check("not running: exit status", 1, result.returncode)
        check("not running: stderr", NOT_RUNNING.format(missing), result.stderr.decode())
        check("not running: stdout", b"", result.stdout)

        # A socket file left behind by a daemon that died: connect() gets ECONNREFUSED.
        stale = os.path.join(tmp, "stale.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(stale)
        sock.close()
        result = subprocess.run([TCPTAP, "watch", "--socket", stale], capture_output=True,
                                timeout=TIMEOUT_S)
        check("stale socket: exit status", 1, result.returncode)
        check("stale socket: stderr", NOT_RUNNING.format(stale), result.stderr.decode())

        result = subprocess.run([TCPTAP, "dump", "--json", "--socket", missing],
                                capture_output=True, timeout=TIMEOUT_S)
        check("not running --json: exit status", 1, result.returncode)
        check("not running --json: stdout", b"", result.stdout)
        check_json_error("not running --json", result, "not_running", "daemon not running")

    if not os.path.exists("/run/tcptap/tcptapd.sock"):
        result = run_plain(["stats"])
        check("default socket: stderr", NOT_RUNNING.format("/run/tcptap/tcptapd.sock"),
              result.stderr.decode())
    else:
        print("note: /run/tcptap/tcptapd.sock exists, default path message not checked")


def test_permission_denied():
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        path = os.path.join(tmp, "tcptapd.sock")
        daemon = FakeDaemon(path, [line(HELLO), line(STATS)])
        try:
            if os.geteuid() == 0:
                # The socket belongs to root with mode 0600, so user 65534 cannot connect.
                os.chmod(path, 0o600)
                binary = os.path.join(tmp, "tcptap")
                shutil.copy(TCPTAP, binary)
                os.chmod(binary, 0o755)
                command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           binary, "stats", "--socket", path]
            else:
                os.chmod(path, 0o000)
                command = [TCPTAP, "stats", "--socket", path]
            result = subprocess.run(command, capture_output=True, timeout=TIMEOUT_S)
        finally:
            daemon.finish()
        check_one_error_line("permission denied", result,
                             rf"^tcptap: cannot connect to {re.escape(path)}: permission "
                             r"denied \(only root and members of group 'tcptap' may connect, "
                             r"so add your user to that group and log in again\)$")
        check("permission denied: no connection", False, daemon.connected)


def test_error_records():
    error = {"type": "error", "code": "bad_request", "message": "unknown filter key 'x'"}
    result = run(["watch"], [line(HELLO), line(snapshot_end(0)), line(error)])
    check_one_error_line("error record", result,
                         r"^tcptap: the daemon reported an error \(bad_request\): unknown filter "
                         r"key 'x'$")

    # A daemon at its client limit sends an error instead of hello.
    busy = {"type": "error", "code": "too_many_clients", "message": "128 clients connected"}
    result = run(["stats"], [line(busy)])
    check_one_error_line("error before hello", result, r"\(too_many_clients\): 128 clients")

    result = run(["watch", "--json"], [line(HELLO), line(snapshot_end(0)), line(error)])
    check("error record --json: exit status", 1, result.returncode)
    check("error record --json: stdout", (line(HELLO) + line(snapshot_end(0)) +
                                          line(error)).decode(), result.stdout.decode())
    check_json_error("error record --json", result, "bad_request", "^unknown filter key 'x'$")

    result = run(["dump"], [line(HELLO), line(error)])
    check_one_error_line("error record in dump", result, r"\(bad_request\)")


def test_overflow():
    overflow = {"type": "overflow", "queued_bytes": 4194304, "limit_bytes": 4194304,
                "last_seq_sent": 100, "newest_seq": 9000}
    lines = [line(HELLO), line(snapshot_end(0)), line(event(12, "connect", 1)), line(overflow)]
    result = run(["watch"], lines, env=UTC)
    check_one_error_line("overflow", result,
                         r"^tcptap: the daemon disconnected this client because it fell behind "
                         r"\(4194304 bytes queued, limit 4194304\)")
    check("overflow: rows before it", 2, len(result.stdout.decode().splitlines()))

    result = run(["watch", "--json"], lines)
    check("overflow --json: exit status", 1, result.returncode)
    check("overflow --json: stdout", b"".join(lines).decode(), result.stdout.decode())
    check_json_error("overflow --json", result, "overflow", "fell behind")


def test_protocol_errors():
    hello = line(HELLO)
    end = line(snapshot_end(0))
    cases = [
        ("not JSON", [b"this is not json\n"], r"line 1 .*invalid JSON"),
        ("incomplete JSON", [b'{"type":"hello"\n'], r"line 1 .*incomplete"),
        ("empty line", [b"\n"], r"line 1 .*incomplete"),
        ("array", [b"[1,2]\n"], r"line 1 .*expected a JSON object"),
        ("trailing data", [hello[:-1] + b" x\n"], r"line 1 .*invalid JSON: unexpected character"),
        ("NUL byte", [hello[:-2] + b"\0}\n"], r"line 1 "),
        ("no type", [b'{"protocol":1}\n'], r"line 1 .*no string 'type'"),
        ("first record not hello", [end], r"line 1 .*expected a hello record, got 'snapshot_end'"),
        ("hello without protocol", [line({"type": "hello"})], r"no integer 'protocol'"),
        ("truncated line", [hello, end, b'{"seq":1,"type":"con'],
         r"line 3 .*closed in the middle of the line"),
        ("missing dport", [hello, end, line({k: v for k, v in event(12, "connect", 1).items()
                                             if k != "dport"})],
         r"line 3 .*field 'dport' is missing"),
        ("port out of range", [hello, end, line(event(12, "connect", 1, sport=70000))],
         r"field 'sport' is missing or not an integer from 0 to 65535"),
        ("bad address", [hello, end, line(event(12, "connect", 1, saddr="999.1.1.1"))],
         r"field 'saddr' is missing or not an IPv4 address"),
        ("bad family", [hello, end, line(event(12, "connect", 1, family="unix"))],
         r"field 'family'"),
        ("failed without error", [hello, end, line(event(12, "connect_failed", 1))],
         r"connect_failed record without string 'error'"),
        ("hello again", [hello, end, hello], r"line 3 .*unexpected 'hello' record"),
        ("live record in snapshot", [hello, line(event(12, "connect", 1))],
         r"line 2 .*expected a snapshot or snapshot_end record, got 'connect'"),
        ("other clock", [line(dict(HELLO, clock="CLOCK_BOOTTIME")), end],
         r"clock 'CLOCK_BOOTTIME'"),
    ]
    for name, lines, pattern in cases:
        result = run(["watch"], lines, env=UTC)
        check_one_error_line(f"protocol: {name}", result, rf"^tcptap: protocol error.*{pattern}")

    result = run(["stats"], [line(dict(HELLO, protocol=2))])
    check_one_error_line("protocol: version 2", result,
                         r"^tcptap: the daemon speaks protocol 2 but tcptap \S+ speaks protocol 1")

    result = run(["dump", "--json"], [b"garbage\n"])
    check("protocol --json: exit status", 1, result.returncode)
    check("protocol --json: stdout", b"", result.stdout)
    check_json_error("protocol --json", result, "protocol_error", "invalid JSON")


def padded_event(total_bytes):
    """A connect line of exactly total_bytes, '\\n' included."""
    record = event(12, "connect", 1, pad="")
    size = len(line(record))
    record["pad"] = "p" * (total_bytes - size)
    data = line(record)
    assert len(data) == total_bytes
    return data


def test_long_lines():
    start = [line(HELLO), line(snapshot_end(0))]

    longest = padded_event(LINE_MAX_BYTES + 1)
    result = run(["watch", "--json"], start + [longest, line(event(13, "close", 0))])
    check("longest line: passed through", True, longest.decode() in result.stdout.decode())
    check_json_error("longest line", result, "disconnected")

    result = run(["watch", "--json"], start + [padded_event(LINE_MAX_BYTES + 2)])
    check("line too long: exit status", 1, result.returncode)
    check_json_error("line too long", result, "protocol_error", r"line 3 .*longer than 1048576")

    # No newline at all: the client must stop reading, not buffer forever.
    result = run(["watch"], start + [b"a" * (4 * LINE_MAX_BYTES)], env=UTC)
    check_one_error_line("endless line", result, r"protocol error in line 3 .*longer than")


def test_timeout():
    result = run(["stats"], [], hold_s=REPLY_TIMEOUT_S + 5)
    check_one_error_line("timeout", result, r"^tcptap: timed out after 10 s waiting for the "
                                            r"daemon at ")
    check_true("timeout: elapsed", REPLY_TIMEOUT_S - 1 < result.elapsed_s < REPLY_TIMEOUT_S + 4,
               f"expected about {REPLY_TIMEOUT_S} s, took {result.elapsed_s:.1f} s")


def test_closed_stdout():
    """A reader that goes away (| head) ends tcptap quietly with exit status 0."""
    count = 100000
    watch_lines = [line(HELLO), line(snapshot_end(0))] + [line(event(12, "connect", 1))] * count
    dump_lines = [line(HELLO)] + [line(snapshot("connect", 1))] * count + \
        [line(snapshot_end(count))]
    for args, lines in ((["watch", "--json"], watch_lines), (["watch"], watch_lines),
                        (["dump"], dump_lines)):
        name = "closed stdout " + " ".join(args)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tcptapd.sock")
            daemon = FakeDaemon(path, lines)
            proc = subprocess.Popen([TCPTAP, *args, "--socket", path], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=UTC)
            try:
                first = proc.stdout.readline()
                proc.stdout.close()
                proc.wait(TIMEOUT_S)
                stderr = proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(TIMEOUT_S)
                proc.stderr.close()
                daemon.finish()
        check(f"{name}: first line read", True, len(first) > 0)
        check(f"{name}: exit status", 0, proc.returncode)
        check(f"{name}: stderr", b"", stderr)


USAGE_CASES = [
    ([], r"missing command"),
    (["frob"], r"unknown command 'frob'"),
    (["watch", "--frob"], r"unknown option '--frob'"),
    (["watch", "-x"], r"unknown option '-x'"),
    (["watch", "-4", "-6"], r"-4 and -6 cannot be combined"),
    (["watch", "--json=yes"], r"option '--json' takes no argument"),
    (["watch", "--ipv4=1"], r"option '--ipv4' takes no argument"),
    (["watch", "-4x"], r"unknown option '-x'"),
    (["watch", "--port", "0"], r"invalid --port '0'"),
    (["watch", "--port", "65536"], r"invalid --port '65536': expected an integer from 1 to 65535"),
    (["watch", "--port", "8O"], r"invalid --port '8O'"),
    (["watch", "--port", "-1"], r"invalid --port '-1'"),
    (["watch", "--port", " 80"], r"invalid --port ' 80'"),
    (["watch", "-p", "abc"], r"invalid --pid 'abc'"),
    (["watch", "-p", "0"], r"invalid --pid '0'"),
    (["watch", "--pid", "99999999999"], r"invalid --pid"),
    (["watch", "--type", "bogus"], r"invalid --type 'bogus'"),
    (["watch", "--type", "connect,"], r"invalid --type 'connect,'"),
    (["watch", "--type", ""], r"invalid --type ''"),
    (["watch", "--comm", "a" * 16], r"invalid --comm"),
    (["watch", "--comm", ""], r"invalid --comm"),
    (["watch", "--netns", "0"], r"invalid --netns '0'"),
    (["watch", "--cgroup", "x"], r"invalid --cgroup 'x'"),
    (["dump", "-p", "1"], r"option '-p' applies to 'watch' only"),
    (["stats", "--no-snapshot"], r"option '--no-snapshot' applies to 'watch' only"),
    (["watch", "--pid"], r"option '--pid' requires an argument"),
    (["watch", "--socket"], r"option '--socket' requires an argument"),
    (["watch", "extra"], r"unexpected argument 'extra'"),
    (["watch", "--socket", ""], r"invalid --socket: the path is empty"),
    (["watch", "--socket", "/" + "x" * 120], r"a socket path has at most 107 bytes"),
]


def test_usage_errors():
    for args, pattern in USAGE_CASES:
        result = run_plain(args)
        name = "usage " + " ".join(args)
        check_one_error_line(name, result, rf"^tcptap: .*{pattern}.*\(see 'tcptap --help'\)$",
                             exit_status=2)
        check(f"{name}: stdout", b"", result.stdout)

    # In --json mode usage errors are JSON, also when --json comes after the bad option.
    for args in (["--json", "watch", "--frob"], ["watch", "--frob", "--json"]):
        result = run_plain(args)
        name = "usage json " + " ".join(args)
        check(f"{name}: exit status", 2, result.returncode)
        check_json_error(name, result, "usage", "unknown option '--frob'")


def test_help_and_version():
    for args in (["--help"], ["-h"], ["watch", "--help"]):
        result = run_plain(args)
        name = " ".join(args)
        check(f"{name}: exit status", 0, result.returncode)
        check(f"{name}: usage line", True, result.stdout.startswith(b"Usage: tcptap COMMAND"))
        check(f"{name}: stderr", b"", result.stderr)

    result = run_plain(["--version"])
    check("--version: exit status", 0, result.returncode)
    check_true("--version: output", re.fullmatch(rb"tcptap \d+\.\d+\.\d+\n", result.stdout),
               f"stdout: {result.stdout!r}")


def main():
    tests = [value for name, value in globals().items() if name.startswith("test_")]
    for test in tests:
        before = len(failures)
        test()
        print(f"{'ok  ' if len(failures) == before else 'FAIL'} {test.__name__}", flush=True)
    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
