// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "caps.h"
#include "conn_table.h"
#include "cookie_set.h"
#include "history.h"
#include "loader.h"
#include "log.h"
#include "merger.h"
#include "ring_reader.h"
#include "sd_glue.h"
#include "seed.h"
#include "server.h"

#define DEFAULT_SOCKET_PATH "/run/tcptap/tcptapd.sock"
#define SOCKET_GROUP "tcptap"
#define DEFAULT_SYNC_INTERVAL_MS 10
#define DEFAULT_MAX_HOLD_MS 100
#define DEFAULT_PERF_PAGES 128
#define DEFAULT_MAX_CONNECTIONS 65536
#define DEFAULT_HISTORY_RECORDS 16384
#define DEFAULT_CLIENT_QUEUE_BYTES (4 * 1024 * 1024)
#define DEFAULT_MAX_CLIENTS 64
#define REQUEST_WAIT_MS 100
#define SHUTDOWN_FLUSH_MS 1000
#define HOUSEKEEPING_INTERVAL_NS (1000ULL * 1000 * 1000)
#define TICK_ACCURACY_USEC 1
#define SUMMARY_INTERVAL_NS (300ULL * 1000 * 1000 * 1000)
#define MAX_PENDING_RECORDS (1u << 20)
#define FRONTIER_WAIT_NS (1000ULL * 1000 * 1000)
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_USEC UINT64_C(1000)

struct options {
	const char *socket_path;
	enum backend backend;
	uint64_t sync_interval_ms;
	uint64_t max_hold_ms;
	uint64_t perf_pages;
	int log_level;
	uint64_t max_connections;
	uint64_t history_records;
	uint64_t client_queue_bytes;
	uint64_t max_clients;
	enum merger_rule release_rule;
	uint64_t test_stall_cpu;
	uint64_t test_stall_ms;
	uint64_t test_stall_netns;
	uint64_t test_attach_gap_ms;
};

/* Counters of what tcptapd published or held back, by reason. */
struct daemon_counters {
	uint64_t published[TCPTAP_EV_SYNC];	/* by enum tcptap_event_type */
	uint64_t lost_notices;	/* lost records published */
	uint64_t lost;		/* records they count */
	uint64_t late;
	uint64_t dropped_duplicate;
	uint64_t dropped_orphan;
	uint64_t inferred_closes;
};

struct daemon {
	struct options opt;
	sd_event *loop;
	struct loader *loader;
	struct merger *merger;
	struct ring_reader *reader;
	sd_event_source *ring_source;
	bool socket_created;		/* tcptapd bound the socket file itself */
	struct conn_table *table;
	struct history *history;
	struct server *server;
	unsigned int ncpus;
	bool *online;
	uint64_t seq;
	uint64_t started_ns;
	uint64_t last_summary_ns;
	uint64_t last_misses;
	uint64_t last_output_failed;
	uint64_t logged_misses;		/* totals at the last warning about them */
	uint64_t logged_output_failed;
	uint64_t last_table_full;	/* conn_table_stats.full at the last check */
	bool reconcile_due;		/* records were lost: look for stale table entries */
	char boot_id[40];
	char run_id[33];
	struct daemon_counters counters;
	struct ratelimit late_rl;
	struct ratelimit lost_rl;
	struct ratelimit kernel_rl;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: tcptapd [OPTIONS]\n"
		"Trace TCP connections with BPF and serve them as newline-delimited JSON.\n\n"
		"  --socket PATH          UNIX socket to serve (default %s)\n"
		"  --backend NAME         auto, tracepoint, fentry or kprobe (default auto)\n"
		"  --sync-interval MS     period of the per-CPU sync events and of the\n"
		"                         release tick, in milliseconds (default %d)\n"
		"  --max-hold MS          frontier lag after which a CPU is declared stalled\n"
		"                         and released past, in milliseconds (default %d)\n"
		"  --perf-pages N         pages of each CPU's perf ring, a power of two\n"
		"                         (default %d)\n"
		"  --max-connections N    live connections tracked at most (default %d)\n"
		"  --history N            records kept for clients that resume (default %d)\n"
		"  --client-queue BYTES   output queued per client before it is disconnected\n"
		"                         as too slow (default %d)\n"
		"  --max-clients N        clients connected at once (default %d)\n"
		"  --log-level LEVEL      err, warning, notice, info or debug (default notice)\n"
		"  --version              print the version and exit\n"
		"  -h, --help             print this help and exit\n\n"
		"Testing options:\n"
		"  --release-rule RULE    sync (default) or clock: release by the plain clock\n"
		"                         watermark, which can reorder records\n"
		"  --test-stall-cpu N     CPU whose event programs busy-wait (see below)\n"
		"  --test-stall-ms MS     busy-wait between timestamp and output, in ms\n"
		"  --test-stall-netns INO only for sockets in this network namespace inode\n"
		"  --test-attach-gap MS   pause between attaching the state-change program\n"
		"                         and the accept programs, in ms\n",
		DEFAULT_SOCKET_PATH, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_MAX_HOLD_MS,
		DEFAULT_PERF_PAGES, DEFAULT_MAX_CONNECTIONS, DEFAULT_HISTORY_RECORDS,
		DEFAULT_CLIENT_QUEUE_BYTES, DEFAULT_MAX_CLIENTS);
}

static int parse_u64(const char *name, const char *value, uint64_t min, uint64_t max,
		     uint64_t *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(value, &end, 10);
	if (errno || end == value || *end != '\0' || value[0] == '-' || v < min || v > max) {
		fprintf(stderr, "tcptapd: invalid value '%s' for %s: expected an integer from %"
			PRIu64 " to %" PRIu64 "\n", value, name, min, max);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

enum {
	OPT_SOCKET = 256,
	OPT_BACKEND,
	OPT_SYNC_INTERVAL,
	OPT_MAX_HOLD,
	OPT_PERF_PAGES,
	OPT_MAX_CONNECTIONS,
	OPT_HISTORY,
	OPT_CLIENT_QUEUE,
	OPT_MAX_CLIENTS,
	OPT_LOG_LEVEL,
	OPT_VERSION,
	OPT_RELEASE_RULE,
	OPT_TEST_STALL_CPU,
	OPT_TEST_STALL_MS,
	OPT_TEST_STALL_NETNS,
	OPT_TEST_ATTACH_GAP,
};

/* Returns 1 to run, 0 to exit successfully (--help, --version), < 0 on error. */
static int parse_options(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "backend", required_argument, NULL, OPT_BACKEND },
		{ "sync-interval", required_argument, NULL, OPT_SYNC_INTERVAL },
		{ "max-hold", required_argument, NULL, OPT_MAX_HOLD },
		{ "perf-pages", required_argument, NULL, OPT_PERF_PAGES },
		{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
		{ "history", required_argument, NULL, OPT_HISTORY },
		{ "client-queue", required_argument, NULL, OPT_CLIENT_QUEUE },
		{ "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ "release-rule", required_argument, NULL, OPT_RELEASE_RULE },
		{ "test-stall-cpu", required_argument, NULL, OPT_TEST_STALL_CPU },
		{ "test-stall-ms", required_argument, NULL, OPT_TEST_STALL_MS },
		{ "test-stall-netns", required_argument, NULL, OPT_TEST_STALL_NETNS },
		{ "test-attach-gap", required_argument, NULL, OPT_TEST_ATTACH_GAP },
		{ 0 },
	};
	int c, err = 0;

	*opt = (struct options){
		.socket_path = DEFAULT_SOCKET_PATH,
		.backend = BACKEND_AUTO,
		.sync_interval_ms = DEFAULT_SYNC_INTERVAL_MS,
		.max_hold_ms = DEFAULT_MAX_HOLD_MS,
		.perf_pages = DEFAULT_PERF_PAGES,
		.log_level = LOG_NOTICE,
		.max_connections = DEFAULT_MAX_CONNECTIONS,
		.history_records = DEFAULT_HISTORY_RECORDS,
		.client_queue_bytes = DEFAULT_CLIENT_QUEUE_BYTES,
		.max_clients = DEFAULT_MAX_CLIENTS,
		.release_rule = MERGER_RULE_SYNC,
	};

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET:
			opt->socket_path = optarg;
			break;
		case OPT_BACKEND:
			err = backend_from_string(optarg, &opt->backend);
			if (err)
				fprintf(stderr, "tcptapd: invalid backend '%s': expected auto, "
					"tracepoint, fentry or kprobe\n", optarg);
			break;
		case OPT_SYNC_INTERVAL:
			err = parse_u64("--sync-interval", optarg, 1, 1000, &opt->sync_interval_ms);
			break;
		case OPT_MAX_HOLD:
			err = parse_u64("--max-hold", optarg, 1, 60000, &opt->max_hold_ms);
			break;
		case OPT_PERF_PAGES:
			err = parse_u64("--perf-pages", optarg, 1, 65536, &opt->perf_pages);
			if (!err && (opt->perf_pages & (opt->perf_pages - 1))) {
				fprintf(stderr, "tcptapd: invalid value '%s' for --perf-pages: "
					"expected a power of two\n", optarg);
				err = -EINVAL;
			}
			break;
		case OPT_MAX_CONNECTIONS:
			err = parse_u64("--max-connections", optarg, 16, 1 << 24,
					&opt->max_connections);
			break;
		case OPT_HISTORY:
			err = parse_u64("--history", optarg, 1, 1 << 24, &opt->history_records);
			break;
		case OPT_CLIENT_QUEUE:
			err = parse_u64("--client-queue", optarg, 4096, 1ULL << 30,
					&opt->client_queue_bytes);
			break;
		case OPT_MAX_CLIENTS:
			err = parse_u64("--max-clients", optarg, 1, 65536, &opt->max_clients);
			break;
		case OPT_LOG_LEVEL:
			opt->log_level = log_level_from_string(optarg);
			if (opt->log_level < 0) {
				fprintf(stderr, "tcptapd: invalid log level '%s': expected err, "
					"warning, notice, info or debug\n", optarg);
				err = -EINVAL;
			}
			break;
		case OPT_VERSION:
			printf("tcptapd %s\n", TCPTAP_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case OPT_RELEASE_RULE:
			if (strcmp(optarg, "sync") == 0) {
				opt->release_rule = MERGER_RULE_SYNC;
			} else if (strcmp(optarg, "clock") == 0) {
				opt->release_rule = MERGER_RULE_CLOCK;
			} else {
				fprintf(stderr, "tcptapd: invalid release rule '%s': expected "
					"sync or clock\n", optarg);
				err = -EINVAL;
			}
			break;
		case OPT_TEST_STALL_CPU:
			err = parse_u64("--test-stall-cpu", optarg, 0, 4095, &opt->test_stall_cpu);
			break;
		case OPT_TEST_STALL_MS:
			err = parse_u64("--test-stall-ms", optarg, 0, 1000, &opt->test_stall_ms);
			break;
		case OPT_TEST_ATTACH_GAP:
			err = parse_u64("--test-attach-gap", optarg, 0, 10000,
					&opt->test_attach_gap_ms);
			break;
		case OPT_TEST_STALL_NETNS:
			err = parse_u64("--test-stall-netns", optarg, 0, UINT32_MAX,
					&opt->test_stall_netns);
			break;
		default:
			fprintf(stderr, "Try 'tcptapd --help' for more information.\n");
			return -EINVAL;
		}
		if (err)
			return err;
	}
	if (optind < argc) {
		fprintf(stderr, "tcptapd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 1;
}

/* ---- publishing ---- */

static void note_published(struct daemon *d, const struct record *r)
{
	uint64_t now, suppressed;

	if (r->ev.type == RECORD_LOST) {
		d->counters.lost_notices++;
		d->counters.lost += r->lost_count;
		d->reconcile_due = true;
		if (r->lost_reason == RECORD_LOST_NESTED)
			return;	/* check_kernel_counters() logs these */
		now = now_ns();
		if (ratelimit_allow(&d->lost_rl, now, &suppressed))
			log_warning("Lost %" PRIu64 " records on cpu %u: its perf ring was full "
				    "(raise --perf-pages); %" PRIu64 " similar messages suppressed",
				    (uint64_t)r->lost_count, r->ev.cpu, suppressed);
		return;
	}
	if (r->ev.type < TCPTAP_EV_SYNC)
		d->counters.published[r->ev.type]++;
	if (r->late) {
		d->counters.late++;
		now = now_ns();
		if (ratelimit_allow(&d->late_rl, now, &suppressed))
			log_warning("Released a record of cpu %u late: ts_ns %" PRIu64 " is behind "
				    "the stream; %" PRIu64 " similar messages suppressed",
				    r->ev.cpu, (uint64_t)r->ev.ts_ns, suppressed);
	}
}

static void publish(const struct record *r, void *userdata)
{
	struct daemon *d = userdata;
	struct record out = *r;

	switch (conn_table_apply(d->table, &out)) {
	case CONN_TABLE_DROP_DUPLICATE:
		d->counters.dropped_duplicate++;
		log_debug("Dropped a second introduction of cookie %" PRIu64,
			  (uint64_t)out.ev.cookie);
		return;
	case CONN_TABLE_DROP_ORPHAN:
		d->counters.dropped_orphan++;
		log_debug("Dropped the close of cookie %" PRIu64 ": its introduction was lost",
			  (uint64_t)out.ev.cookie);
		return;
	default:
		break;
	}

	out.seq = ++d->seq;
	history_append(d->history, &out);
	server_publish(d->server, &out);
	note_published(d, &out);
}

static void on_stall(unsigned int cpu, bool stalled, uint64_t lag_ns, void *userdata)
{
	if (stalled)
		log_warning("CPU %u stalled: no proven frontier for %" PRIu64 " ms (--max-hold); "
			    "releasing past it, its older records will be marked late",
			    cpu, (uint64_t)(lag_ns / NSEC_PER_MSEC));
	else
		log_info("CPU %u recovered: frontier lag back to %" PRIu64 " ms", cpu,
			 (uint64_t)(lag_ns / NSEC_PER_MSEC));
}

/* ---- the release tick ---- */

/* Time sources fire once; schedule the next run interval_ns from now, so a
 * late tick does not cause a burst of catch-up runs. */
static int rearm(sd_event_source *s, uint64_t interval_ns)
{
	uint64_t usec_now;
	int err;

	err = sd_event_now(sd_event_source_get_event(s), CLOCK_MONOTONIC, &usec_now);
	if (err < 0)
		return err;
	err = sd_event_source_set_time(s, usec_now + interval_ns / NSEC_PER_USEC);
	if (err < 0)
		return err;
	return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static bool batches_hold_records(struct daemon *d)
{
	uint64_t count;

	/* If the batches cannot be read, the syncs run anyway. */
	return loader_batched_records(d->loader, 0, &count, NULL) < 0 || count > 0;
}

static void release_tick(struct daemon *d)
{
	struct merger_stats ms;

	/* The clock watermark is read before the drain: everything the rings
	 * hold with an older timestamp is read by that drain unless a CPU is
	 * still between timestamp and output, which is the case the sync rule
	 * exists for. */
	merger_set_watermark(d->merger, now_ns());
	(void)ring_reader_drain(d->reader);

	/* While records are held or wait in a CPU's batch, prove every online
	 * CPU's frontier up to now, not only past the oldest held record. The
	 * last timer sync of a CPU can be a sync interval old, and the records
	 * after it would then wait for the next tick, doubling their release
	 * latency. The syncs also write out the batches. */
	merger_get_stats(d->merger, &ms);
	if (d->opt.release_rule == MERGER_RULE_SYNC &&
	    (ms.pending > 0 || batches_hold_records(d))) {
		for (unsigned int cpu = 0; cpu < d->ncpus; cpu++)
			if (d->online[cpu])
				(void)loader_sync_now(d->loader, cpu);
		(void)ring_reader_drain(d->reader);
	}
	merger_release(d->merger, now_ns(), publish, d);
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct daemon *d = userdata;

	release_tick(d);
	return rearm(s, d->opt.sync_interval_ms * NSEC_PER_MSEC);
}

static int on_ring_ready(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct daemon *d = userdata;

	/* A ring passed its wakeup watermark: drain early so it cannot
	 * overflow before the next tick. */
	(void)ring_reader_drain(d->reader);
	return 0;
}

/* ---- CPU hotplug and kernel-side counters ---- */

static int read_online_cpus(bool *online, unsigned int ncpus)
{
	char buf[1024], *p, *end;
	FILE *f;

	f = fopen("/sys/devices/system/cpu/online", "re");
	if (!f)
		return -errno;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);

	memset(online, 0, ncpus * sizeof(*online));
	for (p = buf; *p && *p != '\n';) {
		unsigned long lo, hi;

		lo = strtoul(p, &end, 10);
		if (end == p)
			return -EINVAL;
		hi = lo;
		if (*end == '-')
			hi = strtoul(end + 1, &end, 10);
		for (unsigned long cpu = lo; cpu <= hi && cpu < ncpus; cpu++)
			online[cpu] = true;
		p = *end == ',' ? end + 1 : end;
	}
	return 0;
}

static int open_rings(struct daemon *d, struct ring_reader **ret_reader,
		      sd_event_source **ret_source)
{
	struct ring_reader *reader;
	int err;

	err = ring_reader_new(loader_events_fd(d->loader), d->opt.perf_pages, d->merger, &reader);
	if (err < 0) {
		log_error("Failed to open the perf rings (%" PRIu64 " pages per CPU): %s",
			  d->opt.perf_pages, strerror(-err));
		return err;
	}
	err = sd_event_add_io(d->loop, ret_source, ring_reader_fd(reader), EPOLLIN, on_ring_ready,
			      d);
	if (err < 0) {
		log_error("Failed to watch the perf rings: %s", strerror(-err));
		ring_reader_free(reader);
		return err;
	}
	*ret_reader = reader;
	return 0;
}

/*
 * The kernel opens a perf ring only for the CPUs online when the reader is
 * created, and a CPU that goes offline loses its ring's event. When a CPU
 * comes online, new rings replace the old ones. The new reader takes over
 * the map slots first. Then the old rings are drained into the merger ahead
 * of anything the new ones contain, so no record and no sync is read out of
 * ring order.
 */
static void reopen_rings(struct daemon *d)
{
	struct ring_reader *reader;
	sd_event_source *source;

	if (open_rings(d, &reader, &source) < 0) {
		log_warning("Keeping the old perf rings: records of the CPU that came online "
			    "are counted as failed outputs");
		return;
	}
	(void)ring_reader_drain(d->reader);
	sd_event_source_disable_unref(d->ring_source);
	ring_reader_free(d->reader);
	d->reader = reader;
	d->ring_source = source;
}

static void update_online_cpus(struct daemon *d)
{
	bool now_online[d->ncpus];
	bool came_online = false;
	uint64_t now = now_ns();

	if (read_online_cpus(now_online, d->ncpus) < 0)
		return;
	/* What an offline CPU left in its ring must reach the merger before the
	 * CPU stops holding the release back. */
	if (memcmp(now_online, d->online, d->ncpus * sizeof(*now_online)) != 0)
		(void)ring_reader_drain(d->reader);
	for (unsigned int cpu = 0; cpu < d->ncpus; cpu++) {
		if (now_online[cpu] == d->online[cpu])
			continue;
		d->online[cpu] = now_online[cpu];
		(void)merger_set_online(d->merger, cpu, now_online[cpu], now);
		if (now_online[cpu]) {
			int err = loader_attach_sync(d->loader, cpu);

			if (err < 0)
				log_warning("Failed to attach the sync event of cpu %u: %s; it "
					    "will be declared stalled", cpu, strerror(-err));
			log_info("CPU %u came online", cpu);
			came_online = true;
		} else {
			uint64_t total, batched = 0;

			loader_detach_sync(d->loader, cpu);
			log_info("CPU %u went offline", cpu);
			/* NOTE: only a sync on that CPU writes its batch out. */
			if (loader_batched_records(d->loader, cpu, &total, &batched) == 0 &&
			    batched > 0)
				log_warning("CPU %u went offline with %" PRIu64 " records in its "
					    "batch; they reach the stream, marked late, when it "
					    "comes back online", cpu, batched);
		}
	}
	if (came_online)
		reopen_rings(d);
}

/* Drain until every online CPU proved its frontier past t_ns, so every
 * record of an event program that started before t_ns is held by the merger
 * or released. Gives up after FRONTIER_WAIT_NS and returns false then. */
static bool wait_for_frontiers(struct daemon *d, uint64_t t_ns)
{
	uint64_t deadline = now_ns() + FRONTIER_WAIT_NS;

	for (;;) {
		bool behind = false;
		uint64_t now = now_ns();

		for (unsigned int cpu = 0; cpu < d->ncpus; cpu++)
			if (d->online[cpu])
				(void)loader_sync_now(d->loader, cpu);
		(void)ring_reader_drain(d->reader);

		for (unsigned int cpu = 0; cpu < d->ncpus; cpu++) {
			struct merger_cpu_stats cs;

			if (!d->online[cpu] || merger_cpu_stats(d->merger, cpu, now, &cs) < 0)
				continue;
			if (!cs.has_frontier || cs.frontier_ns <= t_ns)
				behind = true;
		}
		if (!behind)
			return true;
		if (now >= deadline)
			return false;
		usleep(1000);
	}
}

struct stale_scan {
	struct cookie_set tracked;	/* connections the BPF side still tracks */
	struct cookie_set closing;	/* connections with a close held in the merger */
	struct cookie_set stale;	/* table entries in neither */
	int err;
};

static void collect_stale(const struct record *r, void *userdata)
{
	struct stale_scan *scan = userdata;

	if (scan->err < 0 || cookie_set_contains(&scan->tracked, r->ev.cookie) ||
	    cookie_set_contains(&scan->closing, r->ev.cookie))
		return;
	scan->err = cookie_set_add(&scan->stale, r->ev.cookie);
}

static void collect_held_close(const struct record *r, void *userdata)
{
	struct stale_scan *scan = userdata;

	if (scan->err == 0 && r->ev.type == TCPTAP_EV_CLOSE)
		scan->err = cookie_set_add(&scan->closing, r->ev.cookie);
}

/*
 * After records were lost, the table can hold connections whose close was
 * among them. The BPF side deletes a connection from its conns map when the
 * socket leaves ESTABLISHED/CLOSE_WAIT (or is destroyed), whether or not the
 * close record reached a ring. A table entry that the BPF side no longer
 * tracks and whose close is not held in the merger is therefore closed here,
 * marked inferred.
 * The close program deletes the connection before it writes its record, so
 * the tracked set is read first and the merger is then brought past that
 * moment: a close whose program had started by then is held or released.
 */
static void reconcile_table(struct daemon *d)
{
	struct stale_scan scan = { 0 };
	struct merger_stats ms;

	scan.err = loader_tracked_cookies(d->loader, &scan.tracked);
	if (scan.err == 0 && !wait_for_frontiers(d, now_ns())) {
		/* A stalled CPU may still hold a close: try again later. */
		d->reconcile_due = true;
		goto out;
	}
	if (scan.err == 0)
		merger_foreach_pending(d->merger, collect_held_close, &scan);
	cookie_set_sort(&scan.tracked);
	cookie_set_sort(&scan.closing);
	if (scan.err == 0)
		conn_table_foreach(d->table, collect_stale, &scan);
	if (scan.err < 0) {
		log_warning("Failed to compare the table with the connections the kernel tracks, "
			    "it may keep connections whose close was lost: %s", strerror(-scan.err));
		d->reconcile_due = true;
		goto out;
	}

	merger_get_stats(d->merger, &ms);
	for (size_t i = 0; i < scan.stale.count; i++) {
		const struct record *entry = conn_table_lookup(d->table, scan.stale.items[i]);
		struct record close;

		if (!entry)
			continue;
		close = *entry;

		close.ev.type = TCPTAP_EV_CLOSE;
		close.ev.ts_ns = ms.last_released_ts;
		close.origin = RECORD_ORIGIN_NONE;
		close.inferred = true;
		close.seq = 0;
		publish(&close, d);
		d->counters.inferred_closes++;
	}
	if (scan.stale.count > 0)
		log_warning("Closed %zu connections whose close record was lost: the kernel no "
			    "longer tracks them", scan.stale.count);
out:
	cookie_set_clear(&scan.tracked);
	cookie_set_clear(&scan.closing);
	cookie_set_clear(&scan.stale);
}

static void check_kernel_counters(struct daemon *d, uint64_t now)
{
	uint64_t totals[TCPTAP_CNT_MAX], misses, suppressed;

	misses = loader_recursion_misses(d->loader);
	if (loader_read_counters(d->loader, totals) < 0)
		return;
	if (misses == d->last_misses && totals[TCPTAP_CNT_OUTPUT_FAILED] == d->last_output_failed)
		return;
	if (misses > d->last_misses) {
		/* Skipped runs wrote nothing, so the stream learns of them only
		 * here; the notice sits at the newest released timestamp. */
		struct merger_stats ms;
		struct record lost = {
			.lost_count = misses - d->last_misses,
			.lost_reason = RECORD_LOST_NESTED,
			.ev.type = RECORD_LOST,
		};

		merger_get_stats(d->merger, &ms);
		lost.ev.ts_ns = ms.last_released_ts;
		publish(&lost, d);
	}
	/* The counts cover everything since the last warning, including the
	 * rounds whose warning the rate limit suppressed. */
	if (ratelimit_allow(&d->kernel_rl, now, &suppressed)) {
		log_warning("The kernel side missed records: %" PRIu64 " program runs skipped "
			    "while another was running on the same CPU, %" PRIu64 " outputs to "
			    "full rings (%" PRIu64 " similar messages suppressed)",
			    misses - d->logged_misses,
			    totals[TCPTAP_CNT_OUTPUT_FAILED] - d->logged_output_failed, suppressed);
		d->logged_misses = misses;
		d->logged_output_failed = totals[TCPTAP_CNT_OUTPUT_FAILED];
	}
	d->last_misses = misses;
	d->last_output_failed = totals[TCPTAP_CNT_OUTPUT_FAILED];
}

static void log_summary(struct daemon *d, uint64_t now)
{
	struct server_stats ss;
	uint64_t stalls = 0;

	for (unsigned int cpu = 0; cpu < d->ncpus; cpu++) {
		struct merger_cpu_stats cs;

		if (merger_cpu_stats(d->merger, cpu, now, &cs) == 0)
			stalls += cs.stalls;
	}
	server_get_stats(d->server, &ss);
	if (!d->counters.lost && !d->counters.late && !stalls && !ss.overflows)
		return;
	log_info("Summary: %" PRIu64 " records published, %" PRIu64 " records lost, %" PRIu64
		 " late, %" PRIu64 " CPU stalls, %" PRIu64 " clients dropped as too slow",
		 d->seq, d->counters.lost, d->counters.late, stalls, ss.overflows);
}

/* Warn, once per housekeeping tick that finds new ones, about connections
 * that did not fit in the table. They are published but missing from
 * snapshots. */
static void check_table_full(struct daemon *d)
{
	struct conn_table_stats ts;

	conn_table_get_stats(d->table, &ts);
	if (ts.full == d->last_table_full)
		return;
	log_warning("The connection table is full (%" PRIu64 " entries, --max-connections): %"
		    PRIu64 " connections are missing from snapshots and dumps",
		    (uint64_t)ts.max_entries, (uint64_t)(ts.full - d->last_table_full));
	d->last_table_full = ts.full;
}

static int on_housekeeping(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct daemon *d = userdata;
	struct server_stats ss;
	uint64_t now = now_ns();

	update_online_cpus(d);
	check_kernel_counters(d, now);
	check_table_full(d);
	loader_check_accept_waiters(d->loader);
	if (d->reconcile_due) {
		d->reconcile_due = false;
		reconcile_table(d);
	}
	if (now - d->last_summary_ns >= SUMMARY_INTERVAL_NS) {
		log_summary(d, now);
		d->last_summary_ns = now;
	}
	server_get_stats(d->server, &ss);
	sd_glue_notify_status("Tracing with backend %s on %u CPUs; %" PRIu64 " clients",
			      backend_to_string(loader_backend(d->loader)), d->ncpus, ss.clients);
	return rearm(s, HOUSEKEEPING_INTERVAL_NS);
}

/* ---- stats record ---- */

/* Milliseconds with microsecond precision, printed without binary noise. */
static json_object *json_double_ms(uint64_t ns)
{
	char text[32];

	snprintf(text, sizeof(text), "%.3f", (double)ns / 1e6);
	return json_object_new_double_s(strtod(text, NULL), text);
}

static json_object *cpu_stats_json(struct daemon *d, uint64_t now)
{
	json_object *cpus = json_object_new_array();

	for (unsigned int cpu = 0; cpu < d->ncpus; cpu++) {
		struct merger_cpu_stats cs;
		json_object *o;

		if (merger_cpu_stats(d->merger, cpu, now, &cs) < 0)
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "cpu", json_object_new_int64(cpu));
		json_object_object_add(o, "online", json_object_new_boolean(cs.online));
		json_object_object_add(o, "stalled", json_object_new_boolean(cs.stalled));
		json_object_object_add(o, "frontier_lag_ms", json_double_ms(cs.lag_ns));
		json_object_object_add(o, "events", json_object_new_uint64(cs.events));
		json_object_object_add(o, "syncs", json_object_new_uint64(cs.syncs));
		json_object_object_add(o, "syncs_busy", json_object_new_uint64(cs.syncs_busy));
		json_object_object_add(o, "stalls", json_object_new_uint64(cs.stalls));
		json_object_object_add(o, "late", json_object_new_uint64(cs.late));
		json_object_object_add(o, "lost", json_object_new_uint64(cs.lost));
		json_object_array_add(cpus, o);
	}
	return cpus;
}

static void add_u64(json_object *o, const char *key, uint64_t value)
{
	json_object_object_add(o, key, json_object_new_uint64(value));
}

static char *stats_json(void *userdata)
{
	struct daemon *d = userdata;
	uint64_t now = now_ns(), totals[TCPTAP_CNT_MAX] = { 0 };
	struct conn_table_stats ts;
	struct merger_stats ms;
	struct server_stats ss;
	json_object *root, *events, *kernel, *clients, *table, *merger;
	char *line = NULL;
	const char *text;

	conn_table_get_stats(d->table, &ts);
	merger_get_stats(d->merger, &ms);
	server_get_stats(d->server, &ss);
	(void)loader_read_counters(d->loader, totals);

	root = json_object_new_object();
	json_object_object_add(root, "type", json_object_new_string("stats"));
	json_object_object_add(root, "backend",
			       json_object_new_string(backend_to_string(loader_backend(d->loader))));
	add_u64(root, "uptime_s", (now - d->started_ns) / 1000000000ULL);
	add_u64(root, "seq", d->seq);

	events = json_object_new_object();
	add_u64(events, "connect", d->counters.published[TCPTAP_EV_CONNECT]);
	add_u64(events, "accept", d->counters.published[TCPTAP_EV_ACCEPT]);
	add_u64(events, "close", d->counters.published[TCPTAP_EV_CLOSE]);
	add_u64(events, "connect_failed", d->counters.published[TCPTAP_EV_CONNECT_FAILED]);
	json_object_object_add(root, "events", events);
	add_u64(root, "lost", d->counters.lost);
	add_u64(root, "late", d->counters.late);
	add_u64(root, "dropped_duplicate", d->counters.dropped_duplicate);
	add_u64(root, "dropped_orphan_close", d->counters.dropped_orphan);
	add_u64(root, "inferred_close", d->counters.inferred_closes);

	kernel = json_object_new_object();
	add_u64(kernel, "output_failed", totals[TCPTAP_CNT_OUTPUT_FAILED]);
	add_u64(kernel, "conn_map_full",
		totals[TCPTAP_CNT_OWNER_MAP_FULL] + totals[TCPTAP_CNT_CONNECTING_MAP_FULL]);
	add_u64(kernel, "unattributed", totals[TCPTAP_CNT_UNATTRIBUTED]);
	add_u64(kernel, "sync_busy", totals[TCPTAP_CNT_SYNC_BUSY]);
	add_u64(kernel, "recursion_misses", loader_recursion_misses(d->loader));
	json_object_object_add(root, "kernel", kernel);

	json_object_object_add(root, "cpus", cpu_stats_json(d, now));

	clients = json_object_new_object();
	add_u64(clients, "connected", ss.clients);
	add_u64(clients, "accepted", ss.accepted);
	add_u64(clients, "overflows", ss.overflows);
	add_u64(clients, "bad_requests", ss.bad_requests);
	add_u64(clients, "rejected", ss.rejected);
	add_u64(clients, "bytes_queued", ss.bytes_queued);
	json_object_object_add(root, "clients", clients);

	table = json_object_new_object();
	add_u64(table, "entries", ts.entries);
	add_u64(table, "max_entries", ts.max_entries);
	add_u64(table, "full", ts.full);
	json_object_object_add(root, "table", table);

	merger = json_object_new_object();
	add_u64(merger, "pending", ms.pending);
	add_u64(merger, "released", ms.released);
	add_u64(merger, "forced", ms.forced);
	json_object_object_add(root, "merger", merger);

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (text && asprintf(&line, "%s\n", text) < 0)
		line = NULL;
	json_object_put(root);
	return line;
}

/* ---- start-up seeding ---- */

/* The sorted cookies of list. Returns 0 or -ENOMEM. */
static int cookie_set_from_seeds(const struct seed_list *list, struct cookie_set *ret_set)
{
	for (size_t i = 0; i < list->count; i++) {
		int err = cookie_set_add(ret_set, list->items[i].ev.cookie);

		if (err < 0)
			return err;
	}
	cookie_set_sort(ret_set);
	return 0;
}

struct held_cookies {
	struct cookie_set introduced;	/* connect or accept records held */
	struct cookie_set closed;	/* close records held */
	int err;
};

static void collect_held(const struct record *r, void *userdata)
{
	struct held_cookies *held = userdata;

	if (held->err < 0)
		return;
	if (r->ev.type == TCPTAP_EV_CONNECT || r->ev.type == TCPTAP_EV_ACCEPT)
		held->err = cookie_set_add(&held->introduced, r->ev.cookie);
	else if (r->ev.type == TCPTAP_EV_CLOSE)
		held->err = cookie_set_add(&held->closed, r->ev.cookie);
}


static void write_seed_owner(struct daemon *d, const struct seed_conn *c)
{
	struct tcptap_owner owner = {
		.cgroup = c->ev.cgroup,
		.pid = c->ev.pid,
		.tid = c->ev.tid,
		.uid = c->ev.uid,
	};
	uint64_t cookie = c->ev.cookie;
	int err;

	memcpy(owner.comm, c->ev.comm, sizeof(owner.comm));
	err = loader_add_seed(d->loader, cookie, &owner);
	if (err < 0)
		log_warning("Failed to register seeded connection %" PRIu64 " in the kernel, its "
			    "close will be missed: %s", cookie, strerror(-err));
}

/*
 * Puts the connections that existed before start into the table, tied to the
 * stream position before the first published record. The BPF programs are
 * attached first and their records held. The first dump finds the existing
 * connections and registers them with the BPF side, so their closes are
 * reported from then on. A second dump finds those that closed before the
 * registration took effect. Reconciled by cookie: a connection whose
 * connect or accept record is held is introduced by that record, not seeded;
 * one that is gone from the second dump without a held close closed before
 * its registration and is dropped.
 */
static int seed_table(struct daemon *d)
{
	struct seed_list first = { 0 }, second = { 0 };
	struct cookie_set still_open = { 0 };
	struct held_cookies held = { 0 };
	size_t attributed = 0, seeded = 0, skipped = 0;
	uint64_t t_first, t_second;
	int err;

	t_first = now_ns();
	err = seed_dump_all(&first);
	if (err < 0)
		goto out;
	(void)seed_attribute(&first);
	for (size_t i = 0; i < first.count; i++)
		write_seed_owner(d, &first.items[i]);
	(void)ring_reader_drain(d->reader);

	err = seed_dump_all(&second);
	if (err < 0)
		goto out;
	t_second = now_ns();
	/* Only the cookies of the second dump are needed from here on. Freeing
	 * the rest before the table fills lowers the start-up peak RSS by about
	 * 120 bytes per existing connection. */
	err = cookie_set_from_seeds(&second, &still_open);
	if (err < 0)
		goto out;
	seed_list_clear(&second);
	if (!wait_for_frontiers(d, t_second))
		log_warning("A CPU did not prove its frontier during start-up; connections closed "
			    "on it while seeding may stay in the table until records are lost and "
			    "the table is reconciled");

	merger_foreach_pending(d->merger, collect_held, &held);
	err = held.err;
	if (err < 0)
		goto out;
	cookie_set_sort(&held.introduced);
	cookie_set_sort(&held.closed);

	for (size_t i = 0; i < first.count; i++) {
		const struct seed_conn *c = &first.items[i];
		struct record r = { .origin = RECORD_ORIGIN_SEEDED, .ev = c->ev };
		uint64_t cookie = c->ev.cookie;

		/* A connecting socket is not a connection yet: its registered
		 * owner only attributes its connect or connect_failed record. */
		if (c->state == TCP_SYN_SENT)
			continue;
		if (cookie_set_contains(&held.introduced, cookie) ||
		    (!cookie_set_contains(&still_open, cookie) &&
		     !cookie_set_contains(&held.closed, cookie))) {
			(void)loader_remove_seed(d->loader, cookie);
			skipped++;
			continue;
		}
		r.ev.ts_ns = t_first;
		if (conn_table_seed(d->table, &r) == 0) {
			seeded++;
			if (r.ev.pid != 0)
				attributed++;
		}
	}
	log_notice("Seeded %zu existing connections from %u network namespace%s (%zu of them "
		   "attributed to a process; %zu sockets left to their live records; %u "
		   "namespaces unreadable)", seeded, first.namespaces,
		   first.namespaces == 1 ? "" : "s", attributed, skipped,
		   first.failed_namespaces);
out:
	if (err < 0)
		log_error("Failed to enumerate the existing connections: %s", strerror(-err));
	cookie_set_clear(&held.introduced);
	cookie_set_clear(&held.closed);
	cookie_set_clear(&still_open);
	seed_list_clear(&first);
	seed_list_clear(&second);
	return err;
}

/* ---- start-up and tear-down ---- */

static void read_boot_id(char *buf, size_t size)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	snprintf(buf, size, "unknown");
	if (!f)
		return;
	if (fgets(buf, (int)size, f))
		buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}

static void make_run_id(char *buf, size_t size)
{
	uint8_t bytes[16] = { 0 };

	if (getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes)) {
		uint64_t t = now_ns() ^ ((uint64_t)getpid() << 32);

		memcpy(bytes, &t, sizeof(t));
	}
	for (size_t i = 0; i < sizeof(bytes) && 2 * i + 2 < size; i++)
		snprintf(buf + 2 * i, 3, "%02x", bytes[i]);
}

/* Threads already blocked in accept() are invisible to the fentry and kprobe
 * backends' return probes; see accept_waiter_exit in tcptap.bpf.c. */
static void watch_accept_waiters(struct daemon *d)
{
	uint32_t *tids = NULL;
	size_t count = 0;
	int err;

	if (loader_backend(d->loader) == BACKEND_TRACEPOINT)
		return;
	err = seed_find_accept_waiters(&tids, &count);
	if (err == 0)
		err = loader_watch_accept_waiters(d->loader, tids, count);
	if (err < 0)
		log_warning("Failed to watch the threads blocked in accept() at start, their "
			    "accepts will not be reported: %s", strerror(-err));
	else if (count > 0)
		log_info("Watching %zu threads that were blocked in accept() at start", count);
	free(tids);
}

static int setup_tracing(struct daemon *d)
{
	struct loader_config lc = {
		.backend = d->opt.backend,
		.conn_map_entries = (uint32_t)d->opt.max_connections,
		.sync_interval_ns = d->opt.sync_interval_ms * NSEC_PER_MSEC,
		/* Only a sync writes out a partial batch, and the clock rule
		 * does not wait for syncs. */
		.batch_records = d->opt.release_rule == MERGER_RULE_CLOCK ? 1 : TCPTAP_BATCH_MAX,
		.test_stall_ns = d->opt.test_stall_ms * NSEC_PER_MSEC,
		.test_stall_cpu = (uint32_t)d->opt.test_stall_cpu,
		.test_stall_netns = (uint32_t)d->opt.test_stall_netns,
		.test_attach_gap_ns = d->opt.test_attach_gap_ms * NSEC_PER_MSEC,
	};
	struct merger_config mc = {
		.ncpus = d->ncpus,
		.rule = d->opt.release_rule,
		.max_hold_ns = d->opt.max_hold_ms * NSEC_PER_MSEC,
		.max_pending = MAX_PENDING_RECORDS,
		.on_stall = on_stall,
		.userdata = d,
	};
	uint64_t now;
	int err;

	if (d->opt.test_stall_ms)
		log_warning("Test stall enabled: event programs on cpu %" PRIu64 " busy-wait %"
			    PRIu64 " ms", d->opt.test_stall_cpu, d->opt.test_stall_ms);
	if (d->opt.release_rule == MERGER_RULE_CLOCK)
		log_warning("Release rule 'clock' enabled: records can be released out of order");

	err = loader_open(&lc, &d->loader);
	if (err < 0)
		return err;
	/* Loading parsed the kernel's BTF. glibc keeps the megabytes of heap
	 * that freed, so they would stay in the RSS under the table and the
	 * client queues for the daemon's life. */
	(void)malloc_trim(0);

	err = merger_new(&mc, &d->merger);
	if (err < 0) {
		log_error("Failed to create the merger: %s", strerror(-err));
		return err;
	}

	/* The rings exist before anything is attached that writes to them. */
	err = open_rings(d, &d->reader, &d->ring_source);
	if (err < 0)
		return err;
	err = loader_attach(d->loader);
	if (err < 0)
		return err;
	watch_accept_waiters(d);

	/* Every CPU starts online in the merger; mark the offline ones. */
	now = now_ns();
	err = read_online_cpus(d->online, d->ncpus);
	if (err < 0) {
		log_error("Failed to read /sys/devices/system/cpu/online: %s", strerror(-err));
		return err;
	}
	for (unsigned int cpu = 0; cpu < d->ncpus; cpu++) {
		if (!d->online[cpu]) {
			(void)merger_set_online(d->merger, cpu, false, now);
			continue;
		}
		err = loader_attach_sync(d->loader, cpu);
		if (err < 0) {
			log_error("Failed to attach the sync event of cpu %u: %s", cpu,
				  strerror(-err));
			return err;
		}
	}
	return 0;
}

static int setup_table(struct daemon *d)
{
	int err;

	err = conn_table_new(d->opt.max_connections, &d->table);
	if (!err)
		err = history_new(d->opt.history_records, &d->history);
	if (err < 0) {
		log_error("Failed to allocate the connection table: %s", strerror(-err));
		return err;
	}
	return seed_table(d);
}

static int setup_serving(struct daemon *d)
{
	struct server_config sc = {
		.max_queue_bytes = d->opt.client_queue_bytes,
		.max_clients = d->opt.max_clients,
		.request_wait_ms = REQUEST_WAIT_MS,
		.version = TCPTAP_VERSION,
		.backend = backend_to_string(loader_backend(d->loader)),
		.ncpus = d->ncpus,
		.boot_id = d->boot_id,
		.run_id = d->run_id,
		.stats_json = stats_json,
		.userdata = d,
	};
	bool activated;
	int fd, err;

	err = sd_glue_listen(d->opt.socket_path, SOCKET_GROUP, &fd, &activated);
	if (err < 0)
		return err;
	err = server_new(d->loop, fd, &sc, d->table, d->history, &d->server);
	if (err < 0) {
		log_error("Failed to start serving: %s", strerror(-err));
		return err;
	}
	d->socket_created = !activated;
	if (activated)
		log_notice("Serving on the socket passed by systemd");
	else
		log_notice("Serving on %s", d->opt.socket_path);
	return 0;
}

static int setup_loop(struct daemon *d)
{
	uint64_t usec_now;
	sigset_t mask;
	int err;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	err = sd_event_default(&d->loop);
	if (err < 0)
		return err;
	err = sd_event_add_signal(d->loop, NULL, SIGTERM, NULL, NULL);
	if (err >= 0)
		err = sd_event_add_signal(d->loop, NULL, SIGINT, NULL, NULL);
	if (err >= 0)
		err = sd_event_set_watchdog(d->loop, true);
	if (err < 0)
		return err;

	err = sd_event_now(d->loop, CLOCK_MONOTONIC, &usec_now);
	if (err < 0)
		return err;
	/* Accuracy 0 would let sd-event delay the tick by up to its default of
	 * 250 ms to coalesce wakeups, which an idle daemon then adds to every
	 * record's release latency. */
	err = sd_event_add_time(d->loop, NULL, CLOCK_MONOTONIC,
				usec_now + d->opt.sync_interval_ms * 1000, TICK_ACCURACY_USEC,
				on_tick, d);
	if (err >= 0)
		err = sd_event_add_time(d->loop, NULL, CLOCK_MONOTONIC,
					usec_now + HOUSEKEEPING_INTERVAL_NS / NSEC_PER_USEC, 0,
					on_housekeeping, d);
	return err;
}

/* Publish what happened before the stop: the records still in the rings or
 * held for the last tick's proof would otherwise never reach the clients. */
static void release_before_exit(struct daemon *d)
{
	if (!wait_for_frontiers(d, now_ns()))
		log_warning("A CPU did not prove its frontier at stop; its newest records are "
			    "not published");
	merger_release(d->merger, now_ns(), publish, d);
}

static void daemon_free(struct daemon *d)
{
	server_free(d->server);
	/* A socket file passed by systemd belongs to the socket unit. */
	if (d->socket_created && unlink(d->opt.socket_path) < 0 && errno != ENOENT)
		log_warning("Failed to remove socket '%s': %s", d->opt.socket_path,
			    strerror(errno));
	sd_event_source_disable_unref(d->ring_source);
	ring_reader_free(d->reader);
	loader_free(d->loader);
	merger_free(d->merger);
	history_free(d->history);
	conn_table_free(d->table);
	sd_event_unref(d->loop);
	free(d->online);
}

static int run(int argc, char **argv)
{
	struct daemon d = {
		.late_rl = RATELIMIT_INIT(10000, 5),
		.lost_rl = RATELIMIT_INIT(10000, 5),
		.kernel_rl = RATELIMIT_INIT(60000, 1),
	};
	int err;

	err = parse_options(argc, argv, &d.opt);
	if (err <= 0)
		return err;
	log_set_max_level(d.opt.log_level);
	/* "<N>" prefixes are for journald; on a terminal they are noise. */
	log_set_prefix(!isatty(STDERR_FILENO) || getenv("JOURNAL_STREAM"));
	d.started_ns = now_ns();
	d.last_summary_ns = d.started_ns;
	read_boot_id(d.boot_id, sizeof(d.boot_id));
	make_run_id(d.run_id, sizeof(d.run_id));

	err = libbpf_num_possible_cpus();
	if (err <= 0) {
		log_error("Failed to count the possible CPUs: %s", strerror(err < 0 ? -err : EINVAL));
		return err < 0 ? err : -EINVAL;
	}
	d.ncpus = (unsigned int)err;
	d.online = calloc(d.ncpus, sizeof(*d.online));
	if (!d.online)
		return -ENOMEM;

	/* Fail before loading anything if the socket path is unusable. */
	if (sd_listen_fds(0) <= 0) {
		err = sd_glue_check_socket_path(d.opt.socket_path);
		if (err < 0)
			goto out;
	}

	err = setup_loop(&d);
	if (err < 0) {
		log_error("Failed to set up the event loop: %s", strerror(-err));
		goto out;
	}
	err = setup_tracing(&d);
	if (err < 0)
		goto out;
	err = setup_table(&d);
	if (err < 0)
		goto out;
	err = setup_serving(&d);
	if (err < 0)
		goto out;
	err = caps_drop_after_attach();
	if (err < 0)
		goto out;

	log_notice("Ready: tracing TCP connections on %u CPUs", d.ncpus);
	sd_glue_notify_ready("Tracing");
	err = sd_event_loop(d.loop);
	if (err < 0)
		log_error("Event loop failed: %s", strerror(-err));
	sd_glue_notify_stopping();
	log_notice("Stopping");
	release_before_exit(&d);
	server_shutdown(d.server, SHUTDOWN_FLUSH_MS);
out:
	daemon_free(&d);
	return err;
}

int main(int argc, char **argv)
{
	int err = run(argc, argv);

	return err < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
