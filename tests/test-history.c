// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "check.h"

static void append_seq(struct history *h, uint64_t seq)
{
	struct record r = { .seq = seq };

	r.ev.type = TCPTAP_EV_CONNECT;
	r.ev.cookie = seq * 10;
	history_append(h, &r);
}

struct collected {
	size_t n;
	uint64_t seqs[64];
	uint64_t cookies[64];
};

static void collect(const struct record *r, void *userdata)
{
	struct collected *c = userdata;

	CHECK(c->n < 64);
	c->seqs[c->n] = r->seq;
	c->cookies[c->n] = r->ev.cookie;
	c->n++;
}

/* Check that the records after `after` are exactly first .. last, in order. */
static void check_after(const struct history *h, uint64_t after, uint64_t first, uint64_t last)
{
	struct collected c = { 0 };
	size_t expected = last >= first ? last - first + 1 : 0;

	CHECK_EQ(expected, history_foreach_after(h, after, collect, &c));
	CHECK_EQ(expected, c.n);
	for (size_t i = 0; i < c.n; i++) {
		CHECK_EQ(first + i, c.seqs[i]);
		CHECK_EQ((first + i) * 10, c.cookies[i]);
	}
}

static void test_new_rejects_zero(void)
{
	struct history *h = NULL;

	CHECK_EQ(-EINVAL, history_new(0, &h));
	CHECK(h == NULL);
	history_free(NULL);
}

static void test_empty(void)
{
	struct history *h;

	CHECK_EQ(0, history_new(4, &h));
	CHECK(history_covers(h, 0));
	CHECK(!history_covers(h, 1));
	CHECK_EQ(0, history_oldest_seq(h));
	CHECK_EQ(0, history_newest_seq(h));
	check_after(h, 0, 1, 0);
	history_free(h);
}

static void test_partial(void)
{
	struct history *h;

	CHECK_EQ(0, history_new(5, &h));
	for (uint64_t s = 1; s <= 3; s++)
		append_seq(h, s);

	CHECK_EQ(1, history_oldest_seq(h));
	CHECK_EQ(3, history_newest_seq(h));
	for (uint64_t s = 0; s <= 3; s++)
		CHECK(history_covers(h, s));
	CHECK(!history_covers(h, 4));
	CHECK(!history_covers(h, UINT64_MAX));

	check_after(h, 0, 1, 3);
	check_after(h, 2, 3, 3);
	check_after(h, 3, 1, 0);
	check_after(h, 100, 1, 0);
	history_free(h);
}

static void test_wraps(void)
{
	struct history *h;

	CHECK_EQ(0, history_new(3, &h));
	for (uint64_t s = 1; s <= 10; s++)
		append_seq(h, s);

	CHECK_EQ(8, history_oldest_seq(h));
	CHECK_EQ(10, history_newest_seq(h));
	CHECK(!history_covers(h, 0));
	CHECK(!history_covers(h, 6));
	CHECK(history_covers(h, 7));
	CHECK(history_covers(h, 9));
	CHECK(history_covers(h, 10));
	CHECK(!history_covers(h, 11));

	check_after(h, 7, 8, 10);
	check_after(h, 8, 9, 10);
	check_after(h, 9, 10, 10);
	check_after(h, 10, 1, 0);
	/* Records before the oldest are gone, so a visit from 0 returns only 8..10. */
	check_after(h, 0, 8, 10);
	history_free(h);
}

static void test_single_slot(void)
{
	struct history *h;

	CHECK_EQ(0, history_new(1, &h));
	append_seq(h, 1);
	CHECK(history_covers(h, 0));
	append_seq(h, 2);
	CHECK(!history_covers(h, 0));
	CHECK(history_covers(h, 1));
	CHECK(history_covers(h, 2));
	check_after(h, 1, 2, 2);
	history_free(h);
}

/* Seqs of published records may skip values, and coverage stays exact. */
static void test_gaps(void)
{
	struct history *h;
	struct collected c = { 0 };

	CHECK_EQ(0, history_new(2, &h));
	append_seq(h, 2);
	append_seq(h, 4);
	append_seq(h, 6);
	append_seq(h, 8);

	CHECK(!history_covers(h, 3));
	CHECK(history_covers(h, 4));
	CHECK(history_covers(h, 5));
	CHECK(history_covers(h, 8));

	CHECK_EQ(2, history_foreach_after(h, 5, collect, &c));
	CHECK_EQ(6, c.seqs[0]);
	CHECK_EQ(8, c.seqs[1]);
	history_free(h);
}

static void test_stores_by_value(void)
{
	struct history *h;
	struct record r = { .seq = 1 };
	struct collected c = { 0 };

	CHECK_EQ(0, history_new(2, &h));
	r.ev.cookie = 10;
	history_append(h, &r);
	r.ev.cookie = 999;

	history_foreach_after(h, 0, collect, &c);
	CHECK_EQ(10, c.cookies[0]);
	history_free(h);
}

int main(void)
{
	test_new_rejects_zero();
	test_empty();
	test_partial();
	test_wraps();
	test_single_slot();
	test_gaps();
	test_stores_by_value();
	printf("test-history: all passed\n");
	return 0;
}
