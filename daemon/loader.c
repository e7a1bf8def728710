// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <linux/perf_event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "caps.h"
#include "loader.h"
#include "log.h"
#include "tcptap.skel.h"

#define MAX_EVENT_LINKS 4
#define REASON_BYTES 256

struct loader {
	struct tcptap_bpf *skel;
	enum backend backend;
	unsigned int ncpus;
	uint64_t sync_interval_ns;
	struct bpf_link *links[MAX_EVENT_LINKS];
	size_t nlinks;
	struct bpf_link **sync_links;	/* per CPU; NULL where not attached */
	struct bpf_link *waiters_link;	/* accept_waiter_exit while threads wait */
	int *sync_fds;			/* per CPU perf event fds; -1 where not open */
	const struct tcptap_batch *batches;	/* the batches map, mapped read-only */
	size_t batches_bytes;
	uint64_t test_attach_gap_ns;	/* see loader_config; 0 while probing backends */
};

static const char *const backend_names[] = {
	[BACKEND_AUTO] = "auto",
	[BACKEND_TRACEPOINT] = "tracepoint",
	[BACKEND_FENTRY] = "fentry",
	[BACKEND_KPROBE] = "kprobe",
};

/* Preference of --backend auto. The tracepoint backend comes first: its
 * hooks are a stable kernel ABI and see every state change, while
 * tcp_set_state() can be inlined into some of its callers, which fentry and
 * kprobes on it would miss. fentry costs less per call than a kprobe. */
static const enum backend auto_order[] = { BACKEND_TRACEPOINT, BACKEND_FENTRY, BACKEND_KPROBE };

int backend_from_string(const char *s, enum backend *ret_backend)
{
	for (size_t i = 0; i < sizeof(backend_names) / sizeof(backend_names[0]); i++)
		if (strcmp(s, backend_names[i]) == 0) {
			*ret_backend = (enum backend)i;
			return 0;
		}
	return -EINVAL;
}

const char *backend_to_string(enum backend b)
{
	if ((size_t)b >= sizeof(backend_names) / sizeof(backend_names[0]))
		return "unknown";
	return backend_names[b];
}

static int libbpf_print_debug(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	size_t len;

	if (log_get_max_level() < LOG_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	len = strlen(line);
	if (len > 0 && line[len - 1] == '\n')
		line[len - 1] = '\0';
	log_debug("libbpf: %s", line);
	return 0;
}

static struct bpf_program *const *backend_programs(struct tcptap_bpf *skel, enum backend b,
						   size_t *ret_count)
{
	static struct bpf_program *progs[MAX_EVENT_LINKS];

	switch (b) {
	case BACKEND_TRACEPOINT:
		progs[0] = skel->progs.tp_state;
		progs[1] = skel->progs.tp_destroy;
		progs[2] = skel->progs.tp_accept4_exit;
		progs[3] = skel->progs.tp_accept_exit;
		*ret_count = 4;
		break;
	case BACKEND_FENTRY:
		progs[0] = skel->progs.fentry_state;
		progs[1] = skel->progs.fentry_destroy;
		progs[2] = skel->progs.fexit_accept;
		*ret_count = 3;
		break;
	case BACKEND_KPROBE:
		progs[0] = skel->progs.kprobe_state;
		progs[1] = skel->progs.kprobe_destroy;
		progs[2] = skel->progs.kprobe_accept_ret;
		*ret_count = 3;
		break;
	default:
		*ret_count = 0;
	}
	return progs;
}

static void disable_other_backends(struct tcptap_bpf *skel, enum backend chosen)
{
	for (size_t i = 0; i < sizeof(auto_order) / sizeof(auto_order[0]); i++) {
		struct bpf_program *const *progs;
		size_t n;

		if (auto_order[i] == chosen)
			continue;
		progs = backend_programs(skel, auto_order[i], &n);
		for (size_t j = 0; j < n; j++)
			bpf_program__set_autoload(progs[j], false);
	}
	/* Run on demand through BPF_PROG_TEST_RUN, or attached to perf events
	 * by loader_attach_sync(). */
	bpf_program__set_autoattach(skel->progs.tcptap_sync_now, false);
	bpf_program__set_autoattach(skel->progs.tcptap_sync_timer, false);
	/* Attached by loader_watch_accept_waiters(), only while needed. The
	 * tracepoint backend reports those accepts through its syscall
	 * tracepoints. */
	bpf_program__set_autoattach(skel->progs.accept_waiter_exit, false);
	bpf_program__set_autoload(skel->progs.accept_waiter_exit, chosen != BACKEND_TRACEPOINT);
}

static bool path_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Whether CAP_BPF and CAP_PERFMON are effective, or CAP_SYS_ADMIN, which
 * passes the same checks. uid 0 alone proves nothing: a service manager can
 * start root with a reduced bounding set. */
static bool has_load_capabilities(void)
{
	const uint64_t load_caps = CAPS_BIT(CAP_PERFMON) | CAPS_BIT(CAP_BPF);
	struct caps_state cur;

	if (caps_get(&cur) < 0)
		return geteuid() == 0;
	return (cur.effective & load_caps) == load_caps ||
	       (cur.effective & CAPS_BIT(CAP_SYS_ADMIN));
}

/* One line an operator can act on, for a backend that failed with err. */
static void explain_failure(enum backend b, const char *step, const char *prog, int err,
			    char *reason, size_t size)
{
	const char *hint = "";

	if (!path_exists("/sys/kernel/btf/vmlinux"))
		hint = "; the kernel has no BTF (/sys/kernel/btf/vmlinux), build it with "
		       "CONFIG_DEBUG_INFO_BTF=y";
	else if (b == BACKEND_KPROBE && !path_exists("/sys/bus/event_source/devices/kprobe"))
		hint = "; this kernel has no kprobe support (CONFIG_KPROBES)";
	else if (b == BACKEND_TRACEPOINT && err == ENOENT &&
		 !path_exists("/sys/kernel/tracing/events") &&
		 !path_exists("/sys/kernel/debug/tracing/events"))
		hint = "; tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing";
	else if ((err == EPERM || err == EACCES) && !has_load_capabilities())
		hint = "; loading needs CAP_BPF and CAP_PERFMON: run as root or through "
		       "tcptapd.service";
	else if (err == EPERM || err == EACCES)
		hint = "; the kernel refuses this program type even to root (lockdown, a "
		       "security module or missing BPF trampoline support)";

	if (prog)
		snprintf(reason, size, "failed to %s prog '%s': %s%s", step, prog, strerror(err),
			 hint);
	else
		snprintf(reason, size, "failed to %s: %s%s", step, strerror(err), hint);
}

static void detach_events(struct loader *l)
{
	for (size_t i = 0; i < l->nlinks; i++)
		bpf_link__destroy(l->links[i]);
	l->nlinks = 0;
}

/* Attach the event programs of l's backend. On failure nothing stays
 * attached and reason contains the cause. */
static int attach_events(struct loader *l, char *reason, size_t size)
{
	struct bpf_program *const *progs;
	size_t n;

	progs = backend_programs(l->skel, l->backend, &n);
	for (size_t i = 0; i < n; i++) {
		struct bpf_link *link;

		/* Test option: widens the window in which state changes are
		 * traced and accepts are not. */
		if (i == 1 && l->test_attach_gap_ns > 0) {
			struct timespec pause = {
				.tv_sec = (time_t)(l->test_attach_gap_ns / 1000000000),
				.tv_nsec = (long)(l->test_attach_gap_ns % 1000000000),
			};

			while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
				;
		}
		link = bpf_program__attach(progs[i]);
		if (!link) {
			int err = errno;

			explain_failure(l->backend, "attach", bpf_program__name(progs[i]), err,
					reason, size);
			detach_events(l);
			return -err;
		}
		l->links[l->nlinks++] = link;
	}
	return 0;
}

/* Open and load backend b into l, and attach its event programs if attach is
 * set. On failure l keeps nothing loaded and reason contains the cause. */
static int try_backend(const struct loader_config *cfg, enum backend b, bool attach,
		       struct loader *l, char *reason, size_t size)
{
	struct tcptap_bpf *skel;
	int err;

	skel = tcptap_bpf__open();
	if (!skel) {
		err = errno;
		explain_failure(b, "open the BPF object", NULL, err, reason, size);
		return -err;
	}

	disable_other_backends(skel, b);
	skel->rodata->test_stall_ns = cfg->test_stall_ns;
	skel->rodata->test_stall_cpu = cfg->test_stall_cpu;
	skel->rodata->test_stall_netns = cfg->test_stall_netns;
	skel->rodata->batch_records = cfg->batch_records;
	err = bpf_map__set_max_entries(skel->maps.batches, (uint32_t)libbpf_num_possible_cpus());
	if (!err)
		err = bpf_map__set_max_entries(skel->maps.conns, cfg->conn_map_entries);
	if (!err)
		err = bpf_map__set_max_entries(skel->maps.seeded, cfg->conn_map_entries);
	if (err) {
		explain_failure(b, "size the connection maps", NULL, -err, reason, size);
		tcptap_bpf__destroy(skel);
		return err;
	}

	err = tcptap_bpf__load(skel);
	if (err) {
		explain_failure(b, "load the BPF programs", NULL, -err, reason, size);
		tcptap_bpf__destroy(skel);
		return err;
	}

	l->skel = skel;
	l->backend = b;
	if (!attach)
		return 0;
	err = attach_events(l, reason, size);
	if (err < 0) {
		tcptap_bpf__destroy(skel);
		l->skel = NULL;
	}
	return err;
}

static void release_backend(struct loader *l)
{
	detach_events(l);
	tcptap_bpf__destroy(l->skel);
	l->skel = NULL;
}

/*
 * Probe every backend by loading and attaching it, then load the preferred
 * one that worked again, without attaching: tcptapd opens the perf rings
 * before loader_attach(), so no record is written before a ring exists.
 */
static int choose_backend(const struct loader_config *cfg, struct loader *l)
{
	char reasons[3][REASON_BYTES] = { "", "", "" };
	enum backend chosen = BACKEND_AUTO;
	int first_err = 0, err;

	for (size_t i = 0; i < 3; i++) {
		struct loader probe = { 0 };

		err = try_backend(cfg, auto_order[i], true, &probe, reasons[i], REASON_BYTES);
		if (err < 0) {
			if (!first_err)
				first_err = err;
			continue;
		}
		release_backend(&probe);
		if (chosen == BACKEND_AUTO)
			chosen = auto_order[i];
		else
			snprintf(reasons[i], REASON_BYTES, "works, but %s is preferred",
				 backend_to_string(chosen));
	}

	for (size_t i = 0; i < 3; i++) {
		if (auto_order[i] == chosen)
			continue;
		log_notice("Backend '%s' rejected: %s", backend_to_string(auto_order[i]),
			   reasons[i]);
	}
	if (chosen == BACKEND_AUTO) {
		log_error("Failed to find a working backend; see the reasons above");
		return first_err;
	}

	err = try_backend(cfg, chosen, false, l, reasons[0], REASON_BYTES);
	if (err < 0) {
		log_error("Failed to load backend '%s' after probing it: %s",
			  backend_to_string(chosen), reasons[0]);
		return err;
	}
	log_notice("Using backend '%s' (--backend auto)", backend_to_string(chosen));
	return 0;
}

int loader_attach(struct loader *l)
{
	char reason[REASON_BYTES];
	int err;

	err = attach_events(l, reason, sizeof(reason));
	if (err < 0)
		log_error("Backend '%s' unavailable: %s", backend_to_string(l->backend), reason);
	return err;
}

static int perf_event_open_cpu_clock(unsigned int cpu, uint64_t period_ns)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.size = sizeof(attr),
		.config = PERF_COUNT_SW_CPU_CLOCK,
		.sample_period = period_ns,	/* cpu-clock counts nanoseconds */
	};
	long fd;

	fd = syscall(__NR_perf_event_open, &attr, -1, (int)cpu, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd < 0)
		return -errno;
	return (int)fd;
}

int loader_attach_sync(struct loader *l, unsigned int cpu)
{
	struct bpf_link *link;
	int fd, err;

	if (cpu >= l->ncpus)
		return -EINVAL;
	loader_detach_sync(l, cpu);

	fd = perf_event_open_cpu_clock(cpu, l->sync_interval_ns);
	if (fd < 0)
		return fd;
	link = bpf_program__attach_perf_event(l->skel->progs.tcptap_sync_timer, fd);
	if (!link) {
		err = -errno;
		close(fd);
		return err;
	}
	l->sync_fds[cpu] = fd;
	l->sync_links[cpu] = link;
	return 0;
}

void loader_detach_sync(struct loader *l, unsigned int cpu)
{
	if (cpu >= l->ncpus)
		return;
	if (l->sync_links[cpu]) {
		bpf_link__destroy(l->sync_links[cpu]);
		l->sync_links[cpu] = NULL;
	}
	if (l->sync_fds[cpu] >= 0) {
		close(l->sync_fds[cpu]);
		l->sync_fds[cpu] = -1;
	}
}

int loader_sync_now(struct loader *l, unsigned int cpu)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .flags = BPF_F_TEST_RUN_ON_CPU, .cpu = cpu);
	int err;

	err = bpf_prog_test_run_opts(bpf_program__fd(l->skel->progs.tcptap_sync_now), &opts);
	return err < 0 ? -errno : 0;
}

int loader_batched_records(const struct loader *l, unsigned int cpu, uint64_t *ret_count,
			   uint64_t *ret_cpu_count)
{
	uint64_t total = 0;

	if (!l->batches)
		return -ENODATA;
	for (unsigned int i = 0; i < l->ncpus; i++)
		total += __atomic_load_n(&l->batches[i].count, __ATOMIC_RELAXED);
	*ret_count = total;
	if (ret_cpu_count)
		*ret_cpu_count = cpu < l->ncpus ?
			__atomic_load_n(&l->batches[cpu].count, __ATOMIC_RELAXED) : 0;
	return 0;
}

int loader_tracked_cookies(const struct loader *l, struct cookie_set *set)
{
	int conns_fd = bpf_map__fd(l->skel->maps.conns);
	int seeded_fd = bpf_map__fd(l->skel->maps.seeded);
	size_t steps = 0, max_steps = 2 * (size_t)bpf_map__max_entries(l->skel->maps.conns);
	uint64_t key, next;
	void *prev;
	int err = 0;

	/* Entries can vanish while the maps are walked. A key that is gone
	 * makes bpf_map_get_next_key() restart from the first key, so some
	 * entries may be visited twice, and the walk is bounded. */
	for (prev = NULL; err == 0 && steps++ < max_steps &&
	     bpf_map_get_next_key(conns_fd, prev, &next) == 0; prev = &key) {
		struct conn_state state;

		key = next;
		if (bpf_map_lookup_elem(conns_fd, &key, &state) == 0 && state.phase == PHASE_LIVE)
			err = cookie_set_add(set, state.cookie);
	}
	steps = 0;
	for (prev = NULL; err == 0 && steps++ < max_steps &&
	     bpf_map_get_next_key(seeded_fd, prev, &next) == 0; prev = &key) {
		key = next;
		err = cookie_set_add(set, key);
	}
	return err;
}

int loader_read_counters(const struct loader *l, uint64_t ret_totals[TCPTAP_CNT_MAX])
{
	int fd = bpf_map__fd(l->skel->maps.counters);
	uint64_t totals[TCPTAP_CNT_MAX] = { 0 };
	uint64_t *values;

	values = calloc(l->ncpus, sizeof(*values));
	if (!values)
		return -ENOMEM;
	for (uint32_t slot = 0; slot < TCPTAP_CNT_MAX; slot++) {
		if (bpf_map_lookup_elem(fd, &slot, values) < 0) {
			int err = -errno;

			free(values);
			return err;
		}
		for (unsigned int cpu = 0; cpu < l->ncpus; cpu++)
			totals[slot] += values[cpu];
	}
	free(values);
	memcpy(ret_totals, totals, sizeof(totals));
	return 0;
}

uint64_t loader_recursion_misses(const struct loader *l)
{
	struct bpf_program *const *progs;
	uint64_t total = 0;
	size_t n;

	/* The programs' own descriptors, not BPF_PROG_GET_FD_BY_ID on the
	 * links' program ids: that command needs CAP_SYS_ADMIN, which tcptapd
	 * drops after start-up. */
	progs = backend_programs(l->skel, l->backend, &n);
	for (size_t i = 0; i < n; i++) {
		struct bpf_prog_info info = { 0 };
		__u32 len = sizeof(info);

		if (bpf_obj_get_info_by_fd(bpf_program__fd(progs[i]), &info, &len) == 0)
			total += info.recursion_misses;
	}
	return total;
}

enum backend loader_backend(const struct loader *l)
{
	return l->backend;
}

int loader_events_fd(const struct loader *l)
{
	return bpf_map__fd(l->skel->maps.events);
}

/*
 * The programs look a cookie up in seeded only if it lies within
 * [seeded_cookie_min, seeded_cookie_max]. The range is widened before the
 * insert, and the fence makes the new range visible to them before the entry.
 * Only this thread writes the range.
 */
int loader_add_seed(struct loader *l, uint64_t cookie, const struct tcptap_owner *owner)
{
	__u64 *min = &l->skel->bss->seeded_cookie_min;
	__u64 *max = &l->skel->bss->seeded_cookie_max;

	if (*min == 0 || cookie < *min)
		__atomic_store_n(min, cookie, __ATOMIC_RELAXED);
	if (cookie > *max)
		__atomic_store_n(max, cookie, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);

	if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.seeded), &cookie, owner, BPF_ANY) < 0)
		return -errno;
	return 0;
}

int loader_remove_seed(struct loader *l, uint64_t cookie)
{
	if (bpf_map_delete_elem(bpf_map__fd(l->skel->maps.seeded), &cookie) < 0)
		return -errno;
	return 0;
}

/* Maps the batches map read-only, so the release tick reads the counts of
 * records waiting in the batches without a system call. The map's elements
 * are laid out back to back, sizeof(struct tcptap_batch) apart. */
static int map_batches(struct loader *l)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t bytes = l->ncpus * sizeof(struct tcptap_batch);
	void *p;

	_Static_assert(sizeof(struct tcptap_batch) % 64 == 0, "batch not a whole cache line");
	bytes = (bytes + page - 1) / page * page;
	p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, bpf_map__fd(l->skel->maps.batches), 0);
	if (p == MAP_FAILED)
		return -errno;
	l->batches = p;
	l->batches_bytes = bytes;
	return 0;
}

int loader_open(const struct loader_config *cfg, struct loader **ret_loader)
{
	struct loader *l;
	int ncpus, err;

	libbpf_set_print(libbpf_print_debug);

	ncpus = libbpf_num_possible_cpus();
	if (ncpus <= 0)
		return ncpus < 0 ? ncpus : -EINVAL;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ncpus = (unsigned int)ncpus;
	l->sync_interval_ns = cfg->sync_interval_ns;
	l->sync_links = calloc(l->ncpus, sizeof(*l->sync_links));
	l->sync_fds = malloc(l->ncpus * sizeof(*l->sync_fds));
	if (!l->sync_links || !l->sync_fds) {
		loader_free(l);
		return -ENOMEM;
	}
	for (unsigned int cpu = 0; cpu < l->ncpus; cpu++)
		l->sync_fds[cpu] = -1;

	if (cfg->backend == BACKEND_AUTO) {
		err = choose_backend(cfg, l);
	} else {
		char reason[REASON_BYTES];

		err = try_backend(cfg, cfg->backend, false, l, reason, sizeof(reason));
		if (err < 0)
			log_error("Backend '%s' unavailable: %s", backend_to_string(cfg->backend),
				  reason);
		else
			log_notice("Using backend '%s' (--backend %s)",
				   backend_to_string(cfg->backend),
				   backend_to_string(cfg->backend));
	}
	if (err < 0) {
		loader_free(l);
		return err;
	}

	err = map_batches(l);
	if (err < 0) {
		log_error("Failed to map the batches map: %s", strerror(-err));
		loader_free(l);
		return err;
	}

	l->test_attach_gap_ns = cfg->test_attach_gap_ns;
	*ret_loader = l;
	return 0;
}

int loader_watch_accept_waiters(struct loader *l, const uint32_t *tids, size_t count)
{
	int fd, err;

	if (l->backend == BACKEND_TRACEPOINT || count == 0)
		return 0;
	fd = bpf_map__fd(l->skel->maps.accept_waiters);
	for (size_t i = 0; i < count; i++) {
		uint8_t one = 1;

		if (bpf_map_update_elem(fd, &tids[i], &one, BPF_ANY) < 0)
			return -errno;
	}
	if (l->waiters_link)
		return 0;
	l->waiters_link = bpf_program__attach(l->skel->progs.accept_waiter_exit);
	if (!l->waiters_link) {
		err = -errno;
		return err;
	}
	return 0;
}

void loader_check_accept_waiters(struct loader *l)
{
	uint32_t key;

	if (!l->waiters_link)
		return;
	if (bpf_map_get_next_key(bpf_map__fd(l->skel->maps.accept_waiters), NULL, &key) == 0)
		return;
	bpf_link__destroy(l->waiters_link);
	l->waiters_link = NULL;
}

void loader_free(struct loader *l)
{
	if (!l)
		return;
	bpf_link__destroy(l->waiters_link);
	if (l->sync_links && l->sync_fds)
		for (unsigned int cpu = 0; cpu < l->ncpus; cpu++)
			loader_detach_sync(l, cpu);
	if (l->skel)
		release_backend(l);
	free(l->sync_links);
	free(l->sync_fds);
	if (l->batches)
		munmap((void *)l->batches, l->batches_bytes);
	free(l);
}
