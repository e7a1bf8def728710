// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Capability drop of tcptapd, checked against /proc/self/status and against
 * the kernel: after the drop, the operations the running daemon performs
 * still work and loading a program or entering a namespace no longer does.
 * Every case runs in a forked child, so its capability changes stay there.
 * Needs root (exit 77 without CAP_SETPCAP, CAP_SYS_ADMIN and CAP_BPF).
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/capability.h>

#include <bpf/bpf.h>

#include "caps.h"
#include "log.h"

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define CHECK_MASK(expected, actual)                                                      \
	do {                                                                              \
		uint64_t e_ = (expected), a_ = (actual);                                  \
		if (e_ != a_) {                                                           \
			char en_[1024], an_[1024];                                        \
			caps_format(e_, en_, sizeof(en_));                                \
			caps_format(a_, an_, sizeof(an_));                                \
			fprintf(stderr, "%s:%d: %s: expected %#" PRIx64 " (%s), got %#"  \
				PRIx64 " (%s)\n", __FILE__, __LINE__, #actual, e_, en_, a_, an_); \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define CHECK_ERRNO(expected, actual)                                                     \
	do {                                                                              \
		int e_ = (expected), a_ = (actual);                                       \
		if (e_ != a_) {                                                           \
			fprintf(stderr, "%s:%d: %s: expected %s, got %s\n", __FILE__,    \
				__LINE__, #actual, e_ ? strerror(e_) : "success",         \
				a_ ? strerror(a_) : "success");                           \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define PERFMON CAPS_BIT(38)
#define BPF CAPS_BIT(39)
#define SYS_ADMIN CAPS_BIT(CAP_SYS_ADMIN)
#define SETPCAP CAPS_BIT(CAP_SETPCAP)
#define IPC_LOCK CAPS_BIT(CAP_IPC_LOCK)
#define SYNC_PERIOD_NS 10000000

/* Objects made with full capabilities, as tcptapd makes them at start. */
struct objects {
	int map_fd;
	int raw_tp_fd;		/* run with BPF_PROG_TEST_RUN, like the on-demand sync */
	int perf_prog_fd;	/* attached to a cpu-clock event, like the periodic sync */
};

/* Parse a hexadecimal "CapEff:" style line of a /proc/<pid>/status file. */
static uint64_t status_mask(const char *path, const char *key)
{
	char line[256];
	uint64_t value = 0;
	bool found = false;
	FILE *f = fopen(path, "re");

	CHECK(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':') {
			value = strtoull(line + strlen(key) + 1, NULL, 16);
			found = true;
		}
	fclose(f);
	CHECK(found);
	return value;
}

static uint64_t self_mask(const char *key)
{
	return status_mask("/proc/self/status", key);
}

static void set_sets(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = {
		{ (uint32_t)effective, (uint32_t)permitted, (uint32_t)inheritable },
		{ (uint32_t)(effective >> 32), (uint32_t)(permitted >> 32),
		  (uint32_t)(inheritable >> 32) },
	};

	CHECK(syscall(SYS_capset, &header, data) == 0);
}

static int load_trivial(enum bpf_prog_type type)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};

	return bpf_prog_load(type, "test_caps", "GPL", insns, 2, NULL);
}

static struct objects make_objects(void)
{
	struct objects o;

	o.map_fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "test_caps", 4, 8, 4, NULL);
	o.raw_tp_fd = load_trivial(BPF_PROG_TYPE_RAW_TRACEPOINT);
	o.perf_prog_fd = load_trivial(BPF_PROG_TYPE_PERF_EVENT);
	CHECK(o.map_fd >= 0);
	CHECK(o.raw_tp_fd >= 0);
	CHECK(o.perf_prog_fd >= 0);
	return o;
}

static int open_cpu_clock(int cpu)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.size = sizeof(attr),
		.config = PERF_COUNT_SW_CPU_CLOCK,
		.sample_period = SYNC_PERIOD_NS,
	};

	return (int)syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* Data pages of a perf ring bigger than the locked-memory allowance of
 * kernel.perf_event_mlock_kb per online CPU, a power of two as perf requires. */
static size_t pages_over_allowance(void)
{
	long page = sysconf(_SC_PAGESIZE), cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long mlock_kb = 0;
	size_t pages = 1;
	FILE *f = fopen("/proc/sys/kernel/perf_event_mlock_kb", "re");

	CHECK(f);
	CHECK(fscanf(f, "%lu", &mlock_kb) == 1);
	fclose(f);
	while (pages <= mlock_kb * 1024 / (unsigned long)page * (unsigned long)cpus)
		pages *= 2;
	return pages;
}

/* What tcptapd does after the drop: each must still succeed. */
static void check_runtime_operations(const struct objects *o)
{
	LIBBPF_OPTS(bpf_test_run_opts, run, .flags = BPF_F_TEST_RUN_ON_CPU, .cpu = 0);
	struct bpf_prog_info info = { 0 };
	__u32 info_len = sizeof(info);
	uint64_t values[1024] = { 0 };
	uint32_t key = 1;
	int perf_fd, link_fd;

	CHECK_ERRNO(0, bpf_map_lookup_elem(o->map_fd, &key, values) ? errno : 0);
	CHECK_ERRNO(0, bpf_map_update_elem(o->map_fd, &key, values, BPF_ANY) ? errno : 0);
	CHECK_ERRNO(0, bpf_prog_test_run_opts(o->raw_tp_fd, &run) ? errno : 0);
	CHECK_ERRNO(0, bpf_obj_get_info_by_fd(o->raw_tp_fd, &info, &info_len) ? errno : 0);

	perf_fd = open_cpu_clock(0);
	CHECK_ERRNO(0, perf_fd < 0 ? errno : 0);
	link_fd = bpf_link_create(o->perf_prog_fd, perf_fd, BPF_PERF_EVENT, NULL);
	CHECK_ERRNO(0, link_fd < 0 ? errno : 0);
	close(link_fd);

	/* A new set of rings while the old one is mapped: with RLIMIT_MEMLOCK
	 * at 0, only CAP_IPC_LOCK lets pages beyond the allowance be locked. */
	const struct rlimit no_memlock = { 0, 0 };
	size_t ring_bytes = (1 + pages_over_allowance()) * (size_t)sysconf(_SC_PAGESIZE);
	void *ring;

	CHECK(setrlimit(RLIMIT_MEMLOCK, &no_memlock) == 0);
	ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, perf_fd, 0);
	CHECK_ERRNO(0, ring == MAP_FAILED ? errno : 0);
	munmap(ring, ring_bytes);
	close(perf_fd);
}

/* What the daemon must no longer be able to do. */
static void check_privileged_operations_fail(void)
{
	int fd = load_trivial(BPF_PROG_TYPE_RAW_TRACEPOINT);

	CHECK_ERRNO(EPERM, fd < 0 ? errno : 0);
	CHECK_ERRNO(EPERM, unshare(CLONE_NEWNET) < 0 ? errno : 0);
}

/* Independent of caps.c: whether this kernel rejects a bpf() command on a
 * descriptor from a process without CAP_BPF and CAP_SYS_ADMIN. */
static bool kernel_gates_fd_commands(void)
{
	pid_t pid = fork();
	int status;

	CHECK(pid >= 0);
	if (pid == 0) {
		union bpf_attr attr = { .info.bpf_fd = UINT32_MAX };
		uint64_t eff = self_mask("CapEff");

		set_sets(eff & ~(BPF | SYS_ADMIN), eff & ~(BPF | SYS_ADMIN), 0);
		_exit(syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) < 0 &&
		      errno == EPERM);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	return WEXITSTATUS(status) == 1;
}

static uint64_t expected_runtime;

static void case_root(void)
{
	struct objects o = make_objects();

	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK(expected_runtime, self_mask("CapEff"));
	CHECK_MASK(expected_runtime, self_mask("CapPrm"));
	CHECK_MASK(expected_runtime, self_mask("CapBnd"));
	CHECK_MASK(0, self_mask("CapInh"));
	CHECK_MASK(0, self_mask("CapAmb"));
	CHECK(self_mask("NoNewPrivs") == 1);
	check_runtime_operations(&o);
	check_privileged_operations_fail();
}

/* As under tcptapd.service: no CAP_SETPCAP, so the bounding set stays, and
 * no_new_privs must keep an execve() by uid 0 from regaining capabilities. */
static void case_no_setpcap(void)
{
	uint64_t eff = self_mask("CapEff") & ~SETPCAP;
	uint64_t bounding = self_mask("CapBnd");
	struct objects o = make_objects();
	char path[64];
	int status;
	pid_t pid;

	set_sets(eff, eff, 0);
	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK(expected_runtime, self_mask("CapEff"));
	CHECK_MASK(expected_runtime, self_mask("CapPrm"));
	CHECK_MASK(bounding, self_mask("CapBnd"));
	check_runtime_operations(&o);
	check_privileged_operations_fail();

	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		execl("/bin/sleep", "sleep", "5", (char *)NULL);
		_exit(127);
	}
	/* Give the execve() time to finish before reading its status. */
	for (int i = 0; i < 100; i++) {
		char comm[32] = "";
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
		f = fopen(path, "re");
		if (f && fgets(comm, sizeof(comm), f) && strcmp(comm, "sleep\n") == 0) {
			fclose(f);
			break;
		}
		if (f)
			fclose(f);
		usleep(10000);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	CHECK_MASK(expected_runtime, status_mask(path, "CapPrm"));
	CHECK_MASK(expected_runtime, status_mask(path, "CapEff"));
	kill(pid, SIGKILL);
	CHECK(waitpid(pid, &status, 0) == pid);
}

/* As with AmbientCapabilities=: the ambient and inheritable sets go. */
static void case_ambient(void)
{
	uint64_t eff = self_mask("CapEff");

	set_sets(eff, eff, PERFMON | CAPS_BIT(CAP_NET_ADMIN));
	CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 38, 0, 0) == 0);
	CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) == 0);
	CHECK_MASK(PERFMON | CAPS_BIT(CAP_NET_ADMIN), self_mask("CapAmb"));

	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK(0, self_mask("CapAmb"));
	CHECK_MASK(0, self_mask("CapInh"));
	CHECK_MASK(expected_runtime, self_mask("CapEff"));
}

/* Without CAP_PERFMON, CAP_SYS_ADMIN is what passes its checks: keep it. */
static void case_sys_admin_substitute(void)
{
	uint64_t eff = self_mask("CapEff") & ~PERFMON;
	struct objects o = make_objects();

	set_sets(eff, eff, 0);
	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK((expected_runtime & ~PERFMON) | SYS_ADMIN, self_mask("CapEff"));
	check_runtime_operations(&o);
}

/* A daemon started with fewer capabilities keeps only what it has. */
static void case_partial(void)
{
	CHECK(prctl(PR_CAPBSET_DROP, 38, 0, 0, 0) == 0);
	set_sets(BPF | SETPCAP, BPF | SETPCAP, 0);
	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK(expected_runtime & BPF, self_mask("CapEff"));
	CHECK_MASK(expected_runtime & BPF, self_mask("CapPrm"));

	set_sets(0, 0, 0);
	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK_MASK(0, self_mask("CapEff"));
}

static void case_twice(void)
{
	struct caps_state first, second;

	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK(caps_get(&first) == 0);
	CHECK_ERRNO(0, -caps_drop_after_attach());
	CHECK(caps_get(&second) == 0);
	CHECK_MASK(first.effective, second.effective);
	CHECK_MASK(first.bounding, second.bounding);
	CHECK_MASK(expected_runtime, second.permitted);
}

/* caps_get() against /proc/self/status, before any change. */
static void case_get(void)
{
	struct caps_state s;

	CHECK(caps_get(&s) == 0);
	CHECK_MASK(self_mask("CapEff"), s.effective);
	CHECK_MASK(self_mask("CapPrm"), s.permitted);
	CHECK_MASK(self_mask("CapInh"), s.inheritable);
	CHECK_MASK(self_mask("CapBnd"), s.bounding);
	CHECK_MASK(self_mask("CapAmb"), s.ambient);
}

static void case_format(void)
{
	char buf[64], tiny[8];

	caps_format(BPF | PERFMON, buf, sizeof(buf));
	CHECK(strcmp(buf, "cap_perfmon cap_bpf") == 0);
	caps_format(0, buf, sizeof(buf));
	CHECK(strcmp(buf, "none") == 0);
	caps_format(CAPS_BIT(50) | CAPS_BIT(CAP_CHOWN), buf, sizeof(buf));
	CHECK(strcmp(buf, "cap_chown cap_50") == 0);
	memset(tiny, 'x', sizeof(tiny));
	caps_format(BPF | PERFMON, tiny, sizeof(tiny));
	CHECK(strlen(tiny) == sizeof(tiny) - 1);
}

static int run_case(const char *name, void (*fn)(void))
{
	int status;
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		fn();
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		printf("ok %s\n", name);
		return 0;
	}
	printf("FAIL %s (status %#x)\n", name, status);
	return 1;
}

int main(void)
{
	const uint64_t required = SETPCAP | SYS_ADMIN | BPF | PERFMON | IPC_LOCK;
	int failed = 0;

	log_set_prefix(false);
	log_set_max_level(LOG_INFO);
	if ((self_mask("CapEff") & required) != required) {
		printf("SKIP: needs root (CAP_SETPCAP, CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON, "
		       "CAP_IPC_LOCK)\n");
		return 77;
	}
	expected_runtime = PERFMON | IPC_LOCK | (kernel_gates_fd_commands() ? BPF : 0);

	failed += run_case("format", case_format);
	failed += run_case("get", case_get);
	failed += run_case("root", case_root);
	failed += run_case("no-setpcap", case_no_setpcap);
	failed += run_case("ambient", case_ambient);
	failed += run_case("sys-admin-substitute", case_sys_admin_substitute);
	failed += run_case("partial", case_partial);
	failed += run_case("twice", case_twice);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
