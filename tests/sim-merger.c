// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Deterministic simulation of the merger against a model of the per-CPU BPF
 * producers, with an oracle that checks every record the merger releases.
 *
 * Model. Each CPU runs event producers that increment the CPU's in-flight
 * counter, read a global simulated CLOCK_MONOTONIC, stall (sometimes for
 * several times max_hold), write their record into the CPU's ring and
 * decrement the counter. Producers on one CPU interleave freely, which models
 * preemption of task-context programs. A nested producer interrupts another
 * one, or a sync, and runs to completion in between. Syncs, periodic and on
 * demand, read the clock and the counter in the order under test and write a
 * sync entry. CPUs freeze (a stalled vCPU), go idle, go offline and come back.
 * A full ring or a random drop loses samples, which the ring reports as a lost
 * entry. A daemon tick drains the rings into the merger, reports hotplug
 * changes, calls merger_release() and requests syncs from the CPUs that
 * merger_cpus_behind() lists.
 *
 * Oracle. It checks that:
 * - every record is released exactly once, lost markers included;
 * - late is set exactly on the records pushed with a ts_ns below the newest
 *   one released, and those come first at the next release;
 * - in-order records come out non-decreasing, in push order for equal ts_ns,
 *   and never past the release limit computed here from the syncs pushed,
 *   except the records forced out by max_pending;
 * - stall callbacks, merger_cpus_behind() and the counters match;
 * - a late record has an excuse: its CPU was stalled past its ts_ns, or a
 *   forced release passed it;
 * - every record is out by the deadline oracle_deadline() derives.
 *
 * Scenarios. "sync" must pass every check. "clock" runs the clock-watermark
 * rule and must produce late records, the inversion that rule allows.
 * "read-first-preempt" lets the sync read the counter before the clock while
 * it can be preempted between the two, and must produce records that arrive
 * behind a sync that claimed to cover them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "merger.h"

#define NSEC_PER_USEC ((uint64_t)1000)
#define NSEC_PER_MSEC ((uint64_t)1000000)
#define NSEC_PER_SEC ((uint64_t)1000000000)
#define PPM 1000000U

#define SIM_MAX_CPUS 8
#define SIM_TRACE_PER_CPU 16
#define SIM_TRACE_TICKS 8
#define LOST_KEY_FLAG ((uint64_t)1 << 63)

/* Ticks allowed after production ends for the merger to drain, in units of
 * max_hold plus the longest producer stall. */
#define SIM_DRAIN_HOLDS 20

/* Bound on simulated events per seed, far above what a run needs (about 3
 * per record plus ticks and syncs), so a livelock fails instead of hanging. */
#define SIM_EVENTS_PER_RECORD 1000
#define SIM_EVENTS_EXTRA 100000000

enum scenario {
	SCENARIO_SYNC,
	SCENARIO_CLOCK,
	SCENARIO_READ_FIRST_PREEMPT,
};

/* splitmix64: small, fast and fully determined by the seed. */
struct rng {
	uint64_t state;
};

static uint64_t rng_next(struct rng *g)
{
	uint64_t z = (g->state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static uint64_t rng_below(struct rng *g, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(g) * n) >> 64);
}

static uint64_t rng_range(struct rng *g, uint64_t lo, uint64_t hi)
{
	return lo + rng_below(g, hi - lo + 1);
}

static bool rng_chance(struct rng *g, uint32_t ppm)
{
	return rng_below(g, PPM) < ppm;
}

struct sim_params {
	unsigned int ncpus;
	enum merger_rule rule;
	bool sync_clock_first;		/* sync reads the clock, then the counter */
	bool sync_preemptible;		/* a sync can be preempted between its two reads */
	uint64_t clock_resolution_ns;	/* coarse clocks make equal timestamps common */
	uint64_t tick_ns;
	uint64_t sync_interval_ns;
	uint64_t max_hold_ns;
	uint64_t long_stall_max_ns;
	size_t max_pending;
	size_t ring_capacity;
	uint64_t mean_gap_ns[SIM_MAX_CPUS];	/* mean time between producer starts */
	uint32_t periodic_skip_ppm[SIM_MAX_CPUS];	/* idle CPUs skip timer syncs */
	uint32_t nest_ppm;
	uint32_t lost_ppm;
	uint32_t medium_stall_ppm;
	uint32_t long_stall_ppm;
	uint32_t split_ts_ppm;		/* producer preempted between increment and clock read */
	uint32_t sync_preempt_ppm;
	uint32_t idle_ppm;
	uint64_t freeze_interval_ns;
	uint64_t hotplug_interval_ns;
};

enum sim_event_kind {
	SIM_TICK,
	SIM_ARRIVAL,
	SIM_PRODUCER_TS,
	SIM_PRODUCER_WRITE,
	SIM_SYNC_PERIODIC,
	SIM_SYNC_ON_DEMAND,
	SIM_SYNC_FINISH,
	SIM_FREEZE,
	SIM_HOTPLUG,
};

struct sim_event {
	uint64_t time;
	uint64_t seq;			/* FIFO among equal times */
	uint32_t kind;
	uint32_t cpu;
	uint32_t gen;			/* CPU generation; stale after a hotplug */
	uint32_t slot;			/* task slot for producer and sync steps */
};

enum ring_kind {
	RING_EVENT,
	RING_SYNC,
	RING_LOST,
};

struct ring_entry {
	uint64_t ts;
	uint64_t value;			/* record id, sync inflight or lost count */
	uint8_t kind;
};

enum trace_kind {
	TRACE_BEGIN,
	TRACE_TS,
	TRACE_WRITE,
	TRACE_NESTED,
	TRACE_DROP,
	TRACE_DROP_SYNC,
	TRACE_SYNC_FIRST,
	TRACE_SYNC,
	TRACE_FREEZE,
	TRACE_OFFLINE,
	TRACE_ONLINE,
	TRACE_PUSH,
	TRACE_PUSH_SYNC,
};

static const char *const trace_names[] = {
	[TRACE_BEGIN] = "begin",
	[TRACE_TS] = "clock",
	[TRACE_WRITE] = "write",
	[TRACE_NESTED] = "nested",
	[TRACE_DROP] = "lost",
	[TRACE_DROP_SYNC] = "lost-sync",
	[TRACE_SYNC_FIRST] = "sync-step1",
	[TRACE_SYNC] = "sync-write",
	[TRACE_FREEZE] = "freeze",
	[TRACE_OFFLINE] = "offline",
	[TRACE_ONLINE] = "online",
	[TRACE_PUSH] = "pushed",
	[TRACE_PUSH_SYNC] = "pushed-sync",
};

struct trace_entry {
	uint64_t time;
	uint64_t id;
	uint64_t ts;
	uint32_t inflight;
	uint8_t kind;
};

/* A producer or a sync between two of its steps. */
struct sim_task {
	uint64_t id;
	uint64_t ts;
	uint64_t first_read;		/* sync: the value of its first read */
	uint32_t cpu;
};

struct sim_cpu {
	bool online;
	bool cycled;			/* went offline since the last tick */
	bool sync_requested;
	uint32_t gen;
	uint32_t inflight;
	uint32_t syncs_running;
	uint64_t frozen_until;
	uint64_t pending_lost;
	struct ring_entry *ring;
	size_t ring_len;
	struct trace_entry trace[SIM_TRACE_PER_CPU];
	uint64_t trace_count;
};

enum record_state {
	REC_PRODUCED,
	REC_LOST,
	REC_IN_RING,
	REC_PUSHED,
	REC_RELEASED,
};

struct oracle_record {
	uint64_t ts;
	uint64_t push_ns;
	uint64_t push_seq;		/* position among all pushes, for equal ts_ns */
	uint32_t cpu;
	uint8_t state;
	bool late;
};

struct oracle_lost {
	uint64_t ts;
	uint64_t count;
	uint64_t push_ns;
	uint64_t push_seq;
	uint32_t cpu;
	bool released;
};

struct oracle_cpu {
	bool online;
	bool online_since_known;
	bool has_frontier;
	bool stalled;
	bool has_pushed;
	bool has_stalled_release;
	bool has_effective;
	bool expect_transition;		/* on_stall due in this release */
	uint64_t online_since_ns;
	uint64_t frontier_ns;
	uint64_t newest_pushed_ts;
	uint64_t last_stalled_release_ns;
	uint64_t effective_ns;
	uint64_t expect_lag_ns;
	size_t lost_head;		/* first unreleased entry of lost_fifo */
	size_t lost_len;
	size_t lost_capacity;
	size_t *lost_fifo;		/* indexes into oracle.lost */
	uint64_t events, syncs, syncs_busy, stalls, late, lost;
};

/* Held records (events and lost markers) by ts_ns, to find the oldest one. */
struct held_entry {
	uint64_t ts;
	uint64_t key;			/* record id, or LOST_KEY_FLAG | index into oracle.lost */
};

struct oracle {
	struct oracle_record *records;
	struct oracle_lost *lost;
	size_t lost_len;
	size_t lost_capacity;
	struct oracle_cpu cpus[SIM_MAX_CPUS];
	struct held_entry *held;
	size_t held_len;
	size_t held_capacity;
	uint64_t pending;
	uint64_t late_pending;
	uint64_t next_push_seq;
	uint64_t last_push_seq;		/* of the newest in-order record released */
	uint64_t max_released_ts;
	uint64_t max_forced_ts;
	bool has_forced;
	uint64_t last_fresh_release_ns;
	uint64_t fresh_deadline_ns;	/* latest end of a fresh CPU's grace period, plus 1 */
	bool has_fresh_release;
	uint64_t watermark_ns;
	/* State of the release in progress. */
	uint64_t now_ns;
	bool has_limit;
	uint64_t limit_ns;
	bool in_order_seen;
	bool in_order_seen_ever;
	uint64_t forced_seen;
	uint64_t last_late_ts;
	uint64_t prev_forced;
};

/* Counters summed over all seeds, also used to prove the run covered each case. */
struct sim_totals {
	uint64_t seeds;
	uint64_t produced;
	uint64_t released;
	uint64_t late;
	uint64_t unexplained_late;
	uint64_t proof_violations;
	uint64_t lost_samples;
	uint64_t lost_records;
	uint64_t forced;
	uint64_t stalls;
	uint64_t syncs;
	uint64_t syncs_busy;
	uint64_t on_demand;
	uint64_t nested;
	uint64_t offline;
	uint64_t freezes;
	uint64_t long_stalls;
	uint64_t equal_ts;
	uint64_t max_latency_ns;
	uint64_t latency_sum_ns;
	uint64_t latency_count;
	uint64_t sim_ns;
};

struct sim {
	uint64_t seed;
	enum scenario scenario;
	struct sim_params p;
	struct rng rng;
	struct merger *merger;
	uint64_t clock_ns;
	uint64_t now_ns;
	uint64_t next_seq;
	struct sim_event *events;
	size_t events_len;
	size_t events_capacity;
	struct sim_task *tasks;
	uint32_t *free_tasks;
	size_t tasks_len;
	size_t free_len;
	size_t tasks_capacity;
	struct sim_cpu cpus[SIM_MAX_CPUS];
	uint64_t records_target;
	uint64_t next_id;
	uint64_t production_end_ns;
	bool production_done;
	bool finished;
	struct {
		uint64_t time;
		uint64_t limit;
		bool has_limit;
		size_t released;
		uint64_t pending;
	} ticks[SIM_TRACE_TICKS];
	uint64_t tick_count;
	struct oracle o;
	struct sim_totals *totals;
};

static void *xrealloc(void *p, size_t n, size_t size)
{
	void *q;

	if (n != 0 && size > SIZE_MAX / n) {
		fprintf(stderr, "sim-merger: allocation of %zu x %zu bytes overflows\n", n, size);
		exit(EXIT_FAILURE);
	}
	q = realloc(p, n * size);
	if (!q && n * size > 0) {
		fprintf(stderr, "sim-merger: out of memory for %zu bytes\n", n * size);
		exit(EXIT_FAILURE);
	}
	return q;
}

/* Grow *array (of *capacity elements) to at least need elements. */
#define GROW(array, capacity, need)							\
	do {										\
		if ((need) > (capacity)) {						\
			size_t _c = (capacity) ? (capacity) : 64;			\
			while (_c < (need))						\
				_c *= 2;						\
			(array) = xrealloc((array), _c, sizeof(*(array)));		\
			(capacity) = _c;						\
		}									\
	} while (0)

static void sim_trace(struct sim *s, unsigned int cpu, enum trace_kind kind, uint64_t id,
		      uint64_t ts)
{
	struct sim_cpu *c = &s->cpus[cpu];
	struct trace_entry *t = &c->trace[c->trace_count++ % SIM_TRACE_PER_CPU];

	t->time = s->now_ns;
	t->kind = kind;
	t->id = id;
	t->ts = ts;
	t->inflight = c->inflight;
}

static void sim_print_params(const struct sim *s)
{
	const struct sim_params *p = &s->p;

	fprintf(stderr, "  seed %" PRIu64 ": %u cpus, rule %s, sync %s, %s, clock resolution %"
		PRIu64 " ns, tick %" PRIu64
		" us, sync interval %" PRIu64 " us, max_hold %" PRIu64 " us, max_pending %zu,"
		" ring %zu entries\n", s->seed, p->ncpus,
		p->rule == MERGER_RULE_SYNC ? "sync" : "clock",
		p->sync_clock_first ? "clock-then-counter" : "counter-then-clock",
		p->sync_preemptible ? "preemptible" : "not preemptible", p->clock_resolution_ns,
		p->tick_ns / NSEC_PER_USEC, p->sync_interval_ns / NSEC_PER_USEC,
		p->max_hold_ns / NSEC_PER_USEC, p->max_pending, p->ring_capacity);
}

static void sim_print_trace_entry(const struct trace_entry *t)
{
	fprintf(stderr, "    t=%" PRIu64 " counter=%u %-11s ", t->time, t->inflight,
		trace_names[t->kind]);
	switch (t->kind) {
	case TRACE_SYNC_FIRST:
		fprintf(stderr, "first read %" PRIu64 "\n", t->id);
		break;
	case TRACE_SYNC:
	case TRACE_DROP_SYNC:
	case TRACE_PUSH_SYNC:
		fprintf(stderr, "ts=%" PRIu64 " inflight read %" PRIu64 "\n", t->ts, t->id);
		break;
	case TRACE_FREEZE:
		fprintf(stderr, "until %" PRIu64 "\n", t->ts);
		break;
	case TRACE_OFFLINE:
	case TRACE_ONLINE:
		fprintf(stderr, "\n");
		break;
	case TRACE_BEGIN:
		fprintf(stderr, "id=%" PRIu64 "\n", t->id);
		break;
	default:
		fprintf(stderr, "id=%" PRIu64 " ts=%" PRIu64 "\n", t->id, t->ts);
		break;
	}
}

static void sim_print_trace(const struct sim *s)
{
	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		const struct sim_cpu *c = &s->cpus[i];
		uint64_t first = c->trace_count > SIM_TRACE_PER_CPU ?
			c->trace_count - SIM_TRACE_PER_CPU : 0;

		fprintf(stderr, "  cpu %u (%s, inflight %u, frontier %s%" PRIu64 "):\n", i,
			c->online ? "online" : "offline", c->inflight,
			s->o.cpus[i].has_frontier ? "" : "none, last ",
			s->o.cpus[i].frontier_ns);
		for (uint64_t k = first; k < c->trace_count; k++)
			sim_print_trace_entry(&c->trace[k % SIM_TRACE_PER_CPU]);
	}

	uint64_t first = s->tick_count > SIM_TRACE_TICKS ? s->tick_count - SIM_TRACE_TICKS : 0;

	fprintf(stderr, "  last ticks:\n");
	for (uint64_t k = first; k < s->tick_count; k++) {
		const __typeof__(s->ticks[0]) *t = &s->ticks[k % SIM_TRACE_TICKS];

		fprintf(stderr, "    t=%" PRIu64 " limit=%s%" PRIu64 " released=%zu pending=%" PRIu64
			"\n", t->time, t->has_limit ? "" : "none ", t->has_limit ? t->limit : 0,
			t->released, t->pending);
	}
}

static void sim_fail(struct sim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

static void sim_fail(struct sim *s, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sim-merger: FAILED at t=%" PRIu64 " ns: ", s->now_ns);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	sim_print_params(s);
	sim_print_trace(s);
	fprintf(stderr, "  rerun: sim-merger --first-seed %" PRIu64 " --seeds 1 --records %" PRIu64
		" --scenario %s\n", s->seed, s->records_target,
		s->scenario == SCENARIO_SYNC ? "sync" :
		s->scenario == SCENARIO_CLOCK ? "clock" : "read-first-preempt");
	exit(EXIT_FAILURE);
}

/* ---- Event queue ---- */

static bool sim_event_before(const struct sim_event *a, const struct sim_event *b)
{
	if (a->time != b->time)
		return a->time < b->time;
	return a->seq < b->seq;
}

static void sim_schedule(struct sim *s, uint64_t time, enum sim_event_kind kind, uint32_t cpu,
			 uint32_t slot)
{
	struct sim_event e = {
		.time = time,
		.seq = s->next_seq++,
		.kind = kind,
		.cpu = cpu,
		.gen = kind == SIM_TICK ? 0 : s->cpus[cpu].gen,
		.slot = slot,
	};
	size_t i;

	GROW(s->events, s->events_capacity, s->events_len + 1);
	i = s->events_len++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!sim_event_before(&e, &s->events[parent]))
			break;
		s->events[i] = s->events[parent];
		i = parent;
	}
	s->events[i] = e;
}

static struct sim_event sim_pop_event(struct sim *s)
{
	struct sim_event top = s->events[0];
	struct sim_event last = s->events[--s->events_len];
	size_t i = 0;

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= s->events_len)
			break;
		if (child + 1 < s->events_len &&
		    sim_event_before(&s->events[child + 1], &s->events[child]))
			child++;
		if (!sim_event_before(&s->events[child], &last))
			break;
		s->events[i] = s->events[child];
		i = child;
	}
	if (s->events_len > 0)
		s->events[i] = last;
	return top;
}

/* ---- Tasks, clock and rings ---- */

static uint32_t sim_task_new(struct sim *s, uint32_t cpu)
{
	uint32_t slot;

	if (s->free_len > 0) {
		slot = s->free_tasks[--s->free_len];
	} else {
		GROW(s->tasks, s->tasks_capacity, s->tasks_len + 1);
		s->free_tasks = xrealloc(s->free_tasks, s->tasks_capacity, sizeof(*s->free_tasks));
		slot = (uint32_t)s->tasks_len++;
	}
	memset(&s->tasks[slot], 0, sizeof(s->tasks[slot]));
	s->tasks[slot].cpu = cpu;
	return slot;
}

static void sim_task_free(struct sim *s, uint32_t slot)
{
	s->free_tasks[s->free_len++] = slot;
}

/* Readings never go back and sometimes repeat, as two close ktime reads can. */
static uint64_t sim_clock_read(struct sim *s)
{
	uint64_t v = s->clock_ns / s->p.clock_resolution_ns * s->p.clock_resolution_ns;

	s->clock_ns += rng_below(&s->rng, 3);
	return v;
}

static void ring_append(struct sim_cpu *c, enum ring_kind kind, uint64_t ts, uint64_t value)
{
	c->ring[c->ring_len++] = (struct ring_entry) { .ts = ts, .value = value, .kind = kind };
}

/* Write one sample into cpu's ring, as perf does: a full ring or a random drop
 * loses it, and the next sample that fits is preceded by a lost entry. */
static bool sim_ring_write(struct sim *s, unsigned int cpu, enum ring_kind kind, uint64_t ts,
			   uint64_t value)
{
	struct sim_cpu *c = &s->cpus[cpu];

	if (c->ring_len + 2 > s->p.ring_capacity || rng_chance(&s->rng, s->p.lost_ppm)) {
		c->pending_lost++;
		s->totals->lost_samples++;
		return false;
	}
	if (c->pending_lost > 0) {
		ring_append(c, RING_LOST, 0, c->pending_lost);
		c->pending_lost = 0;
	}
	ring_append(c, kind, ts, value);
	return true;
}

/* ---- Producers ---- */

static uint64_t sim_new_record(struct sim *s, unsigned int cpu)
{
	uint64_t id = s->next_id++;

	s->o.records[id] = (struct oracle_record) { .cpu = cpu, .state = REC_PRODUCED };
	if (s->next_id == s->records_target) {
		s->production_done = true;
		s->production_end_ns = s->now_ns;
	}
	return id;
}

static void sim_write_record(struct sim *s, unsigned int cpu, uint64_t id, uint64_t ts)
{
	struct oracle_record *rec = &s->o.records[id];

	rec->ts = ts;
	if (sim_ring_write(s, cpu, RING_EVENT, ts, id)) {
		rec->state = REC_IN_RING;
		sim_trace(s, cpu, TRACE_WRITE, id, ts);
	} else {
		rec->state = REC_LOST;
		sim_trace(s, cpu, TRACE_DROP, id, ts);
	}
}

/* An interrupt-context producer: runs to completion inside whatever it interrupted. */
static void sim_nested_producer(struct sim *s, unsigned int cpu)
{
	struct sim_cpu *c = &s->cpus[cpu];
	uint64_t id, ts;

	if (s->production_done)
		return;

	id = sim_new_record(s, cpu);
	c->inflight++;
	ts = sim_clock_read(s);
	sim_trace(s, cpu, TRACE_NESTED, id, ts);
	sim_write_record(s, cpu, id, ts);
	c->inflight--;
	s->totals->nested++;
}

static uint64_t sim_stall_ns(struct sim *s)
{
	const struct sim_params *p = &s->p;

	if (rng_chance(&s->rng, p->long_stall_ppm)) {
		s->totals->long_stalls++;
		return rng_range(&s->rng, p->max_hold_ns / 2, p->long_stall_max_ns);
	}
	if (rng_chance(&s->rng, p->medium_stall_ppm))
		return rng_range(&s->rng, 10 * NSEC_PER_USEC, 5 * NSEC_PER_MSEC);
	return rng_below(&s->rng, 20 * NSEC_PER_USEC);
}

static void sim_producer_take_ts(struct sim *s, uint32_t slot)
{
	struct sim_task *t = &s->tasks[slot];

	t->ts = sim_clock_read(s);
	sim_trace(s, t->cpu, TRACE_TS, t->id, t->ts);
	if (rng_chance(&s->rng, s->p.nest_ppm))
		sim_nested_producer(s, t->cpu);
	sim_schedule(s, s->now_ns + sim_stall_ns(s), SIM_PRODUCER_WRITE, t->cpu, slot);
}

static void sim_arrival(struct sim *s, unsigned int cpu)
{
	const struct sim_params *p = &s->p;
	struct sim_cpu *c = &s->cpus[cpu];
	uint64_t gap;
	uint32_t slot;

	if (s->production_done)
		return;

	slot = sim_task_new(s, cpu);
	s->tasks[slot].id = sim_new_record(s, cpu);
	c->inflight++;
	sim_trace(s, cpu, TRACE_BEGIN, s->tasks[slot].id, 0);
	if (rng_chance(&s->rng, p->split_ts_ppm))
		sim_schedule(s, s->now_ns + rng_range(&s->rng, 1, 500 * NSEC_PER_USEC),
			     SIM_PRODUCER_TS, cpu, slot);
	else
		sim_producer_take_ts(s, slot);

	gap = 1 + rng_below(&s->rng, 2 * p->mean_gap_ns[cpu]);
	if (rng_chance(&s->rng, p->idle_ppm))
		gap += rng_range(&s->rng, 10 * NSEC_PER_MSEC, 300 * NSEC_PER_MSEC);
	sim_schedule(s, s->now_ns + gap, SIM_ARRIVAL, cpu, 0);
}

static void sim_producer_write(struct sim *s, uint32_t slot)
{
	struct sim_task *t = &s->tasks[slot];
	struct sim_cpu *c = &s->cpus[t->cpu];

	if (rng_chance(&s->rng, s->p.nest_ppm))
		sim_nested_producer(s, t->cpu);
	sim_write_record(s, t->cpu, t->id, t->ts);
	c->inflight--;
	sim_task_free(s, slot);
}

/* ---- Syncs ---- */

static void sim_sync_write(struct sim *s, unsigned int cpu, uint64_t ts, uint32_t inflight)
{
	if (sim_ring_write(s, cpu, RING_SYNC, ts, inflight))
		sim_trace(s, cpu, TRACE_SYNC, inflight, ts);
	else
		sim_trace(s, cpu, TRACE_DROP_SYNC, inflight, ts);
}

static void sim_sync_second_read(struct sim *s, unsigned int cpu, uint64_t first_read)
{
	struct sim_cpu *c = &s->cpus[cpu];

	if (s->p.sync_clock_first)
		sim_sync_write(s, cpu, first_read, c->inflight);
	else
		sim_sync_write(s, cpu, sim_clock_read(s), (uint32_t)first_read);
}

static void sim_sync_start(struct sim *s, unsigned int cpu)
{
	struct sim_cpu *c = &s->cpus[cpu];
	uint64_t first = s->p.sync_clock_first ? sim_clock_read(s) : c->inflight;
	uint32_t slot;

	sim_trace(s, cpu, TRACE_SYNC_FIRST, first, s->clock_ns);
	if (s->p.sync_preemptible && rng_chance(&s->rng, s->p.sync_preempt_ppm)) {
		slot = sim_task_new(s, cpu);
		s->tasks[slot].first_read = first;
		c->syncs_running++;
		sim_schedule(s, s->now_ns + rng_range(&s->rng, 1, 2 * NSEC_PER_MSEC),
			     SIM_SYNC_FINISH, cpu, slot);
		return;
	}

	/* Not preemptible: only an interrupt can run between the two reads. */
	if (rng_chance(&s->rng, s->p.nest_ppm))
		sim_nested_producer(s, cpu);
	sim_sync_second_read(s, cpu, first);
}

static void sim_sync_finish(struct sim *s, uint32_t slot)
{
	struct sim_task *t = &s->tasks[slot];

	s->cpus[t->cpu].syncs_running--;
	sim_sync_second_read(s, t->cpu, t->first_read);
	sim_task_free(s, slot);
}

/* ---- Hotplug and freezes ---- */

static void sim_cpu_start_chains(struct sim *s, unsigned int cpu)
{
	sim_schedule(s, s->now_ns + 1 + rng_below(&s->rng, 2 * s->p.mean_gap_ns[cpu]), SIM_ARRIVAL,
		     cpu, 0);
	sim_schedule(s, s->now_ns + 1 + rng_below(&s->rng, s->p.sync_interval_ns),
		     SIM_SYNC_PERIODIC, cpu, 0);
}

/* The kernel takes a CPU down only once nothing runs on it, like hotplug
 * waiting for migrate-disabled sections to end. */
static void sim_hotplug(struct sim *s, unsigned int cpu)
{
	struct sim_cpu *c = &s->cpus[cpu];

	if (c->online) {
		if (c->inflight > 0 || c->syncs_running > 0) {
			sim_schedule(s, s->now_ns + NSEC_PER_MSEC, SIM_HOTPLUG, cpu, 0);
			return;
		}
		c->online = false;
		c->cycled = true;
		c->sync_requested = false;
		c->gen++;
		sim_trace(s, cpu, TRACE_OFFLINE, 0, 0);
		s->totals->offline++;
	} else {
		c->online = true;
		c->gen++;
		sim_trace(s, cpu, TRACE_ONLINE, 0, 0);
		sim_cpu_start_chains(s, cpu);
	}

	sim_schedule(s, s->now_ns + 1 + rng_below(&s->rng, 2 * s->p.hotplug_interval_ns),
		     SIM_HOTPLUG, cpu, 0);
}

static void sim_freeze(struct sim *s, unsigned int cpu)
{
	struct sim_cpu *c = &s->cpus[cpu];
	uint64_t d = rng_chance(&s->rng, PPM / 10) ?
		rng_range(&s->rng, s->p.max_hold_ns, 3 * s->p.max_hold_ns) :
		rng_range(&s->rng, NSEC_PER_USEC, 20 * NSEC_PER_MSEC);

	if (s->now_ns + d > c->frozen_until)
		c->frozen_until = s->now_ns + d;
	sim_trace(s, cpu, TRACE_FREEZE, 0, c->frozen_until);
	s->totals->freezes++;
	sim_schedule(s, s->now_ns + 1 + rng_below(&s->rng, 2 * s->p.freeze_interval_ns),
		     SIM_FREEZE, cpu, 0);
}

/* ---- Oracle ---- */

static void held_push(struct oracle *o, uint64_t ts, uint64_t key)
{
	struct held_entry e = { .ts = ts, .key = key };
	size_t i;

	GROW(o->held, o->held_capacity, o->held_len + 1);
	i = o->held_len++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (o->held[parent].ts <= e.ts)
			break;
		o->held[i] = o->held[parent];
		i = parent;
	}
	o->held[i] = e;
}

static void held_pop(struct oracle *o)
{
	struct held_entry last = o->held[--o->held_len];
	size_t i = 0;

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= o->held_len)
			break;
		if (child + 1 < o->held_len && o->held[child + 1].ts < o->held[child].ts)
			child++;
		if (o->held[child].ts >= last.ts)
			break;
		o->held[i] = o->held[child];
		i = child;
	}
	if (o->held_len > 0)
		o->held[i] = last;
}

static bool held_is_released(const struct oracle *o, const struct held_entry *e)
{
	if (e->key & LOST_KEY_FLAG)
		return o->lost[e->key & ~LOST_KEY_FLAG].released;
	return o->records[e->key].state == REC_RELEASED;
}

/* Return the oldest held ts_ns, dropping released entries from the top. */
static bool held_oldest(struct oracle *o, uint64_t *ret_ts)
{
	while (o->held_len > 0 && held_is_released(o, &o->held[0]))
		held_pop(o);
	if (o->held_len == 0)
		return false;
	*ret_ts = o->held[0].ts;
	return true;
}

static uint64_t oracle_lag(const struct oracle_cpu *oc, uint64_t now_ns)
{
	uint64_t base = oc->has_frontier ? oc->frontier_ns : oc->online_since_ns;

	return now_ns > base ? now_ns - base : 0;
}

static void oracle_set_online(struct sim *s, unsigned int cpu, bool online)
{
	struct oracle_cpu *oc = &s->o.cpus[cpu];

	if (online) {
		oc->online = true;
		oc->online_since_known = true;
		oc->online_since_ns = s->now_ns;
		oc->has_frontier = false;
		return;
	}

	oc->online = false;
	oc->expect_transition = oc->stalled;
	oc->expect_lag_ns = oracle_lag(oc, s->now_ns);
	oc->stalled = false;
}

static void sim_merger_set_online(struct sim *s, unsigned int cpu, bool online)
{
	int r;

	oracle_set_online(s, cpu, online);
	r = merger_set_online(s->merger, cpu, online, s->now_ns);
	if (r < 0)
		sim_fail(s, "merger_set_online(cpu %u, %d) returned %d", cpu, online, r);
	if (s->o.cpus[cpu].expect_transition)
		sim_fail(s, "cpu %u went offline while stalled without an on_stall(false) call", cpu);
}

/* The proof the BPF protocol gives: after a sync with inflight 0, no record of
 * that CPU older than the sync's ts_ns can still arrive. */
static void oracle_check_proof(struct sim *s, unsigned int cpu, uint64_t id, uint64_t ts)
{
	const struct oracle_cpu *oc = &s->o.cpus[cpu];

	if (!oc->has_frontier || ts >= oc->frontier_ns)
		return;
	s->totals->proof_violations++;
	if (s->scenario != SCENARIO_READ_FIRST_PREEMPT)
		sim_fail(s, "record %" PRIu64 " of cpu %u with ts %" PRIu64 " arrived behind a sync"
			 " with inflight 0 at ts %" PRIu64, id, cpu, ts, oc->frontier_ns);
}

/* A late record must have an excuse: its CPU stalled long enough for the release
 * limit to pass its ts_ns, or a forced release passed it. */
static void oracle_check_late_excuse(struct sim *s, unsigned int cpu, uint64_t id, uint64_t ts)
{
	const struct oracle_cpu *oc = &s->o.cpus[cpu];

	if (s->p.rule != MERGER_RULE_SYNC)
		return;
	if (oc->has_stalled_release && oc->last_stalled_release_ns > ts + s->p.max_hold_ns)
		return;
	if (s->o.has_forced && s->o.max_forced_ts > ts)
		return;
	s->totals->unexplained_late++;
	if (s->scenario != SCENARIO_READ_FIRST_PREEMPT)
		sim_fail(s, "record %" PRIu64 " of cpu %u (ts %" PRIu64 ") is late, but its cpu was"
			 " not stalled past it and no forced release passed it", id, cpu, ts);
}

static void oracle_push_event(struct sim *s, unsigned int cpu, uint64_t id)
{
	struct oracle *o = &s->o;
	struct oracle_record *rec = &o->records[id];
	struct oracle_cpu *oc = &o->cpus[cpu];

	if (rec->state != REC_IN_RING || rec->cpu != cpu)
		sim_fail(s, "record %" PRIu64 " drained from cpu %u in state %u (cpu %u)", id, cpu,
			 rec->state, rec->cpu);

	oracle_check_proof(s, cpu, id, rec->ts);
	rec->state = REC_PUSHED;
	rec->push_ns = s->now_ns;
	rec->push_seq = o->next_push_seq++;
	rec->late = rec->ts < o->max_released_ts;
	if (rec->ts == o->max_released_ts)
		s->totals->equal_ts++;
	o->pending++;
	oc->events++;
	if (!oc->has_pushed || rec->ts > oc->newest_pushed_ts) {
		oc->newest_pushed_ts = rec->ts;
		oc->has_pushed = true;
	}

	if (rec->late) {
		o->late_pending++;
		oc->late++;
		oracle_check_late_excuse(s, cpu, id, rec->ts);
	} else {
		held_push(o, rec->ts, id);
	}
	sim_trace(s, cpu, TRACE_PUSH, id, rec->ts);
}

static void oracle_push_sync(struct sim *s, unsigned int cpu, uint64_t ts, uint32_t inflight)
{
	struct oracle_cpu *oc = &s->o.cpus[cpu];

	oc->syncs++;
	sim_trace(s, cpu, TRACE_PUSH_SYNC, inflight, ts);
	if (inflight > 0) {
		oc->syncs_busy++;
		return;
	}
	if (!oc->has_frontier || ts > oc->frontier_ns) {
		oc->frontier_ns = ts;
		oc->has_frontier = true;
	}
}

static void oracle_push_lost(struct sim *s, unsigned int cpu, uint64_t count)
{
	struct oracle *o = &s->o;
	struct oracle_cpu *oc = &o->cpus[cpu];
	uint64_t ts = o->max_released_ts;
	size_t index = o->lost_len;

	if (oc->has_pushed && oc->newest_pushed_ts > ts)
		ts = oc->newest_pushed_ts;

	GROW(o->lost, o->lost_capacity, o->lost_len + 1);
	o->lost[o->lost_len++] = (struct oracle_lost) {
		.ts = ts, .count = count, .push_ns = s->now_ns, .push_seq = o->next_push_seq++,
		.cpu = cpu,
	};
	GROW(oc->lost_fifo, oc->lost_capacity, oc->lost_len + 1);
	oc->lost_fifo[oc->lost_len++] = index;
	oc->lost += count;
	o->pending++;
	held_push(o, ts, LOST_KEY_FLAG | index);
}

static bool oracle_effective_frontier(const struct sim *s, const struct oracle_cpu *oc,
				      uint64_t *ret_frontier)
{
	uint64_t floor = s->now_ns > s->p.max_hold_ns ? s->now_ns - s->p.max_hold_ns : 0;

	if (oc->stalled) {
		*ret_frontier = oc->has_frontier && oc->frontier_ns > floor ? oc->frontier_ns : floor;
		return true;
	}
	*ret_frontier = oc->frontier_ns;
	return oc->has_frontier;
}

/* Compute the stall transitions and the release limit that merger_release(now) must apply. */
static void oracle_before_release(struct sim *s)
{
	struct oracle *o = &s->o;
	bool fresh = false;

	o->now_ns = s->now_ns;
	o->in_order_seen = false;
	o->forced_seen = 0;
	o->last_late_ts = 0;
	o->has_limit = true;
	o->limit_ns = UINT64_MAX;

	for (unsigned int i = 0; i < s->p.ncpus && s->p.rule == MERGER_RULE_SYNC; i++) {
		struct oracle_cpu *oc = &o->cpus[i];
		uint64_t lag;

		if (!oc->online)
			continue;
		if (!oc->online_since_known) {
			oc->online_since_ns = s->now_ns;
			oc->online_since_known = true;
		}

		lag = oracle_lag(oc, s->now_ns);
		oc->expect_transition = (lag > s->p.max_hold_ns) != oc->stalled;
		oc->expect_lag_ns = lag;
		oc->stalled = lag > s->p.max_hold_ns;
		if (oc->stalled) {
			oc->has_stalled_release = true;
			oc->last_stalled_release_ns = s->now_ns;
			if (oc->expect_transition)
				oc->stalls++;
		}

		oc->has_effective = oracle_effective_frontier(s, oc, &oc->effective_ns);
		if (!oc->has_effective) {
			/* Online without a frontier: it holds everything back until it
			 * syncs or its grace period ends. */
			o->has_limit = false;
			fresh = true;
			if (oc->online_since_ns + s->p.max_hold_ns + 1 > o->fresh_deadline_ns)
				o->fresh_deadline_ns = oc->online_since_ns + s->p.max_hold_ns + 1;
		} else if (oc->effective_ns < o->limit_ns) {
			o->limit_ns = oc->effective_ns;
		}
	}

	if (s->p.rule == MERGER_RULE_CLOCK)
		o->limit_ns = o->watermark_ns;
	if (fresh) {
		o->has_fresh_release = true;
		o->last_fresh_release_ns = s->now_ns;
	}
}

static void sim_on_stall(unsigned int cpu, bool stalled, uint64_t lag_ns, void *userdata)
{
	struct sim *s = userdata;
	struct oracle_cpu *oc;

	if (cpu >= s->p.ncpus)
		sim_fail(s, "on_stall for cpu %u of %u", cpu, s->p.ncpus);
	oc = &s->o.cpus[cpu];
	if (!oc->expect_transition)
		sim_fail(s, "unexpected on_stall(cpu %u, %s, lag %" PRIu64 ")", cpu,
			 stalled ? "true" : "false", lag_ns);
	if (stalled != oc->stalled || lag_ns != oc->expect_lag_ns)
		sim_fail(s, "on_stall(cpu %u): expected %s lag %" PRIu64 ", got %s lag %" PRIu64,
			 cpu, oc->stalled ? "true" : "false", oc->expect_lag_ns,
			 stalled ? "true" : "false", lag_ns);
	oc->expect_transition = false;
	if (stalled)
		s->totals->stalls++;
}

/*
 * Return the tick by which a record must be out. Under the sync rule every online
 * CPU's effective frontier is at least now - max_hold, because a CPU whose proven
 * frontier lags more is stalled and gets exactly that. The exception is a CPU
 * online without a frontier, which holds everything back for up to max_hold
 * after it came online. So the record is out at the first tick at or after its
 * push, its ts_ns + max_hold and the end of any such grace period since its push.
 * That is at most max_hold + tick after the push when no CPU came online.
 */
static uint64_t oracle_deadline(const struct sim *s, uint64_t push_ns, uint64_t ts)
{
	const struct oracle *o = &s->o;
	uint64_t due = ts + (s->p.rule == MERGER_RULE_SYNC ? s->p.max_hold_ns : 0);

	if (push_ns > due)
		due = push_ns;
	if (o->has_fresh_release && o->last_fresh_release_ns >= push_ns &&
	    o->fresh_deadline_ns > due)
		due = o->fresh_deadline_ns;
	return (due + s->p.tick_ns - 1) / s->p.tick_ns * s->p.tick_ns;
}

/* Checks shared by events and lost markers released in order. */
static void oracle_check_in_order(struct sim *s, const struct record *r, uint64_t push_ns,
				  uint64_t push_seq)
{
	struct oracle *o = &s->o;
	uint64_t ts = r->ev.ts_ns;
	uint64_t latency;

	if (ts < o->max_released_ts)
		sim_fail(s, "in-order record (cpu %u, ts %" PRIu64 ") released after ts %" PRIu64,
			 r->ev.cpu, ts, o->max_released_ts);
	if (ts == o->max_released_ts && o->in_order_seen_ever && push_seq < o->last_push_seq)
		sim_fail(s, "records with equal ts %" PRIu64 " released out of push order", ts);
	o->in_order_seen = true;
	o->in_order_seen_ever = true;
	o->max_released_ts = ts;
	o->last_push_seq = push_seq;

	if (!o->has_limit || ts > o->limit_ns) {
		/* Only max_pending may release past the limit, after all the rest. */
		o->forced_seen++;
		o->has_forced = true;
		o->max_forced_ts = ts;
	} else if (o->forced_seen > 0) {
		sim_fail(s, "record at ts %" PRIu64 " within the limit after a forced one", ts);
	}

	latency = s->now_ns - push_ns;
	s->totals->latency_sum_ns += latency;
	s->totals->latency_count++;
	if (latency > s->totals->max_latency_ns)
		s->totals->max_latency_ns = latency;
	if (s->now_ns > oracle_deadline(s, push_ns, ts))
		sim_fail(s, "record (cpu %u, ts %" PRIu64 ", pushed %" PRIu64 ") released at %" PRIu64
			 ", after its deadline %" PRIu64, r->ev.cpu, ts, push_ns, s->now_ns,
			 oracle_deadline(s, push_ns, ts));
}

static void oracle_release_lost(struct sim *s, const struct record *r)
{
	struct oracle *o = &s->o;
	struct oracle_cpu *oc;
	struct oracle_lost *l;

	if (r->ev.cpu >= s->p.ncpus)
		sim_fail(s, "lost record for cpu %u of %u", r->ev.cpu, s->p.ncpus);
	oc = &o->cpus[r->ev.cpu];
	if (oc->lost_head == oc->lost_len)
		sim_fail(s, "unexpected lost record for cpu %u (count %" PRIu64 ")", r->ev.cpu,
			 r->lost_count);

	l = &o->lost[oc->lost_fifo[oc->lost_head++]];
	if (r->lost_count != l->count || r->ev.ts_ns != l->ts || r->late)
		sim_fail(s, "lost record for cpu %u: expected count %" PRIu64 " ts %" PRIu64
			 " not late, got count %" PRIu64 " ts %" PRIu64 " late %d", r->ev.cpu,
			 l->count, l->ts, r->lost_count, (uint64_t)r->ev.ts_ns, r->late);
	l->released = true;
	o->pending--;
	s->totals->lost_records++;
	oracle_check_in_order(s, r, l->push_ns, l->push_seq);
}

static void oracle_release_event(struct sim *s, const struct record *r)
{
	struct oracle *o = &s->o;
	uint64_t id = r->ev.cookie;
	struct oracle_record *rec;

	if (id >= s->next_id)
		sim_fail(s, "released a record with unknown id %" PRIu64, id);
	rec = &o->records[id];
	if (rec->state != REC_PUSHED)
		sim_fail(s, "record %" PRIu64 " released in state %u (duplicate or never pushed)",
			 id, rec->state);
	if (r->ev.ts_ns != rec->ts || r->ev.cpu != rec->cpu ||
	    r->ev.type != TCPTAP_EV_CONNECT + id % 4)
		sim_fail(s, "record %" PRIu64 " released with ts %" PRIu64 " cpu %u, pushed with ts %"
			 PRIu64 " cpu %u", id, (uint64_t)r->ev.ts_ns, r->ev.cpu, rec->ts, rec->cpu);
	if (r->late != rec->late)
		sim_fail(s, "record %" PRIu64 " (cpu %u, ts %" PRIu64 "): expected late %d, got %d",
			 id, rec->cpu, rec->ts, rec->late, r->late);
	rec->state = REC_RELEASED;
	o->pending--;
	s->totals->released++;

	if (!r->late) {
		oracle_check_in_order(s, r, rec->push_ns, rec->push_seq);
		return;
	}

	if (o->in_order_seen)
		sim_fail(s, "late record %" PRIu64 " released after in-order ones", id);
	if (r->ev.ts_ns < o->last_late_ts)
		sim_fail(s, "late record %" PRIu64 " (ts %" PRIu64 ") after a late one at ts %" PRIu64,
			 id, (uint64_t)r->ev.ts_ns, o->last_late_ts);
	o->last_late_ts = r->ev.ts_ns;
	o->late_pending--;
	s->totals->late++;
}

static void sim_emit(const struct record *r, void *userdata)
{
	struct sim *s = userdata;

	if (r->ev.type == RECORD_LOST)
		oracle_release_lost(s, r);
	else
		oracle_release_event(s, r);
}

static void oracle_check_cpus_behind(struct sim *s, bool has_oldest, uint64_t oldest)
{
	unsigned int got[SIM_MAX_CPUS], expected[SIM_MAX_CPUS];
	size_t n_got, n_expected = 0;

	n_got = merger_cpus_behind(s->merger, got, SIM_MAX_CPUS);
	for (unsigned int i = 0; i < s->p.ncpus && has_oldest; i++) {
		const struct oracle_cpu *oc = &s->o.cpus[i];
		uint64_t f;

		if (!oc->online)
			continue;
		if (!oracle_effective_frontier(s, oc, &f) || f < oldest)
			expected[n_expected++] = i;
	}

	if (n_got != n_expected)
		sim_fail(s, "merger_cpus_behind: expected %zu cpus, got %zu", n_expected, n_got);
	for (size_t i = 0; i < n_got; i++)
		if (got[i] != expected[i])
			sim_fail(s, "merger_cpus_behind[%zu]: expected cpu %u, got %u", i,
				 expected[i], got[i]);

	/* The daemon asks exactly these CPUs for a sync. */
	for (size_t i = 0; i < n_got; i++) {
		struct sim_cpu *c = &s->cpus[got[i]];

		if (!c->online || c->sync_requested)
			continue;
		c->sync_requested = true;
		sim_schedule(s, s->now_ns + rng_range(&s->rng, NSEC_PER_USEC, 200 * NSEC_PER_USEC),
			     SIM_SYNC_ON_DEMAND, got[i], 0);
	}
}

static void oracle_after_release(struct sim *s, size_t n_released)
{
	struct oracle *o = &s->o;
	struct merger_stats st;
	uint64_t oldest = 0;
	bool has_oldest;

	for (unsigned int i = 0; i < s->p.ncpus; i++)
		if (o->cpus[i].expect_transition)
			sim_fail(s, "missing on_stall(cpu %u, %s)", i,
				 o->cpus[i].stalled ? "true" : "false");
	if (o->late_pending > 0)
		sim_fail(s, "%" PRIu64 " late records not released at the next release",
			 o->late_pending);

	merger_get_stats(s->merger, &st);
	if (st.pending != o->pending)
		sim_fail(s, "merger holds %" PRIu64 " records, expected %" PRIu64, st.pending,
			 o->pending);
	if (st.forced - o->prev_forced != o->forced_seen)
		sim_fail(s, "merger forced %" PRIu64 " records, %" PRIu64 " went past the limit",
			 st.forced - o->prev_forced, o->forced_seen);
	o->prev_forced = st.forced;
	s->totals->forced += o->forced_seen;
	if (st.pending > s->p.max_pending)
		sim_fail(s, "merger holds %" PRIu64 " records, max_pending %zu", st.pending,
			 s->p.max_pending);
	if (st.last_released_ts != o->max_released_ts)
		sim_fail(s, "last_released_ts %" PRIu64 ", expected %" PRIu64, st.last_released_ts,
			 o->max_released_ts);

	/* Liveness: nothing the limit allows stays held. */
	has_oldest = held_oldest(o, &oldest);
	if (has_oldest && o->has_limit && oldest <= o->limit_ns)
		sim_fail(s, "a record at ts %" PRIu64 " is still held although the limit is %" PRIu64,
			 oldest, o->limit_ns);

	s->ticks[s->tick_count % SIM_TRACE_TICKS].time = s->now_ns;
	s->ticks[s->tick_count % SIM_TRACE_TICKS].limit = o->limit_ns;
	s->ticks[s->tick_count % SIM_TRACE_TICKS].has_limit = o->has_limit;
	s->ticks[s->tick_count % SIM_TRACE_TICKS].released = n_released;
	s->ticks[s->tick_count % SIM_TRACE_TICKS].pending = o->pending;
	s->tick_count++;

	oracle_check_cpus_behind(s, has_oldest, oldest);
}

/* ---- Daemon tick ---- */

static void sim_drain_cpu(struct sim *s, unsigned int cpu)
{
	struct sim_cpu *c = &s->cpus[cpu];
	int r = 0;

	for (size_t i = 0; i < c->ring_len; i++) {
		const struct ring_entry *e = &c->ring[i];

		switch (e->kind) {
		case RING_EVENT: {
			struct record rec = {};

			rec.ev.type = (uint8_t)(TCPTAP_EV_CONNECT + e->value % 4);
			rec.ev.cpu = cpu;
			rec.ev.ts_ns = e->ts;
			rec.ev.cookie = e->value;
			oracle_push_event(s, cpu, e->value);
			r = merger_push(s->merger, &rec);
			break;
		}
		case RING_SYNC:
			oracle_push_sync(s, cpu, e->ts, (uint32_t)e->value);
			r = merger_push_sync(s->merger, cpu, e->ts, (uint32_t)e->value);
			break;
		case RING_LOST:
			oracle_push_lost(s, cpu, e->value);
			r = merger_push_lost(s->merger, cpu, e->value);
			break;
		}
		if (r < 0)
			sim_fail(s, "pushing ring entry %zu of cpu %u failed: %s", i, cpu,
				 strerror(-r));
	}
	c->ring_len = 0;
}

static bool sim_idle(const struct sim *s)
{
	if (!s->production_done || s->o.pending > 0)
		return false;
	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		const struct sim_cpu *c = &s->cpus[i];

		if (c->inflight > 0 || c->syncs_running > 0 || c->ring_len > 0 || c->pending_lost > 0)
			return false;
	}
	return true;
}

/* Once production is over, perf would report outstanding losses with the next
 * sample; there is none, so flush them as a lost entry. */
static void sim_flush_lost(struct sim *s)
{
	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		struct sim_cpu *c = &s->cpus[i];

		if (c->inflight > 0 || c->pending_lost == 0)
			continue;
		ring_append(c, RING_LOST, 0, c->pending_lost);
		c->pending_lost = 0;
	}
}

static void sim_tick(struct sim *s)
{
	size_t n;

	if (s->p.rule == MERGER_RULE_CLOCK) {
		s->o.watermark_ns = sim_clock_read(s);
		merger_set_watermark(s->merger, s->o.watermark_ns);
	}
	if (s->production_done)
		sim_flush_lost(s);

	/* A CPU that came online is marked before its records are pushed, one that
	 * went offline after what it left in its ring is pushed. */
	for (unsigned int i = 0; i < s->p.ncpus; i++)
		if (s->cpus[i].online && !s->o.cpus[i].online && !s->cpus[i].cycled)
			sim_merger_set_online(s, i, true);
	for (unsigned int i = 0; i < s->p.ncpus; i++)
		sim_drain_cpu(s, i);
	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		struct sim_cpu *c = &s->cpus[i];

		if (c->cycled && s->o.cpus[i].online)
			sim_merger_set_online(s, i, false);
		if (c->online && !s->o.cpus[i].online)
			sim_merger_set_online(s, i, true);
		c->cycled = false;
	}

	oracle_before_release(s);
	n = merger_release(s->merger, s->now_ns, sim_emit, s);
	oracle_after_release(s, n);

	if (sim_idle(s)) {
		s->finished = true;
		return;
	}
	if (s->production_done &&
	    s->now_ns > s->production_end_ns + SIM_DRAIN_HOLDS * (s->p.max_hold_ns +
								    s->p.long_stall_max_ns))
		sim_fail(s, "the merger still holds %" PRIu64 " records long after production ended",
			 s->o.pending);
	sim_schedule(s, s->now_ns + s->p.tick_ns, SIM_TICK, 0, 0);
}

/* ---- Setup and main loop ---- */

static void sim_choose_params(struct sim *s)
{
	static const uint64_t ticks_us[] = { 500, 1000, 2000, 4000 };
	static const uint64_t intervals_ms[] = { 5, 10, 20 };
	static const uint64_t holds_ms[] = { 20, 50, 100 };
	static const uint64_t gaps_us[] = { 20, 50, 200, 1000, 20000 };
	struct sim_params *p = &s->p;
	struct rng *g = &s->rng;

	p->ncpus = 1 + (unsigned int)rng_below(g, SIM_MAX_CPUS);
	p->rule = s->scenario == SCENARIO_CLOCK ? MERGER_RULE_CLOCK : MERGER_RULE_SYNC;
	if (s->scenario == SCENARIO_READ_FIRST_PREEMPT) {
		p->sync_clock_first = false;
		p->sync_preemptible = true;
	} else {
		/* Counter first is sound only if the sync cannot be preempted. */
		p->sync_clock_first = s->seed % 3 != 0;
		p->sync_preemptible = p->sync_clock_first && s->seed % 3 == 1;
	}
	p->clock_resolution_ns = rng_chance(g, PPM / 4) ? rng_range(g, 1, 100) * NSEC_PER_USEC : 1;
	p->tick_ns = ticks_us[rng_below(g, 4)] * NSEC_PER_USEC;
	p->sync_interval_ns = intervals_ms[rng_below(g, 3)] * NSEC_PER_MSEC;
	p->max_hold_ns = holds_ms[rng_below(g, 3)] * NSEC_PER_MSEC;
	p->long_stall_max_ns = 4 * p->max_hold_ns;
	p->max_pending = s->seed % 8 == 5 ? rng_range(g, 32, 512) : 1U << 22;
	p->ring_capacity = rng_chance(g, PPM / 4) ? rng_range(g, 16, 128) : 1U << 16;
	for (unsigned int i = 0; i < p->ncpus; i++) {
		p->mean_gap_ns[i] = gaps_us[rng_below(g, 5)] * NSEC_PER_USEC * p->ncpus / 2 + 1;
		p->periodic_skip_ppm[i] = p->mean_gap_ns[i] > 10 * NSEC_PER_MSEC ? PPM / 2 : 0;
	}
	p->nest_ppm = (uint32_t)rng_range(g, 0, PPM / 10);
	p->lost_ppm = (uint32_t)rng_range(g, 0, 200);
	p->medium_stall_ppm = (uint32_t)rng_range(g, 0, PPM / 20);
	p->long_stall_ppm = (uint32_t)rng_range(g, 0, 100);
	p->split_ts_ppm = (uint32_t)rng_range(g, 0, PPM / 10);
	p->sync_preempt_ppm = (uint32_t)rng_range(g, PPM / 20, PPM / 2);
	p->idle_ppm = (uint32_t)rng_range(g, 0, 50);
	p->freeze_interval_ns = rng_range(g, 50, 1000) * NSEC_PER_MSEC;
	p->hotplug_interval_ns = rng_range(g, 50, 2000) * NSEC_PER_MSEC;
}

static void sim_init(struct sim *s, struct merger_config *cfg)
{
	int r;

	*cfg = (struct merger_config) {
		.ncpus = s->p.ncpus,
		.rule = s->p.rule,
		.max_hold_ns = s->p.max_hold_ns,
		.max_pending = s->p.max_pending,
		.on_stall = sim_on_stall,
		.userdata = s,
	};
	r = merger_new(cfg, &s->merger);
	if (r < 0)
		sim_fail(s, "merger_new failed: %s", strerror(-r));

	s->o.records = xrealloc(NULL, s->records_target, sizeof(*s->o.records));
	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		struct sim_cpu *c = &s->cpus[i];

		c->online = true;
		c->ring = xrealloc(NULL, s->p.ring_capacity, sizeof(*c->ring));
		s->o.cpus[i].online = true;
		sim_cpu_start_chains(s, i);
		sim_schedule(s, 1 + rng_below(&s->rng, 2 * s->p.freeze_interval_ns), SIM_FREEZE, i, 0);
		if (i > 0)
			sim_schedule(s, 1 + rng_below(&s->rng, 2 * s->p.hotplug_interval_ns),
				     SIM_HOTPLUG, i, 0);
	}
	sim_schedule(s, s->p.tick_ns, SIM_TICK, 0, 0);
}

/* Events of a frozen CPU wait until it thaws; returns true if ev was deferred. */
static bool sim_defer_frozen(struct sim *s, const struct sim_event *ev)
{
	if (ev->kind == SIM_TICK || ev->kind == SIM_FREEZE || ev->kind == SIM_HOTPLUG)
		return false;
	if (s->cpus[ev->cpu].frozen_until <= ev->time)
		return false;
	sim_schedule(s, s->cpus[ev->cpu].frozen_until, ev->kind, ev->cpu, ev->slot);
	return true;
}

static void sim_dispatch(struct sim *s, const struct sim_event *ev)
{
	struct sim_cpu *c = &s->cpus[ev->cpu];

	switch (ev->kind) {
	case SIM_TICK:
		sim_tick(s);
		break;
	case SIM_ARRIVAL:
		sim_arrival(s, ev->cpu);
		break;
	case SIM_PRODUCER_TS:
		sim_producer_take_ts(s, ev->slot);
		break;
	case SIM_PRODUCER_WRITE:
		sim_producer_write(s, ev->slot);
		break;
	case SIM_SYNC_PERIODIC:
		if (!rng_chance(&s->rng, s->p.periodic_skip_ppm[ev->cpu]))
			sim_sync_start(s, ev->cpu);
		sim_schedule(s, s->now_ns + s->p.sync_interval_ns - s->p.sync_interval_ns / 10 +
			     rng_below(&s->rng, s->p.sync_interval_ns / 5), SIM_SYNC_PERIODIC,
			     ev->cpu, 0);
		break;
	case SIM_SYNC_ON_DEMAND:
		c->sync_requested = false;
		s->totals->on_demand++;
		sim_sync_start(s, ev->cpu);
		break;
	case SIM_SYNC_FINISH:
		sim_sync_finish(s, ev->slot);
		break;
	case SIM_FREEZE:
		sim_freeze(s, ev->cpu);
		break;
	case SIM_HOTPLUG:
		sim_hotplug(s, ev->cpu);
		break;
	}
}

/* Producer and sync steps already under way finish even if their generation
 * changed; the chains (arrivals, timer syncs, requests) stop with it. */
static bool sim_event_stale(const struct sim *s, const struct sim_event *ev)
{
	switch (ev->kind) {
	case SIM_ARRIVAL:
	case SIM_SYNC_PERIODIC:
	case SIM_SYNC_ON_DEMAND:
		return ev->gen != s->cpus[ev->cpu].gen || !s->cpus[ev->cpu].online;
	default:
		return false;
	}
}

static void sim_check_totals(struct sim *s)
{
	for (uint64_t id = 0; id < s->next_id; id++) {
		const struct oracle_record *rec = &s->o.records[id];

		if (rec->state != REC_RELEASED && rec->state != REC_LOST)
			sim_fail(s, "record %" PRIu64 " (cpu %u, ts %" PRIu64 ") never released, state %u",
				 id, rec->cpu, rec->ts, rec->state);
	}

	for (unsigned int i = 0; i < s->p.ncpus; i++) {
		const struct oracle_cpu *oc = &s->o.cpus[i];
		struct merger_cpu_stats cs;

		if (merger_cpu_stats(s->merger, i, s->now_ns, &cs) < 0)
			sim_fail(s, "merger_cpu_stats(cpu %u) failed", i);
		if (cs.events != oc->events || cs.syncs != oc->syncs ||
		    cs.syncs_busy != oc->syncs_busy || cs.stalls != oc->stalls ||
		    cs.late != oc->late || cs.lost != oc->lost)
			sim_fail(s, "cpu %u stats: expected events %" PRIu64 " syncs %" PRIu64 " busy %"
				 PRIu64 " stalls %" PRIu64 " late %" PRIu64 " lost %" PRIu64
				 ", got %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
				 " %" PRIu64, i, oc->events, oc->syncs, oc->syncs_busy, oc->stalls,
				 oc->late, oc->lost, cs.events, cs.syncs, cs.syncs_busy, cs.stalls,
				 cs.late, cs.lost);
		s->totals->syncs += oc->syncs;
		s->totals->syncs_busy += oc->syncs_busy;
	}
}

static void sim_free(struct sim *s)
{
	merger_free(s->merger);
	free(s->events);
	free(s->tasks);
	free(s->free_tasks);
	free(s->o.records);
	free(s->o.lost);
	free(s->o.held);
	for (unsigned int i = 0; i < SIM_MAX_CPUS; i++) {
		free(s->cpus[i].ring);
		free(s->o.cpus[i].lost_fifo);
	}
}

static void sim_run_seed(uint64_t seed, uint64_t records, enum scenario scenario,
			 struct sim_totals *totals, bool verbose)
{
	struct sim *s = calloc(1, sizeof(*s));
	struct merger_config cfg;

	if (!s) {
		fprintf(stderr, "sim-merger: out of memory\n");
		exit(EXIT_FAILURE);
	}
	s->seed = seed;
	s->scenario = scenario;
	s->records_target = records;
	s->totals = totals;
	s->rng.state = seed * 0x2545f4914f6cdd1dULL + 1;
	sim_choose_params(s);
	sim_init(s, &cfg);

	for (uint64_t n_events = 0; !s->finished; n_events++) {
		struct sim_event ev;

		if (s->events_len == 0)
			sim_fail(s, "event queue ran dry before the merger drained");
		if (n_events > SIM_EVENTS_PER_RECORD * records + SIM_EVENTS_EXTRA)
			sim_fail(s, "no end after %" PRIu64 " simulated events", n_events);
		ev = sim_pop_event(s);
		s->now_ns = ev.time;
		if (s->clock_ns < ev.time)
			s->clock_ns = ev.time;
		if (sim_event_stale(s, &ev) || sim_defer_frozen(s, &ev))
			continue;
		sim_dispatch(s, &ev);
	}

	sim_check_totals(s);
	totals->seeds++;
	totals->produced += s->next_id;
	totals->sim_ns += s->now_ns;
	if (verbose) {
		sim_print_params(s);
		fprintf(stderr, "    %" PRIu64 " records, simulated %" PRIu64 " ms\n", s->next_id,
			s->now_ns / NSEC_PER_MSEC);
	}
	sim_free(s);
	free(s);
}

/* ---- Command line ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sim-merger [--seeds N] [--records M] [--first-seed S]\n"
		"                  [--scenario sync|clock|read-first-preempt] [--verbose]\n"
		"  --seeds N       number of seeds to run (default 120)\n"
		"  --records M     records produced per seed (default 100000)\n"
		"  --first-seed S  first seed (default 1)\n"
		"  --scenario X    sync: every check must pass (default);\n"
		"                  clock: the clock rule must produce late records;\n"
		"                  read-first-preempt: a sync that reads the counter first and\n"
		"                  can be preempted must let records arrive behind it\n");
}

static int parse_u64(const char *s, uint64_t min, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min)
		return -EINVAL;
	*ret = v;
	return 0;
}

struct options {
	uint64_t seeds;
	uint64_t records;
	uint64_t first_seed;
	enum scenario scenario;
	bool verbose;
};

static int parse_options(int argc, char **argv, struct options *ret_opts)
{
	struct options opts = { .seeds = 120, .records = 100000, .first_seed = 1 };

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int r = 0;

		if (strcmp(a, "--verbose") == 0) {
			opts.verbose = true;
			continue;
		}
		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(EXIT_SUCCESS);
		}
		if (!v) {
			fprintf(stderr, "sim-merger: invalid or incomplete option '%s'\n", a);
			return -EINVAL;
		}
		i++;
		if (strcmp(a, "--seeds") == 0)
			r = parse_u64(v, 1, &opts.seeds);
		else if (strcmp(a, "--records") == 0)
			r = parse_u64(v, 1, &opts.records);
		else if (strcmp(a, "--first-seed") == 0)
			r = parse_u64(v, 0, &opts.first_seed);
		else if (strcmp(a, "--scenario") == 0) {
			if (strcmp(v, "sync") == 0)
				opts.scenario = SCENARIO_SYNC;
			else if (strcmp(v, "clock") == 0)
				opts.scenario = SCENARIO_CLOCK;
			else if (strcmp(v, "read-first-preempt") == 0)
				opts.scenario = SCENARIO_READ_FIRST_PREEMPT;
			else
				r = -EINVAL;
		} else {
			fprintf(stderr, "sim-merger: unknown option '%s'\n", a);
			return -EINVAL;
		}
		if (r < 0) {
			fprintf(stderr, "sim-merger: invalid value '%s' for %s\n", v, a);
			return r;
		}
	}

	*ret_opts = opts;
	return 0;
}

/* ---- Verdict ---- */

static void print_totals(const struct sim_totals *t, double seconds)
{
	printf("sim-merger: %" PRIu64 " seeds, %" PRIu64 " records produced, %" PRIu64
	       " released in %.2f s (%.0f records/s), %.1f s simulated\n", t->seeds, t->produced,
	       t->released, seconds, seconds > 0 ? (double)t->released / seconds : 0.0,
	       (double)t->sim_ns / NSEC_PER_SEC);
	printf("  late %" PRIu64 " (unexplained %" PRIu64 ", proof violations %" PRIu64
	       "), forced %" PRIu64 ", stall episodes %" PRIu64 "\n", t->late,
	       t->unexplained_late, t->proof_violations, t->forced, t->stalls);
	printf("  lost samples %" PRIu64 " in %" PRIu64 " lost records, syncs %" PRIu64
	       " (busy %" PRIu64 ", on demand %" PRIu64 "), nested %" PRIu64 ", long stalls %"
	       PRIu64 ", freezes %" PRIu64 ", offline %" PRIu64 ", equal ts %" PRIu64 "\n",
	       t->lost_samples, t->lost_records, t->syncs, t->syncs_busy, t->on_demand, t->nested,
	       t->long_stalls, t->freezes, t->offline, t->equal_ts);
	printf("  release latency after push: max %.3f ms, mean %.3f ms\n",
	       (double)t->max_latency_ns / NSEC_PER_MSEC,
	       t->latency_count ? (double)t->latency_sum_ns / t->latency_count / NSEC_PER_MSEC : 0);
}

/* A check that passes because its case never came up proves nothing: require
 * that the run exercised each case, when it is long enough to expect it. */
static int check_coverage(const struct sim_totals *t)
{
	const struct {
		const char *name;
		uint64_t value;
	} cases[] = {
		{ "late records", t->late },
		{ "stall episodes", t->stalls },
		{ "forced releases", t->forced },
		{ "lost records", t->lost_records },
		{ "busy syncs", t->syncs_busy },
		{ "on-demand syncs", t->on_demand },
		{ "nested producers", t->nested },
		{ "offline cpus", t->offline },
		{ "equal timestamps", t->equal_ts },
	};
	int ret = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].value > 0)
			continue;
		fprintf(stderr, "sim-merger: the run never produced %s; use more seeds or records\n",
			cases[i].name);
		ret = -1;
	}
	return ret;
}

int main(int argc, char **argv)
{
	struct sim_totals totals = {};
	struct options opts;
	struct timespec start, end;
	double seconds;

	if (parse_options(argc, argv, &opts) < 0) {
		usage(stderr);
		return 2;
	}

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (uint64_t i = 0; i < opts.seeds; i++)
		sim_run_seed(opts.first_seed + i, opts.records, opts.scenario, &totals, opts.verbose);
	clock_gettime(CLOCK_MONOTONIC, &end);
	seconds = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;

	print_totals(&totals, seconds);

	switch (opts.scenario) {
	case SCENARIO_SYNC:
		if (opts.seeds * opts.records >= 1000000 && check_coverage(&totals) < 0)
			return EXIT_FAILURE;
		break;
	case SCENARIO_CLOCK:
		if (totals.late == 0) {
			fprintf(stderr, "sim-merger: expected the clock rule to release records out"
				" of order (late > 0), got none\n");
			return EXIT_FAILURE;
		}
		break;
	case SCENARIO_READ_FIRST_PREEMPT:
		if (totals.proof_violations == 0 || totals.unexplained_late == 0) {
			fprintf(stderr, "sim-merger: expected a preemptible counter-first sync to"
				" let records arrive behind it, got %" PRIu64 " proof violations and %"
				PRIu64 " unexplained late records\n", totals.proof_violations,
				totals.unexplained_late);
			return EXIT_FAILURE;
		}
		break;
	}
	printf("sim-merger: PASS\n");
	return EXIT_SUCCESS;
}
