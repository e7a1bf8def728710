// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_table.h"
#include "check.h"

static struct record make_record(uint8_t type, uint64_t cookie, uint32_t pid)
{
	struct record r = { 0 };

	r.ev.type = type;
	r.ev.cookie = cookie;
	r.ev.pid = pid;
	r.ev.family = TCPTAP_FAMILY_INET;
	snprintf(r.ev.comm, sizeof(r.ev.comm), "proc%u", pid);
	return r;
}

static int apply(struct conn_table *t, uint8_t type, uint64_t cookie, uint32_t pid)
{
	struct record r = make_record(type, cookie, pid);

	return conn_table_apply(t, &r);
}

static struct conn_table_stats stats_of(const struct conn_table *t)
{
	struct conn_table_stats st;

	conn_table_get_stats(t, &st);
	return st;
}

static void test_new_rejects_zero(void)
{
	struct conn_table *t = NULL;

	CHECK_EQ(-EINVAL, conn_table_new(0, &t));
	CHECK(t == NULL);
	conn_table_free(NULL);
}

static void test_connect_accept_close(void)
{
	struct conn_table *t;
	const struct record *e;

	CHECK_EQ(0, conn_table_new(16, &t));

	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CONNECT, 100, 1));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_ACCEPT, 200, 2));
	CHECK_EQ(2, stats_of(t).entries);

	e = conn_table_lookup(t, 100);
	CHECK(e != NULL);
	CHECK_EQ(RECORD_ORIGIN_CONNECT, e->origin);
	CHECK_EQ(1, e->ev.pid);
	e = conn_table_lookup(t, 200);
	CHECK(e != NULL);
	CHECK_EQ(RECORD_ORIGIN_ACCEPT, e->origin);
	CHECK(strcmp(e->ev.comm, "proc2") == 0);
	CHECK(conn_table_lookup(t, 300) == NULL);

	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 100, 9));
	CHECK(conn_table_lookup(t, 100) == NULL);
	CHECK(conn_table_lookup(t, 200) != NULL);
	CHECK_EQ(1, stats_of(t).entries);

	conn_table_free(t);
}

static void test_duplicate_keeps_existing(void)
{
	struct conn_table *t;

	CHECK_EQ(0, conn_table_new(16, &t));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CONNECT, 7, 1));
	CHECK_EQ(CONN_TABLE_DROP_DUPLICATE, apply(t, TCPTAP_EV_ACCEPT, 7, 2));
	CHECK_EQ(CONN_TABLE_DROP_DUPLICATE, apply(t, TCPTAP_EV_CONNECT, 7, 3));

	CHECK_EQ(1, conn_table_lookup(t, 7)->ev.pid);
	CHECK_EQ(RECORD_ORIGIN_CONNECT, conn_table_lookup(t, 7)->origin);
	CHECK_EQ(2, stats_of(t).duplicates);
	CHECK_EQ(1, stats_of(t).entries);
	conn_table_free(t);
}

static void test_orphan_close(void)
{
	struct conn_table *t;

	CHECK_EQ(0, conn_table_new(16, &t));
	CHECK_EQ(CONN_TABLE_DROP_ORPHAN, apply(t, TCPTAP_EV_CLOSE, 5, 1));
	CHECK_EQ(1, stats_of(t).orphans);

	/* A second close of a connection already closed is an orphan too. */
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_ACCEPT, 6, 1));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 6, 1));
	CHECK_EQ(CONN_TABLE_DROP_ORPHAN, apply(t, TCPTAP_EV_CLOSE, 6, 1));
	CHECK_EQ(2, stats_of(t).orphans);
	CHECK_EQ(0, stats_of(t).entries);
	conn_table_free(t);
}

static void test_other_types_pass(void)
{
	struct conn_table *t;

	CHECK_EQ(0, conn_table_new(16, &t));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CONNECT_FAILED, 5, 1));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, RECORD_LOST, 0, 0));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_SYNC, 0, 0));
	CHECK_EQ(0, stats_of(t).entries);
	CHECK_EQ(0, stats_of(t).orphans);
	CHECK(conn_table_lookup(t, 5) == NULL);
	conn_table_free(t);
}

static void test_seed(void)
{
	struct conn_table *t;
	struct record r;

	CHECK_EQ(0, conn_table_new(2, &t));
	r = make_record(TCPTAP_EV_CONNECT, 11, 4);
	CHECK_EQ(0, conn_table_seed(t, &r));
	CHECK_EQ(RECORD_ORIGIN_SEEDED, conn_table_lookup(t, 11)->origin);
	CHECK_EQ(-EEXIST, conn_table_seed(t, &r));
	CHECK_EQ(CONN_TABLE_DROP_DUPLICATE, apply(t, TCPTAP_EV_CONNECT, 11, 5));
	CHECK_EQ(4, conn_table_lookup(t, 11)->ev.pid);

	r = make_record(TCPTAP_EV_ACCEPT, 12, 4);
	CHECK_EQ(0, conn_table_seed(t, &r));
	r = make_record(TCPTAP_EV_ACCEPT, 13, 4);
	CHECK_EQ(-ENOSPC, conn_table_seed(t, &r));
	CHECK_EQ(1, stats_of(t).full);
	CHECK(conn_table_lookup(t, 13) == NULL);

	/* The refused seed was never shown to a client, so its close is dropped. */
	CHECK_EQ(CONN_TABLE_DROP_ORPHAN, apply(t, TCPTAP_EV_CLOSE, 13, 4));
	CHECK_EQ(1, stats_of(t).orphans);

	/* A seeded connection closes like any other. */
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 11, 4));
	CHECK_EQ(1, stats_of(t).entries);
	conn_table_free(t);
}

static void test_full_publishes_unknown_closes(void)
{
	struct conn_table *t;

	CHECK_EQ(0, conn_table_new(3, &t));
	for (uint64_t c = 1; c <= 3; c++)
		CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CONNECT, c, 1));

	/* Before any refusal an unknown close is an orphan. */
	CHECK_EQ(CONN_TABLE_DROP_ORPHAN, apply(t, TCPTAP_EV_CLOSE, 99, 1));

	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_ACCEPT, 4, 1));
	CHECK(conn_table_lookup(t, 4) == NULL);
	CHECK_EQ(1, stats_of(t).full);
	CHECK_EQ(3, stats_of(t).entries);
	CHECK_EQ(3, stats_of(t).max_entries);

	/* The close of the connection published but not stored goes out. */
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 4, 1));
	CHECK_EQ(1, stats_of(t).orphans);

	/* Room again after a close: the next introduction is stored. */
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 2, 1));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_ACCEPT, 5, 1));
	CHECK(conn_table_lookup(t, 5) != NULL);
	CHECK_EQ(1, stats_of(t).full);
	conn_table_free(t);
}

struct visit_state {
	unsigned int calls;
	uint64_t cookie_sum;
	uint8_t *seen;		/* indexed by cookie, for the model test */
	size_t seen_size;
};

static void count_visit(const struct record *r, void *userdata)
{
	struct visit_state *v = userdata;

	v->calls++;
	v->cookie_sum += r->ev.cookie;
	if (v->seen && r->ev.cookie < v->seen_size)
		v->seen[r->ev.cookie]++;
}

static void test_foreach(void)
{
	struct conn_table *t;
	struct visit_state v = { 0 };

	CHECK_EQ(0, conn_table_new(8, &t));
	conn_table_foreach(t, count_visit, &v);
	CHECK_EQ(0, v.calls);

	for (uint64_t c = 1; c <= 5; c++)
		CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CONNECT, c * 1000, 1));
	CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, 3000, 1));

	conn_table_foreach(t, count_visit, &v);
	CHECK_EQ(4, v.calls);
	CHECK_EQ(1000 + 2000 + 4000 + 5000, v.cookie_sum);
	conn_table_free(t);
}

/* xorshift64: a fixed sequence, so a failure reproduces. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

/*
 * Random connects and closes on a table that grows from its initial size to
 * its cap, checked against a plain array. Every removal path of the index
 * (backward shift across wrapped probe runs, moving the last entry) must keep
 * every live cookie reachable.
 */
static void test_matches_model(void)
{
	enum { COOKIES = 4096, MAX = 3000, STEPS = 200000 };
	static uint8_t live[COOKIES];
	static uint8_t seen[COOKIES];
	struct conn_table *t;
	uint64_t rnd = 0x9e3779b97f4a7c15ULL;
	size_t nlive = 0;
	uint64_t full = 0;

	CHECK_EQ(0, conn_table_new(MAX, &t));
	for (unsigned int step = 0; step < STEPS; step++) {
		/* Cookies spaced like the kernel's counter, plus some far apart. */
		uint64_t c = next_random(&rnd) % COOKIES;
		uint64_t cookie = (c & 1) ? c : c << 40;
		bool introduce = next_random(&rnd) % 100 < 55;

		if (c == 0)
			continue;
		if (introduce) {
			int expected = live[c] ? CONN_TABLE_DROP_DUPLICATE : CONN_TABLE_PUBLISH;

			CHECK_EQ(expected, apply(t, TCPTAP_EV_CONNECT, cookie, (uint32_t)c));
			if (!live[c] && nlive < MAX) {
				live[c] = 1;
				nlive++;
			} else if (!live[c]) {
				full++;
			}
		} else if (live[c]) {
			CHECK_EQ(CONN_TABLE_PUBLISH, apply(t, TCPTAP_EV_CLOSE, cookie, 0));
			live[c] = 0;
			nlive--;
		}

		if (step % 997 == 0 || step == STEPS - 1) {
			struct visit_state v = { .seen = seen, .seen_size = COOKIES };

			CHECK_EQ(nlive, stats_of(t).entries);
			CHECK_EQ(full, stats_of(t).full);
			for (uint64_t k = 1; k < COOKIES; k++) {
				uint64_t key = (k & 1) ? k : k << 40;
				const struct record *e = conn_table_lookup(t, key);

				CHECK_EQ(live[k], e != NULL);
				if (e)
					CHECK_EQ(k, e->ev.pid);
			}

			/* Even cookies are shifted past seen[], so the visit is
			 * checked per cookie for odd ones and by total for all. */
			memset(seen, 0, sizeof(seen));
			conn_table_foreach(t, count_visit, &v);
			CHECK_EQ(nlive, v.calls);
			for (uint64_t k = 1; k < COOKIES; k += 2)
				CHECK_EQ(live[k], seen[k]);
		}
	}
	conn_table_free(t);
}

int main(void)
{
	test_new_rejects_zero();
	test_connect_accept_close();
	test_duplicate_keeps_existing();
	test_orphan_close();
	test_other_types_pass();
	test_seed();
	test_full_publishes_unknown_closes();
	test_foreach();
	test_matches_model();
	printf("test-conn-table: all passed\n");
	return 0;
}
