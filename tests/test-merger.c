// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merger.h"

#define MAX_CAPTURED 64

static unsigned int failures;

#define EXPECT_U64(expected, actual)							\
	do {										\
		uint64_t _e = (uint64_t)(expected), _a = (uint64_t)(actual);		\
		if (_e != _a) {								\
			fprintf(stderr, "%s:%d: %s: %s: expected %" PRIu64		\
				", got %" PRIu64 "\n", __FILE__, __LINE__, __func__,	\
				#actual, _e, _a);					\
			failures++;							\
		}									\
	} while (0)

#define EXPECT_I64(expected, actual)							\
	do {										\
		int64_t _e = (int64_t)(expected), _a = (int64_t)(actual);		\
		if (_e != _a) {								\
			fprintf(stderr, "%s:%d: %s: %s: expected %" PRId64		\
				", got %" PRId64 "\n", __FILE__, __LINE__, __func__,	\
				#actual, _e, _a);					\
			failures++;							\
		}									\
	} while (0)

#define EXPECT_LE(lower, upper)								\
	do {										\
		uint64_t _l = (uint64_t)(lower), _u = (uint64_t)(upper);		\
		if (_l > _u) {								\
			fprintf(stderr, "%s:%d: %s: expected %s <= %s, got %" PRIu64	\
				" > %" PRIu64 "\n", __FILE__, __LINE__, __func__,	\
				#lower, #upper, _l, _u);				\
			failures++;							\
		}									\
	} while (0)

#define EXPECT_BOOL(expected, actual)							\
	do {										\
		bool _e = (expected), _a = (actual);					\
		if (_e != _a) {								\
			fprintf(stderr, "%s:%d: %s: %s: expected %s, got %s\n",		\
				__FILE__, __LINE__, __func__, #actual,			\
				_e ? "true" : "false", _a ? "true" : "false");		\
			failures++;							\
		}									\
	} while (0)

/* Stops the current test: used where the rest of it would read past a failed setup. */
#define REQUIRE_OK(call)								\
	do {										\
		int _r = (call);							\
		if (_r < 0) {								\
			fprintf(stderr, "%s:%d: %s: %s: expected >= 0, got %s\n",	\
				__FILE__, __LINE__, __func__, #call, strerror(-_r));	\
			failures++;							\
			return;								\
		}									\
	} while (0)

/* Everything a merger handed out, through emit and on_stall. */
struct capture {
	struct record records[MAX_CAPTURED];
	size_t n;
	size_t overflow;
	struct {
		unsigned int cpu;
		bool stalled;
		uint64_t lag_ns;
	} stalls[MAX_CAPTURED];
	size_t n_stalls;
};

static void capture_emit(const struct record *r, void *userdata)
{
	struct capture *cap = userdata;

	if (cap->n == MAX_CAPTURED) {
		cap->overflow++;
		return;
	}
	cap->records[cap->n++] = *r;
}

static void capture_stall(unsigned int cpu, bool stalled, uint64_t lag_ns, void *userdata)
{
	struct capture *cap = userdata;

	if (cap->n_stalls == MAX_CAPTURED) {
		cap->overflow++;
		return;
	}
	cap->stalls[cap->n_stalls].cpu = cpu;
	cap->stalls[cap->n_stalls].stalled = stalled;
	cap->stalls[cap->n_stalls].lag_ns = lag_ns;
	cap->n_stalls++;
}

static struct merger_config test_config(unsigned int ncpus, struct capture *cap)
{
	return (struct merger_config) {
		.ncpus = ncpus,
		.rule = MERGER_RULE_SYNC,
		.max_hold_ns = 1000,
		.max_pending = 1000,
		.on_stall = capture_stall,
		.userdata = cap,
	};
}

/* An event record whose cookie identifies it in the captured output. */
static struct record test_record(unsigned int cpu, uint64_t ts_ns, uint64_t id)
{
	struct record r = {};

	r.ev.type = TCPTAP_EV_CONNECT;
	r.ev.cpu = cpu;
	r.ev.ts_ns = ts_ns;
	r.ev.cookie = id;
	return r;
}

static int push_event(struct merger *m, unsigned int cpu, uint64_t ts_ns, uint64_t id)
{
	struct record r = test_record(cpu, ts_ns, id);

	return merger_push(m, &r);
}

static size_t release(struct merger *m, uint64_t now_ns, struct capture *cap)
{
	return merger_release(m, now_ns, capture_emit, cap);
}

static void test_new_rejects_bad_config(void)
{
	struct capture cap = {};
	struct merger_config cfg;
	struct merger *m = NULL;

	cfg = test_config(0, &cap);
	EXPECT_I64(-EINVAL, merger_new(&cfg, &m));

	cfg = test_config(2, &cap);
	cfg.max_pending = 0;
	EXPECT_I64(-EINVAL, merger_new(&cfg, &m));

	cfg = test_config(2, &cap);
	cfg.rule = (enum merger_rule)7;
	EXPECT_I64(-EINVAL, merger_new(&cfg, &m));

	EXPECT_BOOL(true, m == NULL);
	merger_free(NULL);
}

static void test_bad_input_rejected(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger_stats st;
	struct merger *m;
	struct record r;

	REQUIRE_OK(merger_new(&cfg, &m));

	EXPECT_I64(-EINVAL, push_event(m, 2, 10, 1));
	EXPECT_I64(-EINVAL, push_event(m, UINT32_MAX, 10, 1));
	EXPECT_I64(-EINVAL, merger_push_sync(m, 2, 10, 0));
	EXPECT_I64(-EINVAL, merger_push_lost(m, 2, 1));
	EXPECT_I64(-EINVAL, merger_push_lost(m, 0, 0));
	EXPECT_I64(-EINVAL, merger_set_online(m, 2, false, 10));
	EXPECT_I64(-EINVAL, merger_cpu_stats(m, 2, 10, &cs));

	r = test_record(0, 10, 1);
	r.ev.type = TCPTAP_EV_SYNC;
	EXPECT_I64(-EINVAL, merger_push(m, &r));
	r.ev.type = RECORD_LOST;
	EXPECT_I64(-EINVAL, merger_push(m, &r));

	merger_get_stats(m, &st);
	EXPECT_U64(0, st.pending);
	merger_free(m);
}

static void test_holds_until_every_cpu_syncs(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(push_event(m, 1, 50, 2));

	/* No CPU has a frontier yet. */
	EXPECT_U64(0, release(m, 300, &cap));

	/* CPU 1 still has none. */
	REQUIRE_OK(merger_push_sync(m, 0, 200, 0));
	EXPECT_U64(0, release(m, 300, &cap));

	/* Frontiers 200 and 60: only ts 50 is proven. */
	REQUIRE_OK(merger_push_sync(m, 1, 60, 0));
	EXPECT_U64(1, release(m, 300, &cap));
	EXPECT_U64(2, cap.records[0].ev.cookie);

	/* A frontier equal to the record's ts_ns releases it. */
	REQUIRE_OK(merger_push_sync(m, 1, 100, 0));
	EXPECT_U64(1, release(m, 300, &cap));
	EXPECT_U64(1, cap.records[1].ev.cookie);
	EXPECT_BOOL(false, cap.records[0].late);
	EXPECT_BOOL(false, cap.records[1].late);
	EXPECT_U64(0, cap.n_stalls);
	merger_free(m);
}

static void test_busy_sync_proves_nothing(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(merger_push_sync(m, 0, 200, 1));
	EXPECT_U64(0, release(m, 300, &cap));

	REQUIRE_OK(merger_cpu_stats(m, 0, 300, &cs));
	EXPECT_BOOL(false, cs.has_frontier);
	EXPECT_U64(1, cs.syncs);
	EXPECT_U64(1, cs.syncs_busy);

	REQUIRE_OK(merger_push_sync(m, 0, 250, 0));
	EXPECT_U64(1, release(m, 300, &cap));
	REQUIRE_OK(merger_cpu_stats(m, 0, 300, &cs));
	EXPECT_BOOL(true, cs.has_frontier);
	EXPECT_U64(250, cs.frontier_ns);
	EXPECT_U64(50, cs.lag_ns);
	EXPECT_U64(2, cs.syncs);
	EXPECT_U64(1, cs.syncs_busy);
	merger_free(m);
}

static void test_frontier_never_moves_back(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(merger_push_sync(m, 0, 200, 0));
	REQUIRE_OK(merger_push_sync(m, 0, 150, 0));
	REQUIRE_OK(merger_cpu_stats(m, 0, 300, &cs));
	EXPECT_U64(200, cs.frontier_ns);

	REQUIRE_OK(push_event(m, 0, 180, 1));
	EXPECT_U64(1, release(m, 300, &cap));
	merger_free(m);
}

/* A softirq program nested in a task-context program writes first although its
 * timestamp is newer. */
static void test_nesting_within_one_cpu(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 300, 1));
	REQUIRE_OK(push_event(m, 0, 250, 2));
	REQUIRE_OK(push_event(m, 1, 275, 3));
	REQUIRE_OK(merger_push_sync(m, 0, 400, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 500, 0));

	EXPECT_U64(3, release(m, 600, &cap));
	EXPECT_U64(2, cap.records[0].ev.cookie);
	EXPECT_U64(3, cap.records[1].ev.cookie);
	EXPECT_U64(1, cap.records[2].ev.cookie);
	for (size_t i = 0; i < cap.n; i++)
		EXPECT_BOOL(false, cap.records[i].late);
	merger_free(m);
}

static void test_equal_timestamps_keep_push_order(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_stats st;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 1, 100, 1));
	REQUIRE_OK(push_event(m, 0, 100, 2));
	REQUIRE_OK(push_event(m, 1, 100, 3));
	REQUIRE_OK(merger_push_sync(m, 0, 100, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 100, 0));
	EXPECT_U64(3, release(m, 200, &cap));
	EXPECT_U64(1, cap.records[0].ev.cookie);
	EXPECT_U64(2, cap.records[1].ev.cookie);
	EXPECT_U64(3, cap.records[2].ev.cookie);

	/* Equal to the newest released ts_ns is in order, not late. */
	merger_get_stats(m, &st);
	EXPECT_U64(100, st.last_released_ts);
	REQUIRE_OK(push_event(m, 0, 100, 4));
	EXPECT_U64(1, release(m, 200, &cap));
	EXPECT_U64(4, cap.records[3].ev.cookie);
	EXPECT_BOOL(false, cap.records[3].late);
	merger_free(m);
}

static void test_late_records_flagged_and_first(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger_stats st;
	struct merger *m;
	struct record r;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(merger_push_sync(m, 0, 150, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 150, 0));
	EXPECT_U64(1, release(m, 200, &cap));

	/* Pushed after ts 100 went out. The merger sets late itself, whatever the caller passed. */
	REQUIRE_OK(push_event(m, 1, 160, 2));
	r = test_record(1, 99, 3);
	r.late = false;
	REQUIRE_OK(merger_push(m, &r));
	REQUIRE_OK(push_event(m, 1, 95, 4));
	r = test_record(0, 120, 5);
	r.late = true;
	REQUIRE_OK(merger_push(m, &r));

	merger_get_stats(m, &st);
	EXPECT_U64(4, st.pending);

	/* Frontier 150 holds ts 160 back, and ts 120 is in order. The late ones
	 * come first, oldest first, whatever the frontiers say. */
	EXPECT_U64(3, release(m, 200, &cap));
	EXPECT_U64(4, cap.records[1].ev.cookie);
	EXPECT_BOOL(true, cap.records[1].late);
	EXPECT_U64(3, cap.records[2].ev.cookie);
	EXPECT_BOOL(true, cap.records[2].late);
	EXPECT_U64(5, cap.records[3].ev.cookie);
	EXPECT_BOOL(false, cap.records[3].late);

	REQUIRE_OK(merger_cpu_stats(m, 1, 200, &cs));
	EXPECT_U64(2, cs.late);
	EXPECT_U64(3, cs.events);
	REQUIRE_OK(merger_cpu_stats(m, 0, 200, &cs));
	EXPECT_U64(0, cs.late);

	merger_get_stats(m, &st);
	EXPECT_U64(1, st.pending);
	EXPECT_U64(4, st.released);
	EXPECT_U64(120, st.last_released_ts);
	merger_free(m);
}

/* A CPU without a frontier holds back the in-order records, not the late ones. */
static void test_late_released_without_frontier(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(merger_set_online(m, 0, false, 150));
	EXPECT_U64(1, release(m, 150, &cap));

	REQUIRE_OK(merger_set_online(m, 0, true, 200));
	REQUIRE_OK(push_event(m, 0, 50, 2));
	REQUIRE_OK(push_event(m, 0, 210, 3));
	EXPECT_U64(1, release(m, 250, &cap));
	EXPECT_U64(2, cap.records[1].ev.cookie);
	EXPECT_BOOL(true, cap.records[1].late);
	merger_free(m);
}

static void test_offline_cpu_holds_nothing_back(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(merger_set_online(m, 1, false, 0));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(merger_push_sync(m, 0, 150, 0));
	EXPECT_U64(1, release(m, 200, &cap));

	REQUIRE_OK(merger_cpu_stats(m, 1, 200, &cs));
	EXPECT_BOOL(false, cs.online);
	EXPECT_U64(0, cs.lag_ns);

	/* Back online at 200 without a frontier: it holds everything back until
	 * it syncs, even though its last frontier before going offline was newer. */
	REQUIRE_OK(merger_push_sync(m, 1, 190, 0));
	REQUIRE_OK(merger_set_online(m, 1, true, 200));
	REQUIRE_OK(merger_cpu_stats(m, 1, 250, &cs));
	EXPECT_BOOL(true, cs.online);
	EXPECT_BOOL(false, cs.has_frontier);
	EXPECT_U64(50, cs.lag_ns);

	REQUIRE_OK(push_event(m, 0, 140, 2));
	EXPECT_U64(0, release(m, 250, &cap));
	REQUIRE_OK(merger_push_sync(m, 1, 240, 0));
	EXPECT_U64(1, release(m, 250, &cap));
	EXPECT_U64(2, cap.records[1].ev.cookie);

	/* Setting the same state again changes nothing. */
	REQUIRE_OK(merger_set_online(m, 1, true, 400));
	REQUIRE_OK(merger_cpu_stats(m, 1, 400, &cs));
	EXPECT_BOOL(true, cs.has_frontier);
	EXPECT_U64(240, cs.frontier_ns);
	merger_free(m);
}

static void test_all_cpus_offline_releases_all(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(push_event(m, 1, 90, 2));
	REQUIRE_OK(merger_set_online(m, 0, false, 150));
	REQUIRE_OK(merger_set_online(m, 1, false, 150));
	EXPECT_U64(2, release(m, 150, &cap));
	EXPECT_U64(2, cap.records[0].ev.cookie);
	EXPECT_U64(1, cap.records[1].ev.cookie);
	merger_free(m);
}

/* The CPUs online from the start get their grace period from the first release, not from
 * time 0, so a daemon started long after boot does not declare every CPU stalled. */
static void test_grace_starts_at_first_release(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	REQUIRE_OK(push_event(m, 0, 5000000, 1));
	EXPECT_U64(0, release(m, 5000000, &cap));
	EXPECT_U64(0, cap.n_stalls);

	REQUIRE_OK(merger_cpu_stats(m, 0, 5000400, &cs));
	EXPECT_U64(400, cs.lag_ns);
	EXPECT_BOOL(false, cs.stalled);

	/* Lag exactly max_hold is not a stall yet. */
	EXPECT_U64(0, release(m, 5001000, &cap));
	EXPECT_U64(0, cap.n_stalls);
	EXPECT_U64(1, release(m, 5001001, &cap));
	EXPECT_U64(1, cap.n_stalls);
	merger_free(m);
}

static void test_stall_declared_and_ended(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	EXPECT_U64(0, release(m, 0, &cap));

	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(push_event(m, 0, 600, 2));
	REQUIRE_OK(push_event(m, 0, 1400, 3));
	REQUIRE_OK(merger_push_sync(m, 0, 1450, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 50, 0));

	/* CPU 1's frontier lags 950 of 1000 allowed. */
	EXPECT_U64(0, release(m, 1000, &cap));
	EXPECT_U64(0, cap.n_stalls);

	/* Lag 1450 > 1000: stalled, effective frontier now - max_hold = 450. */
	EXPECT_U64(1, release(m, 1450, &cap));
	EXPECT_U64(1, cap.records[0].ev.cookie);
	EXPECT_U64(1, cap.n_stalls);
	EXPECT_U64(1, cap.stalls[0].cpu);
	EXPECT_BOOL(true, cap.stalls[0].stalled);
	EXPECT_U64(1400, cap.stalls[0].lag_ns);

	REQUIRE_OK(merger_cpu_stats(m, 1, 1450, &cs));
	EXPECT_BOOL(true, cs.stalled);
	EXPECT_U64(1, cs.stalls);
	EXPECT_U64(1400, cs.lag_ns);

	/* Still stalled: the effective frontier follows the clock, without a
	 * second callback. */
	EXPECT_U64(1, release(m, 1650, &cap));
	EXPECT_U64(2, cap.records[1].ev.cookie);
	EXPECT_U64(1, cap.n_stalls);

	/* A record of the stalled CPU older than what went out is late. */
	REQUIRE_OK(push_event(m, 1, 300, 4));

	/* A busy sync does not end the episode. */
	REQUIRE_OK(merger_push_sync(m, 1, 1600, 2));
	EXPECT_U64(1, release(m, 1700, &cap));
	EXPECT_U64(4, cap.records[2].ev.cookie);
	EXPECT_BOOL(true, cap.records[2].late);
	EXPECT_U64(1, cap.n_stalls);

	/* A sync with lag 100 ends the episode, and the proven frontiers 1450
	 * and 1600 release ts 1400. */
	REQUIRE_OK(merger_push_sync(m, 1, 1600, 0));
	EXPECT_U64(1, release(m, 1700, &cap));
	EXPECT_U64(3, cap.records[3].ev.cookie);
	EXPECT_U64(2, cap.n_stalls);
	EXPECT_U64(1, cap.stalls[1].cpu);
	EXPECT_BOOL(false, cap.stalls[1].stalled);
	EXPECT_U64(100, cap.stalls[1].lag_ns);

	REQUIRE_OK(merger_cpu_stats(m, 1, 1700, &cs));
	EXPECT_BOOL(false, cs.stalled);
	EXPECT_U64(1, cs.stalls);
	EXPECT_U64(1, cs.late);
	merger_free(m);
}

static void test_offline_ends_stall(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	EXPECT_U64(0, release(m, 0, &cap));
	REQUIRE_OK(merger_push_sync(m, 0, 2000, 0));
	EXPECT_U64(0, release(m, 2000, &cap));
	EXPECT_U64(1, cap.n_stalls);
	EXPECT_U64(1, cap.stalls[0].cpu);
	EXPECT_BOOL(true, cap.stalls[0].stalled);

	REQUIRE_OK(merger_set_online(m, 1, false, 2100));
	EXPECT_U64(2, cap.n_stalls);
	EXPECT_U64(1, cap.stalls[1].cpu);
	EXPECT_BOOL(false, cap.stalls[1].stalled);
	EXPECT_U64(2100, cap.stalls[1].lag_ns);

	REQUIRE_OK(merger_cpu_stats(m, 1, 2100, &cs));
	EXPECT_BOOL(false, cs.stalled);
	EXPECT_U64(1, cs.stalls);

	/* Back online, it gets a fresh grace period instead of a stall. */
	REQUIRE_OK(merger_set_online(m, 1, true, 2200));
	REQUIRE_OK(merger_push_sync(m, 0, 3000, 0));
	EXPECT_U64(0, release(m, 3000, &cap));
	EXPECT_U64(2, cap.n_stalls);
	EXPECT_U64(0, release(m, 3201, &cap));
	EXPECT_U64(3, cap.n_stalls);
	EXPECT_U64(1001, cap.stalls[2].lag_ns);
	merger_free(m);
}

static void test_lost_record_placement(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));

	/* Nothing pushed or released yet: placed at 0. */
	REQUIRE_OK(merger_push_lost(m, 1, 3));

	/* Placed at the newest ts_ns pushed from CPU 0, not the last one pushed. */
	REQUIRE_OK(push_event(m, 0, 500, 1));
	REQUIRE_OK(push_event(m, 0, 400, 2));
	REQUIRE_OK(merger_push_lost(m, 0, 7));
	REQUIRE_OK(merger_push_sync(m, 0, 600, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 600, 0));

	EXPECT_U64(4, release(m, 700, &cap));
	EXPECT_U64(RECORD_LOST, cap.records[0].ev.type);
	EXPECT_U64(1, cap.records[0].ev.cpu);
	EXPECT_U64(3, cap.records[0].lost_count);
	EXPECT_U64(0, cap.records[0].ev.ts_ns);
	EXPECT_U64(2, cap.records[1].ev.cookie);
	EXPECT_U64(1, cap.records[2].ev.cookie);
	EXPECT_U64(RECORD_LOST, cap.records[3].ev.type);
	EXPECT_U64(0, cap.records[3].ev.cpu);
	EXPECT_U64(7, cap.records[3].lost_count);
	EXPECT_U64(500, cap.records[3].ev.ts_ns);

	/* CPU 1 pushed nothing newer than the released stream: placed at the newest
	 * released ts_ns, so it is not late, and the rule still holds it back until
	 * the frontiers reach it. */
	REQUIRE_OK(merger_push_lost(m, 1, 2));
	REQUIRE_OK(push_event(m, 0, 550, 3));
	REQUIRE_OK(push_event(m, 1, 520, 4));
	EXPECT_U64(3, release(m, 700, &cap));
	EXPECT_U64(RECORD_LOST, cap.records[4].ev.type);
	EXPECT_U64(500, cap.records[4].ev.ts_ns);
	EXPECT_U64(2, cap.records[4].lost_count);
	EXPECT_U64(4, cap.records[5].ev.cookie);
	EXPECT_U64(3, cap.records[6].ev.cookie);
	for (size_t i = 0; i < cap.n; i++)
		EXPECT_BOOL(false, cap.records[i].late);

	REQUIRE_OK(merger_cpu_stats(m, 1, 700, &cs));
	EXPECT_U64(5, cs.lost);
	EXPECT_U64(1, cs.events);
	EXPECT_U64(0, cs.late);
	merger_free(m);
}

static void test_clock_rule_releases_by_watermark(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger *m;

	cfg.rule = MERGER_RULE_CLOCK;
	REQUIRE_OK(merger_new(&cfg, &m));

	/* No watermark yet: everything stays, whatever the syncs prove. */
	REQUIRE_OK(push_event(m, 0, 100, 1));
	REQUIRE_OK(push_event(m, 1, 200, 2));
	REQUIRE_OK(merger_push_sync(m, 0, 1000, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 1000, 0));
	EXPECT_U64(0, release(m, 5000, &cap));

	merger_set_watermark(m, 150);
	EXPECT_U64(1, release(m, 5000, &cap));
	EXPECT_U64(1, cap.records[0].ev.cookie);

	/* The watermark never moves back. */
	merger_set_watermark(m, 120);
	REQUIRE_OK(push_event(m, 0, 140, 3));
	EXPECT_U64(1, release(m, 5000, &cap));
	EXPECT_U64(3, cap.records[1].ev.cookie);
	EXPECT_BOOL(false, cap.records[1].late);

	/* The inversion the clock rule allows shows up as a late record. */
	merger_set_watermark(m, 300);
	EXPECT_U64(1, release(m, 5000, &cap));
	REQUIRE_OK(push_event(m, 0, 180, 4));
	EXPECT_U64(1, release(m, 5000, &cap));
	EXPECT_U64(4, cap.records[3].ev.cookie);
	EXPECT_BOOL(true, cap.records[3].late);

	/* The clock rule never declares stalls. */
	EXPECT_U64(0, cap.n_stalls);
	REQUIRE_OK(merger_cpu_stats(m, 0, 5000, &cs));
	EXPECT_U64(1, cs.late);
	EXPECT_BOOL(false, cs.stalled);
	merger_free(m);
}

static void test_max_pending_forces_oldest(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	struct merger_stats st;
	struct merger *m;

	cfg.max_pending = 3;
	REQUIRE_OK(merger_new(&cfg, &m));
	for (uint64_t i = 0; i < 5; i++)
		REQUIRE_OK(push_event(m, 0, 500 - 100 * i, i + 1));

	/* Pushing past the limit holds everything until the next release. */
	merger_get_stats(m, &st);
	EXPECT_U64(5, st.pending);

	EXPECT_U64(2, release(m, 600, &cap));
	EXPECT_U64(5, cap.records[0].ev.cookie);
	EXPECT_U64(4, cap.records[1].ev.cookie);
	merger_get_stats(m, &st);
	EXPECT_U64(3, st.pending);
	EXPECT_U64(2, st.forced);
	EXPECT_U64(200, st.last_released_ts);

	/* Records older than the forced ones are late. */
	REQUIRE_OK(push_event(m, 0, 150, 6));
	EXPECT_U64(1, release(m, 600, &cap));
	EXPECT_BOOL(true, cap.records[2].late);
	merger_get_stats(m, &st);
	EXPECT_U64(2, st.forced);
	EXPECT_U64(3, st.pending);
	merger_free(m);
}

static void test_cpus_behind(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(4, &cap);
	unsigned int cpus[4];
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	EXPECT_U64(0, release(m, 0, &cap));

	/* Nothing is held, so no CPU is behind. */
	EXPECT_U64(0, merger_cpus_behind(m, cpus, 4));

	REQUIRE_OK(push_event(m, 0, 300, 1));
	REQUIRE_OK(merger_push_sync(m, 0, 400, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 300, 0));
	REQUIRE_OK(merger_push_sync(m, 2, 299, 0));
	REQUIRE_OK(merger_set_online(m, 3, false, 0));

	/* CPU 1's frontier reaches the oldest record, CPU 3 is offline. */
	EXPECT_U64(1, merger_cpus_behind(m, cpus, 4));
	EXPECT_U64(2, cpus[0]);

	/* CPU 3 back online without a frontier. */
	REQUIRE_OK(merger_set_online(m, 3, true, 500));
	EXPECT_U64(2, merger_cpus_behind(m, cpus, 4));
	EXPECT_U64(2, cpus[0]);
	EXPECT_U64(3, cpus[1]);

	/* At most size entries. */
	EXPECT_U64(1, merger_cpus_behind(m, cpus, 1));
	EXPECT_U64(2, cpus[0]);
	EXPECT_U64(0, merger_cpus_behind(m, NULL, 0));

	REQUIRE_OK(merger_push_sync(m, 2, 350, 0));
	REQUIRE_OK(merger_push_sync(m, 3, 550, 0));
	EXPECT_U64(0, merger_cpus_behind(m, cpus, 4));
	EXPECT_U64(1, release(m, 600, &cap));
	merger_free(m);
}

/* A stalled CPU's floor counts as its frontier until the next release moves it. */
static void test_cpus_behind_stalled(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	unsigned int cpus[2];
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	EXPECT_U64(0, release(m, 0, &cap));
	REQUIRE_OK(merger_push_sync(m, 0, 5000, 0));
	REQUIRE_OK(push_event(m, 0, 4500, 1));
	EXPECT_U64(0, release(m, 5000, &cap));
	EXPECT_U64(1, cap.n_stalls);

	/* Floor 4000 < 4500. */
	EXPECT_U64(1, merger_cpus_behind(m, cpus, 2));
	EXPECT_U64(1, cpus[0]);

	/* Floor 4500 released ts 4500; a record equal to the floor is not behind it. */
	EXPECT_U64(1, release(m, 5500, &cap));
	REQUIRE_OK(push_event(m, 0, 4500, 2));
	EXPECT_U64(0, merger_cpus_behind(m, cpus, 2));
	EXPECT_U64(1, release(m, 5500, &cap));
	REQUIRE_OK(push_event(m, 0, 4501, 3));
	EXPECT_U64(1, merger_cpus_behind(m, cpus, 2));
	EXPECT_U64(1, cpus[0]);
	merger_free(m);
}

static void test_stats_count_pushes(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(2, &cap);
	struct merger_cpu_stats cs;
	struct merger_stats st;
	struct merger *m;

	REQUIRE_OK(merger_new(&cfg, &m));
	for (uint64_t i = 0; i < 10; i++)
		REQUIRE_OK(push_event(m, i % 2, 10 * i, i));
	REQUIRE_OK(merger_push_sync(m, 0, 45, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 1000, 0));
	REQUIRE_OK(merger_push_sync(m, 1, 1000, 3));

	EXPECT_U64(5, release(m, 100, &cap));
	for (size_t i = 1; i < cap.n; i++)
		EXPECT_LE(cap.records[i - 1].ev.ts_ns, cap.records[i].ev.ts_ns);

	REQUIRE_OK(merger_cpu_stats(m, 0, 100, &cs));
	EXPECT_U64(5, cs.events);
	EXPECT_U64(1, cs.syncs);
	EXPECT_U64(0, cs.syncs_busy);
	EXPECT_U64(55, cs.lag_ns);
	REQUIRE_OK(merger_cpu_stats(m, 1, 100, &cs));
	EXPECT_U64(5, cs.events);
	EXPECT_U64(2, cs.syncs);
	EXPECT_U64(1, cs.syncs_busy);
	/* The frontier is ahead of now: no lag. */
	EXPECT_U64(0, cs.lag_ns);

	merger_get_stats(m, &st);
	EXPECT_U64(5, st.pending);
	EXPECT_U64(5, st.released);
	EXPECT_U64(0, st.forced);
	EXPECT_U64(40, st.last_released_ts);
	EXPECT_U64(0, cap.overflow);
	merger_free(m);
}

/* Enough records to grow the queue several times, pushed in a scrambled order. */
static void test_orders_many_records(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(1, &cap);
	uint64_t previous = 0, count = 0, expected = 0;
	struct merger *m;

	cfg.max_pending = 10000;
	REQUIRE_OK(merger_new(&cfg, &m));
	for (uint64_t i = 0; i < 5000; i++) {
		/* 7919 is coprime with 5000, so i * 7919 mod 5000 visits every value once. */
		uint64_t ts = (i * 7919) % 5000;

		REQUIRE_OK(push_event(m, 0, ts, ts));
		expected += ts;
	}

	/* Release in slices to check the order across many pops. */
	for (uint64_t limit = 0; limit < 5000; limit += 50) {
		cap.n = 0;
		REQUIRE_OK(merger_push_sync(m, 0, limit + 49, 0));
		EXPECT_U64(50, release(m, limit + 50, &cap));
		for (size_t i = 0; i < cap.n; i++) {
			const struct record *r = &cap.records[i];

			EXPECT_LE(previous, r->ev.ts_ns);
			previous = r->ev.ts_ns;
			expected -= r->ev.cookie;
			count++;
		}
	}
	EXPECT_U64(5000, count);
	EXPECT_U64(0, expected);
	merger_free(m);
}

/* Order check of a released stream whose cookies number the pushes. */
struct order_check {
	uint64_t limit;		/* newest ts_ns the current release may emit */
	uint64_t prev_ts;
	uint64_t prev_id;
	uint64_t count;
	uint64_t id_sum;
	unsigned int errors;
};

static void order_check_emit(const struct record *r, void *userdata)
{
	struct order_check *oc = userdata;

	if (r->ev.ts_ns < oc->prev_ts || r->ev.ts_ns > oc->limit || r->late ||
	    (oc->count > 0 && r->ev.ts_ns == oc->prev_ts && r->ev.cookie < oc->prev_id))
		oc->errors++;
	oc->prev_ts = r->ev.ts_ns;
	oc->prev_id = r->ev.cookie;
	oc->id_sum += r->ev.cookie;
	oc->count++;
}

/* Eight CPUs whose rings deliver mostly in timestamp order, with some records
 * behind newer ones of the same CPU, released in many rounds: the stream must
 * come out in (ts_ns, push) order with nothing lost or late. */
static void test_merges_queues_of_many_cpus(void)
{
	struct capture cap = {};
	struct merger_config cfg = test_config(8, &cap);
	struct order_check oc = {};
	uint64_t clock[8] = {}, rng = 1, pushed = 0, id_sum = 0;
	struct merger *m;

	cfg.max_pending = 1000000;
	REQUIRE_OK(merger_new(&cfg, &m));
	for (unsigned int round = 0; round < 40; round++) {
		uint64_t frontier = UINT64_MAX;

		for (unsigned int i = 0; i < 700; i++) {
			unsigned int cpu;
			uint64_t ts;

			rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
			cpu = (unsigned int)(rng >> 33) % 8;
			clock[cpu] += (rng >> 40) % 4;
			ts = clock[cpu];
			/* One record in 16 took its timestamp before up to 24
			 * newer records of its CPU were written. */
			if ((rng >> 20) % 16 == 0 && ts > 24 + round * 1000)
				ts -= (rng >> 24) % 24;
			if (ts < round * 1000)
				ts = round * 1000;
			REQUIRE_OK(push_event(m, cpu, ts, ++pushed));
			id_sum += pushed;
		}
		for (unsigned int cpu = 0; cpu < 8; cpu++) {
			if (clock[cpu] < round * 1000 + 500)
				clock[cpu] = round * 1000 + 500;
			REQUIRE_OK(merger_push_sync(m, cpu, clock[cpu] - 24, 0));
			if (clock[cpu] - 24 < frontier)
				frontier = clock[cpu] - 24;
		}
		oc.limit = frontier;
		merger_release(m, 0, order_check_emit, &oc);
		for (unsigned int cpu = 0; cpu < 8; cpu++)
			clock[cpu] = clock[cpu] > (round + 1) * 1000 ? clock[cpu] : (round + 1) * 1000;
	}
	for (unsigned int cpu = 0; cpu < 8; cpu++)
		REQUIRE_OK(merger_push_sync(m, cpu, UINT64_MAX - 1, 0));
	oc.limit = UINT64_MAX;
	merger_release(m, 0, order_check_emit, &oc);

	EXPECT_U64(0, oc.errors);
	EXPECT_U64(pushed, oc.count);
	EXPECT_U64(id_sum, oc.id_sum);
	EXPECT_U64(0, cap.n);
	merger_free(m);
}

int main(void)
{
	test_new_rejects_bad_config();
	test_bad_input_rejected();
	test_holds_until_every_cpu_syncs();
	test_busy_sync_proves_nothing();
	test_frontier_never_moves_back();
	test_nesting_within_one_cpu();
	test_equal_timestamps_keep_push_order();
	test_late_records_flagged_and_first();
	test_late_released_without_frontier();
	test_offline_cpu_holds_nothing_back();
	test_all_cpus_offline_releases_all();
	test_grace_starts_at_first_release();
	test_stall_declared_and_ended();
	test_offline_ends_stall();
	test_lost_record_placement();
	test_clock_rule_releases_by_watermark();
	test_max_pending_forces_oldest();
	test_cpus_behind();
	test_cpus_behind_stalled();
	test_stats_count_pushes();
	test_orders_many_records();
	test_merges_queues_of_many_cpus();

	if (failures > 0) {
		fprintf(stderr, "test-merger: %u check(s) failed\n", failures);
		return EXIT_FAILURE;
	}
	printf("test-merger: all checks passed\n");
	return EXIT_SUCCESS;
}
