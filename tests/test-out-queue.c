// SPDX-License-Identifier: LGPL-2.1-or-later
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "out_queue.h"
#include "check.h"

static void append_str(struct out_queue *q, const char *line, uint64_t seq)
{
	CHECK_EQ(0, out_queue_append(q, line, strlen(line), seq));
}

/* Check that the unsent bytes are exactly expected. */
static void check_unsent(const struct out_queue *q, const char *expected)
{
	size_t n = strlen(expected);

	CHECK_EQ(n, out_queue_unsent(q));
	if (memcmp(out_queue_unsent_data(q), expected, n) != 0) {
		fprintf(stderr, "unsent bytes: expected \"%s\", got \"%.*s\"\n", expected, (int)n,
			out_queue_unsent_data(q));
		abort();
	}
}

static void test_empty(void)
{
	struct out_queue q = { 0 };
	uint64_t last = 7;

	CHECK_EQ(0, out_queue_unsent(&q));
	CHECK(!out_queue_mid_line(&q));
	CHECK_EQ(0, out_queue_keep_partial_line(&q));
	out_queue_consume(&q, 0, &last);
	CHECK_EQ(7, last);
	out_queue_clear(&q);
	out_queue_clear(&q);
}

static void test_marks_follow_sends(void)
{
	struct out_queue q = { 0 };
	uint64_t last = 0;

	append_str(&q, "hello\n", 0);
	append_str(&q, "a1\n", 11);
	append_str(&q, "b22\n", 12);
	append_str(&q, "c333\n", 0);
	append_str(&q, "d4\n", 14);

	/* "hello\n" and half of "a1\n": no seq complete yet. */
	out_queue_consume(&q, 7, &last);
	CHECK_EQ(0, last);
	CHECK(out_queue_mid_line(&q));

	/* The rest of "a1\n" and all of "b22\n". */
	out_queue_consume(&q, 6, &last);
	CHECK_EQ(12, last);
	CHECK(!out_queue_mid_line(&q));

	/* An unmarked line leaves the seq alone. */
	out_queue_consume(&q, 5, &last);
	CHECK_EQ(12, last);

	out_queue_consume(&q, 3, &last);
	CHECK_EQ(14, last);
	CHECK_EQ(0, out_queue_unsent(&q));
	CHECK_EQ(21, q.sent_total);
	out_queue_clear(&q);
}

static void test_keep_partial_marked(void)
{
	struct out_queue q = { 0 };
	uint64_t last = 0;

	append_str(&q, "a1\n", 1);
	append_str(&q, "b22\n", 2);
	append_str(&q, "c333\n", 3);
	out_queue_consume(&q, 4, &last);	/* "a1\n" and "b" */
	CHECK_EQ(1, last);

	CHECK_EQ(2, out_queue_keep_partial_line(&q));
	check_unsent(&q, "22\n");

	/* The overflow line goes after the kept rest; seq 3 is gone. */
	append_str(&q, "overflow\n", 0);
	out_queue_consume(&q, out_queue_unsent(&q), &last);
	CHECK_EQ(2, last);
	out_queue_clear(&q);
}

static void test_keep_partial_unmarked(void)
{
	struct out_queue q = { 0 };
	uint64_t last = 0;

	append_str(&q, "a1\n", 1);
	append_str(&q, "snapshot\n", 0);
	append_str(&q, "c333\n", 3);
	out_queue_consume(&q, 5, &last);

	CHECK_EQ(0, out_queue_keep_partial_line(&q));
	check_unsent(&q, "apshot\n");
	out_queue_consume(&q, 7, &last);
	CHECK_EQ(1, last);
	out_queue_clear(&q);
}

static void test_keep_partial_at_boundary(void)
{
	struct out_queue q = { 0 };
	uint64_t last = 0;

	append_str(&q, "a1\n", 1);
	append_str(&q, "b22\n", 2);
	out_queue_consume(&q, 3, &last);

	CHECK_EQ(0, out_queue_keep_partial_line(&q));
	CHECK_EQ(0, out_queue_unsent(&q));

	/* Dropped lines leave no marks behind to be completed later. */
	append_str(&q, "x\n", 0);
	out_queue_consume(&q, 2, &last);
	CHECK_EQ(1, last);
	out_queue_clear(&q);
}

/* Many lines through a queue that grows, compacts and wraps its mark ring:
 * every byte comes out in order and every seq is reported once complete. */
static void test_long_stream(void)
{
	struct out_queue q = { 0 };
	char expected[64];
	uint64_t appended = 0, last = 0, consumed_lines = 0;
	size_t step = 1;

	for (unsigned int round = 0; round < 2000; round++) {
		for (unsigned int i = 0; i < 7; i++) {
			char line[64];

			appended++;
			snprintf(line, sizeof(line), "{\"seq\":%" PRIu64 "}\n", appended);
			append_str(&q, line, appended);
		}

		/* Consume whole lines plus a varying number of extra bytes. */
		while (out_queue_unsent(&q) > 64) {
			size_t line_len;

			snprintf(expected, sizeof(expected), "{\"seq\":%" PRIu64 "}\n",
				 consumed_lines + 1);
			line_len = strlen(expected);
			if (!out_queue_mid_line(&q)) {
				CHECK(memcmp(out_queue_unsent_data(&q), expected, line_len) == 0);
				out_queue_consume(&q, line_len, &last);
				consumed_lines++;
				CHECK_EQ(consumed_lines, last);
			} else {
				const char *nl = memchr(out_queue_unsent_data(&q), '\n',
							out_queue_unsent(&q));
				size_t rest;

				/* The unsent bytes start with the end of the expected line. */
				CHECK(nl != NULL);
				rest = (size_t)(nl - out_queue_unsent_data(&q)) + 1;
				CHECK(rest < line_len);
				CHECK(memcmp(out_queue_unsent_data(&q), expected + line_len - rest,
					     rest) == 0);
				out_queue_consume(&q, rest, &last);
				consumed_lines++;
				CHECK_EQ(consumed_lines, last);
			}
			step = step % 5 + 1;
			out_queue_consume(&q, step, &last);
			CHECK(out_queue_mid_line(&q));
			CHECK_EQ(consumed_lines, last);
		}
	}
	CHECK_EQ(appended, 14000);
	out_queue_clear(&q);
}

/* A drained queue gives back a buffer that a burst made large. */
static void test_drained_buffer_released(void)
{
	static char big[256 * 1024];
	struct out_queue q = { 0 };
	uint64_t last = 0;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\n';
	CHECK_EQ(0, out_queue_append(&q, big, sizeof(big), 5));
	CHECK(q.capacity >= sizeof(big));
	out_queue_consume(&q, sizeof(big), &last);
	CHECK_EQ(5, last);
	CHECK_EQ(0, q.capacity);
	CHECK(q.data == NULL);

	append_str(&q, "small\n", 0);
	check_unsent(&q, "small\n");
	out_queue_clear(&q);
}

int main(void)
{
	test_empty();
	test_marks_follow_sends();
	test_keep_partial_marked();
	test_keep_partial_unmarked();
	test_keep_partial_at_boundary();
	test_long_stream();
	test_drained_buffer_released();
	printf("test-out-queue: all passed\n");
	return 0;
}
