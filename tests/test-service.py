#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Check tcptapd as a systemd service, without a running systemd.

Usage: test-service.py TCPTAPD SERVICE_UNIT SOCKET_UNIT

- readiness: READY=1 only once the socket serves, STATUS= names the backend,
  WATCHDOG=1 pings follow WATCHDOG_USEC for the right WATCHDOG_PID only,
  SIGTERM gives STOPPING=1 and exit status 0, and no BPF program, link or
  perf event of the daemon survives it;
- socket activation through systemd-socket-activate;
- the capability bounding set of SERVICE_UNIT is enough to trace and seed a
  network namespace made here, and the daemon keeps only CAP_PERFMON and
  CAP_IPC_LOCK after start-up (and CAP_BPF where the kernel's bpf() gate
  needs it);
- every system call the daemon makes from start to stop, traced with strace,
  passes the SystemCallFilter= of SERVICE_UNIT;
- SERVICE_UNIT and SOCKET_UNIT pass `systemd-analyze verify`, and
  `systemd-analyze security --offline=yes` rates the service 4.9 or lower.

Needs root. Uses only the loopback interface of a network namespace it
creates and deletes.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
CLIENT_TIMEOUT_S = 10
EVENT_TIMEOUT_S = 15
WATCHDOG_USEC = 2000000
MAX_EXPOSURE = 4.9
NOBODY = 65534
CAP_IPC_LOCK = 14
CAP_PERFMON = 38
CAP_BPF = 39
# Program names of tcptap.bpf.c, as the kernel stores them (15 characters).
PROGRAM_PREFIXES = ("tp_", "tcptap_", "fentry_", "fexit_", "kprobe_")

# Keeps a loopback connection open in a network namespace: the server
# accepts it and both ends stay open until stdin closes.
PAIR_SCRIPT = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
accepted, _ = server.accept()
print(client.getsockname()[1], flush=True)
sys.stdin.read()
"""


class Failure(Exception):
    pass


def check(condition, subject, expected, actual):
    if not condition:
        raise Failure(f"{subject}: expected {expected}, got {actual}")


def wait_until(predicate, timeout_s, interval_s=0.05):
    """Call predicate until it returns a true value or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


class NotifySocket:
    """The AF_UNIX datagram socket a service manager passes as NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.fields_seen = []  # every "KEY=value" field, in arrival order

    def poll(self, timeout_s):
        """Receive at most one datagram within timeout_s; return its fields."""
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return []
        fields = [f for f in data.decode().split("\n") if f]
        self.fields_seen.extend(fields)
        return fields

    def collect(self, duration_s):
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())

    def wait_for(self, predicate, timeout_s):
        """Receive until a field satisfies predicate; return that field or None."""
        deadline = time.monotonic() + timeout_s
        for f in self.fields_seen:
            if predicate(f):
                return f
        while time.monotonic() < deadline:
            for f in self.poll(min(0.1, deadline - time.monotonic())):
                if predicate(f):
                    return f
        return None

    def fields(self, prefix):
        return [f for f in self.fields_seen if f.startswith(prefix)]

    def close(self):
        self.sock.close()


class Daemon:
    def __init__(self, argv, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM the daemon and return its exit status (None on timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def connect_client(path, request=b"\n"):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CLIENT_TIMEOUT_S)
    sock.connect(path)
    sock.sendall(request)
    return sock


class LineReader:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def next(self, timeout_s):
        """Return the next JSON message, or None if none came in time."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def bpftool_json(*args):
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out) if out.strip() else []


def fd_objects(pid):
    """BPF program ids, BPF link ids and the number of perf events that
    process pid has open, from /proc/<pid>/fd and fdinfo."""
    progs, links, perf_events = set(), set(), 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue  # closed meanwhile
        if target == "anon_inode:bpf-prog" and "prog_id" in info:
            progs.add(int(info["prog_id"]))
        elif target == "anon_inode:bpf_link" and "link_id" in info:
            links.add(int(info["link_id"]))
        elif target == "anon_inode:[perf_event]":
            perf_events += 1
    return progs, links, perf_events


def programs_held_by_any_process():
    held = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                held |= fd_objects(int(pid))[0]
            except OSError:
                continue  # exited meanwhile
    return held


def tcptap_program_ids():
    """Ids of the loaded programs named like those of tcptap.bpf.c."""
    return {p["id"] for p in bpftool_json("prog", "show")
            if p.get("name", "").startswith(PROGRAM_PREFIXES)}


def status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == key:
                return value.strip()
    raise Failure(f"/proc/{pid}/status has no {key} line")


def cap_mask(names):
    numbers = {"cap_chown": 0, "cap_dac_override": 1, "cap_dac_read_search": 2,
               "cap_fowner": 3, "cap_setpcap": 8, "cap_net_admin": 12, "cap_net_raw": 13,
               "cap_ipc_lock": 14, "cap_sys_ptrace": 19, "cap_sys_admin": 21,
               "cap_sys_resource": 24, "cap_perfmon": 38, "cap_bpf": 39}
    mask = 0
    for name in names:
        if name.lower() not in numbers:
            raise Failure(f"capability {name} of the unit is not known to this test")
        mask |= 1 << numbers[name.lower()]
    return mask


def unit_setting(unit_path, key):
    with open(unit_path) as f:
        values = [line.split("=", 1)[1].strip() for line in f
                  if line.startswith(key + "=")]
    if len(values) != 1:
        raise Failure(f"{unit_path}: expected one {key}= line, found {len(values)}")
    return values[0]


def expected_runtime_caps():
    """CAP_PERFMON and CAP_IPC_LOCK, plus CAP_BPF where bpf() gates every command on it.

    Linux 5.19 limited the kernel.unprivileged_bpf_disabled check to
    BPF_MAP_CREATE and BPF_PROG_LOAD; before, it applied to every command.
    """
    release = os.uname().release
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", release).groups())
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        gated = int(f.read()) != 0
    mask = 1 << CAP_PERFMON | 1 << CAP_IPC_LOCK
    if (major, minor) < (5, 19) and gated:
        mask |= 1 << CAP_BPF
    return mask


def start_daemon(tcptapd, tmp, name, extra_env=None, prefix=(), args=()):
    notify = NotifySocket(os.path.join(tmp, f"{name}.notify"))
    sock_path = os.path.join(tmp, f"{name}.sock")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))}
    env["NOTIFY_SOCKET"] = notify.path
    env.update(extra_env or {})
    argv = [*prefix, tcptapd, "--socket", sock_path, "--log-level", "info", *args]
    daemon = Daemon(argv, env, os.path.join(tmp, f"{name}.log"))
    return daemon, notify, sock_path


def wait_ready(daemon, notify):
    if not notify.wait_for(lambda f: f == "READY=1", READY_TIMEOUT_S):
        raise Failure(f"READY=1 not received within {READY_TIMEOUT_S} s; "
                      f"exit status {daemon.proc.poll()}, log:\n{daemon.log_text()}")


def test_readiness_and_stop(tcptapd, tmp):
    before = tcptap_program_ids()
    # The shell's pid becomes the daemon's through exec, as under systemd.
    wrapper = ("sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"')
    daemon, notify, sock_path = start_daemon(
        tcptapd, tmp, "ready", {"WATCHDOG_USEC": str(WATCHDOG_USEC)}, prefix=wrapper)
    try:
        wait_ready(daemon, notify)
        # The daemon listens before READY=1, so a client that connects at
        # READY=1 must be served at once.
        reader = LineReader(connect_client(sock_path))
        hello = reader.next(CLIENT_TIMEOUT_S)
        check(hello is not None and hello.get("type") == "hello",
              "first message after READY=1", "a hello", hello)

        # The housekeeping tick sets STATUS= every second.
        backend = f"backend {hello['backend']}"
        status = notify.wait_for(lambda f: f.startswith("STATUS=") and backend in f, 5)
        check(status, "STATUS= lines", f"one naming {backend}", notify.fields("STATUS="))

        pings_before = len(notify.fields("WATCHDOG=1"))
        notify.collect(2.5)
        pings = len(notify.fields("WATCHDOG=1")) - pings_before
        # With WATCHDOG_USEC of 2 s, sd-event pings every second.
        check(pings >= 2, "WATCHDOG=1 pings in 2.5 s", ">= 2", pings)

        progs, links, perf_events = fd_objects(daemon.pid)
        check(progs, "BPF programs open in the daemon", "some", progs)
        check(links, "BPF links open in the daemon", "some", links)
        check(perf_events, "perf events open in the daemon", "some", perf_events)

        exit_status = daemon.stop()
        check(exit_status == 0, "exit status after SIGTERM", 0, exit_status)
        check(notify.wait_for(lambda f: f == "STOPPING=1", 1), "STOPPING=1 after SIGTERM",
              "received", notify.fields("STOPPING"))

        left_progs = {p["id"] for p in bpftool_json("prog", "show")} & progs
        left_links = {l["id"] for l in bpftool_json("link", "show")} & links
        check(not left_progs, "daemon programs left after exit", "none", left_progs)
        check(not left_links, "daemon links left after exit", "none", left_links)
        perf = [p for p in bpftool_json("perf", "show")
                if p.get("pid") == daemon.pid or p.get("prog_id") in progs]
        check(not perf, "daemon perf events left after exit", "none", perf)
        # A tcptap program that appeared during the test and that no process
        # has open was leaked (pinned, or kept by a link).
        leaked = tcptap_program_ids() - before - programs_held_by_any_process()
        check(not leaked, "tcptap programs no process has open", "none", leaked)
    finally:
        daemon.kill()
        notify.close()


def test_watchdog_other_pid(tcptapd, tmp):
    """WATCHDOG_PID naming another process: the daemon must not ping."""
    daemon, notify, _ = start_daemon(
        tcptapd, tmp, "otherpid", {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
    try:
        wait_ready(daemon, notify)
        notify.collect(2.5)
        pings = notify.fields("WATCHDOG=1")
        check(not pings, "WATCHDOG=1 pings with WATCHDOG_PID=1", "none", len(pings))
        status = daemon.stop()
        check(status == 0, "exit status after SIGTERM", 0, status)
    finally:
        daemon.kill()
        notify.close()


def test_socket_activation(tcptapd, tmp):
    listen_path = os.path.join(tmp, "activated.sock")
    unused_path = os.path.join(tmp, "unused.sock")
    log_path = os.path.join(tmp, "activated.log")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))}
    daemon = Daemon(["systemd-socket-activate", "-l", listen_path, tcptapd,
                     "--socket", unused_path, "--log-level", "info"], env, log_path)
    try:
        check(wait_until(lambda: os.path.exists(listen_path), 10), "listening socket",
              listen_path, "missing")
        # The connection starts the daemon, which sends its hello once ready.
        reader = LineReader(connect_client(listen_path))
        hello = reader.next(READY_TIMEOUT_S)
        check(hello is not None and hello.get("type") == "hello",
              "first message on the activated socket", "a hello", hello)
        with open(f"/proc/{daemon.pid}/comm") as f:
            comm = f.read().strip()
        check(comm == "tcptapd", "process after activation", "tcptapd", comm)
        log = daemon.log_text()
        check("Serving on the socket passed by systemd" in log, "daemon log",
              "serving on the passed socket", log)
        check(not os.path.exists(unused_path), "--socket path", "not created", unused_path)
        status = daemon.stop()
        check(status == 0, "exit status after SIGTERM", 0, status)
    finally:
        daemon.kill()


def netns_inode(name):
    return os.stat(f"/run/netns/{name}").st_ino


def start_pair(netns, port):
    """A loopback connection held by a process of user nobody in netns."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
         "--clear-groups", sys.executable, "-c", PAIR_SCRIPT, str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise Failure(f"connection helper in {netns}: expected its port, got {line!r}")
    return proc, int(line)


def stop_pair(proc):
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_unit_capabilities(tcptapd, service_unit, tmp):
    unit_caps = unit_setting(service_unit, "CapabilityBoundingSet").split()
    bounding = cap_mask(unit_caps)
    setpriv = ["setpriv", "--bounding-set=-all," + ",".join(
        "+" + c.lower().removeprefix("cap_") for c in unit_caps),
        "--inh-caps=-all", "--no-new-privs"]
    netns = f"tcptap-svc-{os.getpid()}"
    pairs = []
    subprocess.run(["ip", "netns", "add", netns], check=True)
    daemon = notify = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        inode = netns_inode(netns)
        # Opened before the daemon starts: must come as snapshot records.
        pairs.append(start_pair(netns, 41001))
        seeded_proc, seeded_port = pairs[0]

        daemon, notify, sock_path = start_daemon(tcptapd, tmp, "caps", prefix=setpriv)
        wait_ready(daemon, notify)

        expected = expected_runtime_caps()
        eff = int(status_field(daemon.pid, "CapEff"), 16)
        check(eff == expected, "CapEff after READY=1", hex(expected), hex(eff))
        prm = int(status_field(daemon.pid, "CapPrm"), 16)
        check(prm == expected, "CapPrm after READY=1", hex(expected), hex(prm))
        bnd = int(status_field(daemon.pid, "CapBnd"), 16)
        check(bnd == bounding, "CapBnd (the unit's set, no CAP_SETPCAP)", hex(bounding),
              hex(bnd))
        amb = int(status_field(daemon.pid, "CapAmb"), 16)
        check(amb == 0, "CapAmb", 0, hex(amb))
        nnp = status_field(daemon.pid, "NoNewPrivs")
        check(nnp == "1", "NoNewPrivs", 1, nnp)

        request = json.dumps({"filter": {"netns": inode}}).encode() + b"\n"
        reader = LineReader(connect_client(sock_path, request))
        snapshot = []
        while True:
            msg = reader.next(CLIENT_TIMEOUT_S)
            check(msg is not None, "snapshot", "ending in snapshot_end", snapshot)
            if msg["type"] == "snapshot_end":
                break
            if msg["type"] == "snapshot":
                snapshot.append(msg)
        seeded = [r for r in snapshot if seeded_port in (r["sport"], r["dport"])]
        check(len(seeded) == 2, "snapshot records of the connection opened before start",
              2, snapshot)
        for r in seeded:
            check(r["pid"] == seeded_proc.pid and r["uid"] == NOBODY,
                  "snapshot owner (needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)",
                  f"pid {seeded_proc.pid} uid {NOBODY}", r)

        # Opened and closed after READY=1: must come as live records.
        live_proc, live_port = start_pair(netns, 41002)
        pairs.append((live_proc, live_port))
        stop_pair(live_proc)
        expected_types = {"connect", "accept", "close"}
        seen = []
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while expected_types - {r["type"] for r in seen} and time.monotonic() < deadline:
            msg = reader.next(deadline - time.monotonic())
            if msg and msg.get("type") in expected_types and live_port in (msg["sport"], msg["dport"]):
                seen.append(msg)
        types = sorted(r["type"] for r in seen)
        check(expected_types <= set(types), "live records of the connection opened after start",
              sorted(expected_types), types)
        for r in seen:
            check(r["netns"] == inode and r["pid"] == live_proc.pid,
                  "live record attribution", f"netns {inode} pid {live_proc.pid}", r)

        log = daemon.log_text()
        check("keeping: cap_ipc_lock cap_perfmon" in log, "capability log line",
              "'keeping: cap_ipc_lock cap_perfmon'", log)
        status = daemon.stop()
        check(status == 0, "exit status after SIGTERM", 0, status)
    finally:
        for proc, _ in pairs:
            stop_pair(proc)
        if daemon:
            daemon.kill()
        if notify:
            notify.close()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def syscall_groups():
    """Map each group of `systemd-analyze syscall-filter` to its members."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.split()[0])
    return groups


def expand_syscalls(names, groups):
    result = set()
    for name in names:
        if name.startswith("@"):
            result |= expand_syscalls(groups[name], groups)
        else:
            result.add(name)
    return result


def unit_syscall_filter(unit_path):
    """The system calls that the unit's SystemCallFilter= lines allow."""
    groups = syscall_groups()
    allowed = None
    with open(unit_path) as f:
        for line in f:
            if not line.startswith("SystemCallFilter="):
                continue
            value = line.split("=", 1)[1].split()
            if value[0].startswith("~"):
                check(allowed is not None, "SystemCallFilter= order", "allow list first",
                      line.strip())
                allowed -= expand_syscalls([value[0][1:], *value[1:]], groups)
            else:
                allowed = (allowed or set()) | expand_syscalls(value, groups)
    check(allowed, "SystemCallFilter= in the unit", "an allow list", allowed)
    return allowed


def test_syscall_filter(tcptapd, service_unit, tmp):
    allowed = unit_syscall_filter(service_unit)
    trace = os.path.join(tmp, "strace.out")
    strace = ("strace", "-f", "-qq", "-o", trace)
    daemon, notify, sock_path = start_daemon(tcptapd, tmp, "strace", prefix=strace)
    try:
        wait_ready(daemon, notify)
        for command in (b'{"command":"stats"}\n', b"\n"):
            reader = LineReader(connect_client(sock_path, command))
            check(reader.next(CLIENT_TIMEOUT_S), "reply to a client", "a hello", None)
        # A loopback connection gives the event path something to carry.
        with socket.create_server(("127.0.0.1", 0)) as server:
            with socket.create_connection(server.getsockname()):
                server.accept()[0].close()
        time.sleep(1.5)  # one housekeeping tick
        # SIGTERM goes to the traced daemon; strace exits with its status.
        with open(f"/proc/{daemon.pid}/task/{daemon.pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        check(len(children) == 1, "processes under strace", "one", children)
        os.kill(children[0], signal.SIGTERM)
        exit_status = daemon.stop()
        check(exit_status == 0, "exit status after SIGTERM", 0, exit_status)
    finally:
        daemon.kill()
        notify.close()
    used = set()
    with open(trace) as f:
        for line in f:
            match = re.match(r"\d+\s+([a-z_0-9]+)\(", line)
            if match:
                used.add(match.group(1))
    # strace starts the daemon through execve(), which systemd does before
    # it applies the filter.
    used.discard("execve")
    check("bpf" in used and "perf_event_open" in used, "traced system calls",
          "bpf and perf_event_open among them", sorted(used))
    outside = sorted(used - allowed)
    check(not outside, "system calls outside SystemCallFilter=", "none", outside)


def test_unit_files(tcptapd, service_unit, socket_unit, tmp):
    # verify checks ExecStart= on this machine, where the package is not
    # installed: check a copy that runs the binary under test.
    copy_dir = os.path.join(tmp, "units")
    os.mkdir(copy_dir)
    with open(service_unit) as f:
        text = f.read()
    check("ExecStart=/usr/sbin/tcptapd\n" in text, "ExecStart=", "/usr/sbin/tcptapd",
          unit_setting(service_unit, "ExecStart"))
    with open(os.path.join(copy_dir, "tcptapd.service"), "w") as f:
        f.write(text.replace("ExecStart=/usr/sbin/tcptapd\n", f"ExecStart={tcptapd}\n"))
    shutil.copy(socket_unit, os.path.join(copy_dir, "tcptapd.socket"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no",
         os.path.join(copy_dir, "tcptapd.service"), os.path.join(copy_dir, "tcptapd.socket")],
        capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    check(result.returncode == 0 and not output, "systemd-analyze verify",
          "exit 0 and no message", f"exit {result.returncode}: {output}")

    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", service_unit],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    check(match, "systemd-analyze security output", "an overall exposure level",
          result.stdout[-500:] + result.stderr)
    exposure = float(match.group(1))
    print(f"# exposure level of {os.path.basename(service_unit)}: {exposure}")
    check(exposure <= MAX_EXPOSURE, "exposure level", f"<= {MAX_EXPOSURE}", exposure)


def main():
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    tcptapd, service_unit, socket_unit = (os.path.abspath(a) for a in sys.argv[1:])
    if os.geteuid() != 0:
        print("SKIP: needs root (loads BPF programs, creates a network namespace)")
        return 77

    tests = [
        ("unit files", lambda tmp: test_unit_files(tcptapd, service_unit, socket_unit, tmp)),
        ("readiness and stop", lambda tmp: test_readiness_and_stop(tcptapd, tmp)),
        ("watchdog other pid", lambda tmp: test_watchdog_other_pid(tcptapd, tmp)),
        ("socket activation", lambda tmp: test_socket_activation(tcptapd, tmp)),
        ("unit capabilities", lambda tmp: test_unit_capabilities(tcptapd, service_unit, tmp)),
        ("system call filter", lambda tmp: test_syscall_filter(tcptapd, service_unit, tmp)),
    ]
    passed = failed = 0
    for name, fn in tests:
        tmp = tempfile.mkdtemp(prefix="tcptap-service-")
        try:
            fn(tmp)
            print(f"ok {name}")
            passed += 1
        except (Failure, OSError, subprocess.CalledProcessError) as e:
            print(f"FAIL {name}: {e}")
            failed += 1
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
