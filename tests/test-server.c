// SPDX-License-Identifier: LGPL-2.1-or-later
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "conn_table.h"
#include "history.h"
#include "log.h"
#include "server.h"
#include "check.h"

/*
 * Tests of the socket server on real sockets: a listening AF_UNIX socket in a
 * temporary directory, the server on an sd-event loop driven by this process,
 * and client sockets in the same process that read without blocking. Every
 * wait runs the loop in steps of at most RUN_STEP_USEC and gives up at its own
 * timeout or at the deadline of the whole test.
 */

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL
#define RUN_STEP_USEC (5 * USEC_PER_MSEC)
#define WAIT_USEC (10 * USEC_PER_SEC)
#define TEST_DEADLINE_USEC (100 * USEC_PER_SEC)
#define RUN_ID "0123456789abcdef"
#define MAX_PEERS 256

#define CHECK_STR_EQ(expected, actual)                                                    \
	do {                                                                              \
		const char *e_ = (expected), *a_ = (actual);                              \
		if (!a_ || strcmp(e_, a_) != 0) {                                         \
			fprintf(stderr, "%s:%d: %s: expected \"%s\", got \"%s\"\n", __FILE__, \
				__LINE__, #actual, e_, a_ ? a_ : "(null)");               \
			abort();                                                          \
		}                                                                         \
	} while (0)

/* A client socket of the test and everything it received. */
struct peer {
	int fd;
	bool reading;		/* read by every step of the loop */
	char *buf;
	size_t len;
	size_t capacity;
	size_t parsed;		/* bytes of buf split into lines */
	struct json_object **lines;
	size_t nlines;
	size_t lines_capacity;
	bool eof;
	int error;		/* errno of a failed read */
};

struct fixture {
	char dir[64];
	char path[108];
	sd_event *loop;
	struct conn_table *table;
	struct history *history;
	struct server *server;
	struct server_config cfg;
	uint64_t seq;
	uint64_t steps;		/* loop iterations run */
	unsigned int stats_calls;
	struct peer *peers[MAX_PEERS];
	size_t npeers;
};

static uint64_t test_start_usec;

static uint64_t now_usec(void)
{
	struct timespec ts;

	CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static char *fake_stats_json(void *userdata)
{
	struct fixture *fx = userdata;

	fx->stats_calls++;
	return strdup("{\"type\":\"stats\",\"answer\":42}\n");
}

struct fixture_options {
	size_t max_queue_bytes;
	size_t max_clients;
	uint64_t request_wait_ms;
	size_t history_records;
	size_t table_entries;
};

static void fixture_init(struct fixture *fx, const struct fixture_options *o)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	memset(fx, 0, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test-server-XXXXXX");
	CHECK(mkdtemp(fx->dir) != NULL);
	snprintf(fx->path, sizeof(fx->path), "%s/sock", fx->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx->path);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(fd, SOMAXCONN) == 0);

	CHECK_EQ(0, sd_event_new(&fx->loop));
	CHECK_EQ(0, conn_table_new(o->table_entries ? o->table_entries : 1024, &fx->table));
	CHECK_EQ(0, history_new(o->history_records ? o->history_records : 1024, &fx->history));

	fx->cfg = (struct server_config){
		.max_queue_bytes = o->max_queue_bytes ? o->max_queue_bytes : 1024 * 1024,
		.max_clients = o->max_clients ? o->max_clients : 128,
		.request_wait_ms = o->request_wait_ms,
		.version = "0.1.0-test",
		.backend = "tracepoint",
		.ncpus = 2,
		.boot_id = "00000000-0000-4000-8000-000000000000",
		.run_id = RUN_ID,
		.stats_json = fake_stats_json,
		.userdata = fx,
	};
	CHECK_EQ(0, server_new(fx->loop, fd, &fx->cfg, fx->table, fx->history, &fx->server));
}

static void peer_free(struct peer *p)
{
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	for (size_t i = 0; i < p->nlines; i++)
		json_object_put(p->lines[i]);
	free(p->lines);
	free(p->buf);
	free(p);
}

static void peer_close(struct fixture *fx, struct peer *p)
{
	for (size_t i = 0; i < fx->npeers; i++) {
		if (fx->peers[i] == p) {
			fx->peers[i] = fx->peers[--fx->npeers];
			break;
		}
	}
	peer_free(p);
}

static void fixture_free(struct fixture *fx)
{
	while (fx->npeers > 0)
		peer_close(fx, fx->peers[0]);
	server_free(fx->server);
	history_free(fx->history);
	conn_table_free(fx->table);
	sd_event_unref(fx->loop);
	CHECK(unlink(fx->path) == 0);
	CHECK(rmdir(fx->dir) == 0);
}

/* Split the complete lines received so far; every one must be valid JSON. */
static void peer_parse_lines(struct peer *p)
{
	for (;;) {
		char *start = p->buf + p->parsed;
		char *nl = memchr(start, '\n', p->len - p->parsed);
		struct json_object *obj;
		size_t n;

		if (!nl)
			return;
		n = (size_t)(nl - start);
		*nl = '\0';
		obj = json_tokener_parse(start);
		if (!obj) {
			fprintf(stderr, "received line %zu is not JSON: %s\n", p->nlines, start);
			abort();
		}
		*nl = '\n';
		if (p->nlines == p->lines_capacity) {
			p->lines_capacity = p->lines_capacity ? p->lines_capacity * 2 : 64;
			p->lines = realloc(p->lines, p->lines_capacity * sizeof(*p->lines));
			CHECK(p->lines != NULL);
		}
		p->lines[p->nlines++] = obj;
		p->parsed += n + 1;
	}
}

static void peer_pump(struct peer *p)
{
	while (!p->eof && p->error == 0) {
		ssize_t n;

		if (p->capacity - p->len < 65536) {
			p->capacity = p->capacity ? p->capacity * 2 : 131072;
			p->buf = realloc(p->buf, p->capacity);
			CHECK(p->buf != NULL);
		}
		n = recv(p->fd, p->buf + p->len, p->capacity - p->len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				p->error = errno;
			if (errno != EINTR)
				break;
			continue;
		}
		if (n == 0) {
			p->eof = true;
			break;
		}
		p->len += (size_t)n;
	}
	peer_parse_lines(p);
}

static void run_step(struct fixture *fx, uint64_t timeout_usec)
{
	int r;

	CHECK(now_usec() - test_start_usec < TEST_DEADLINE_USEC);
	r = sd_event_run(fx->loop, timeout_usec);
	CHECK(r >= 0);
	fx->steps++;
	for (size_t i = 0; i < fx->npeers; i++)
		if (fx->peers[i]->reading)
			peer_pump(fx->peers[i]);
}

static void run_for(struct fixture *fx, uint64_t usec)
{
	uint64_t end = now_usec() + usec;

	while (now_usec() < end)
		run_step(fx, RUN_STEP_USEC);
}

typedef bool (*condition_fn)(struct fixture *fx, void *arg);

/* Run the loop until cond holds; abort with what after timeout_usec. */
static void run_until(struct fixture *fx, condition_fn cond, void *arg, uint64_t timeout_usec,
		      const char *what)
{
	uint64_t end = now_usec() + timeout_usec;

	while (!cond(fx, arg)) {
		if (now_usec() >= end) {
			fprintf(stderr, "timed out after %" PRIu64 " ms waiting for %s\n",
				(uint64_t)(timeout_usec / USEC_PER_MSEC), what);
			abort();
		}
		run_step(fx, RUN_STEP_USEC);
	}
}

static struct peer *peer_connect(struct fixture *fx, bool reading)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct peer *p;

	CHECK(fx->npeers < MAX_PEERS);
	p = calloc(1, sizeof(*p));
	CHECK(p != NULL);
	p->reading = reading;
	p->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	CHECK(p->fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx->path);

	/* A full backlog makes a non-blocking connect() fail with EAGAIN, so
	 * let the server accept and retry. */
	for (unsigned int attempt = 0;; attempt++) {
		if (connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		CHECK_EQ(EAGAIN, errno);
		CHECK(attempt < 1000);
		run_step(fx, RUN_STEP_USEC);
	}
	fx->peers[fx->npeers++] = p;
	return p;
}

static void peer_send(struct fixture *fx, struct peer *p, const void *data, size_t len)
{
	const char *d = data;
	unsigned int attempts = 0;

	while (len > 0) {
		ssize_t n = send(p->fd, d, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			CHECK(errno == EAGAIN || errno == EINTR);
			CHECK(++attempts < 1000);
			run_step(fx, RUN_STEP_USEC);
			continue;
		}
		d += n;
		len -= (size_t)n;
	}
}

static void peer_send_str(struct fixture *fx, struct peer *p, const char *s)
{
	peer_send(fx, p, s, strlen(s));
}

static const char *line_str(const struct peer *p, size_t i, const char *key)
{
	struct json_object *v;

	CHECK(i < p->nlines);
	if (!json_object_object_get_ex(p->lines[i], key, &v))
		return NULL;
	return json_object_get_string(v);
}

static bool line_has(const struct peer *p, size_t i, const char *key)
{
	CHECK(i < p->nlines);
	return json_object_object_get_ex(p->lines[i], key, NULL);
}

static uint64_t line_u64(const struct peer *p, size_t i, const char *key)
{
	struct json_object *v;

	CHECK(i < p->nlines);
	if (!json_object_object_get_ex(p->lines[i], key, &v)) {
		fprintf(stderr, "line %zu has no \"%s\": %s\n", i, key,
			json_object_to_json_string(p->lines[i]));
		abort();
	}
	return json_object_get_uint64(v);
}

static const char *line_type(const struct peer *p, size_t i)
{
	return line_str(p, i, "type");
}

/* Index of the first line of the given type at or after from, or p->nlines. */
static size_t find_type(const struct peer *p, size_t from, const char *type)
{
	for (size_t i = from; i < p->nlines; i++)
		if (strcmp(line_type(p, i), type) == 0)
			return i;
	return p->nlines;
}

static bool has_snapshot_end(struct fixture *fx, void *arg)
{
	struct peer *p = arg;

	return find_type(p, 0, "snapshot_end") < p->nlines;
}

static bool has_eof(struct fixture *fx, void *arg)
{
	struct peer *p = arg;

	return p->eof || p->error != 0;
}

struct line_count {
	struct peer *peer;
	size_t lines;
};

static bool has_lines(struct fixture *fx, void *arg)
{
	struct line_count *lc = arg;

	return lc->peer->nlines >= lc->lines;
}

static void wait_lines(struct fixture *fx, struct peer *p, size_t lines)
{
	struct line_count lc = { p, lines };

	run_until(fx, has_lines, &lc, WAIT_USEC, "lines from the server");
}

static struct server_stats stats_of(const struct fixture *fx)
{
	struct server_stats st;

	server_get_stats(fx->server, &st);
	return st;
}

static bool clients_at(struct fixture *fx, void *arg)
{
	return stats_of(fx).clients == *(uint64_t *)arg;
}

static void wait_clients(struct fixture *fx, uint64_t clients)
{
	run_until(fx, clients_at, &clients, WAIT_USEC, "the server's client count");
}

static struct record make_event(uint8_t type, uint64_t cookie, uint32_t pid, uint16_t sport,
				uint16_t dport)
{
	struct record r = { 0 };

	r.ev.type = type;
	r.ev.cookie = cookie;
	r.ev.pid = pid;
	r.ev.tid = pid;
	r.ev.ts_ns = 1000 + cookie;
	r.ev.family = TCPTAP_FAMILY_INET;
	r.ev.sport = sport;
	r.ev.dport = dport;
	r.ev.saddr_be[0] = 127;
	r.ev.saddr_be[3] = 1;
	r.ev.daddr_be[0] = 127;
	r.ev.daddr_be[3] = 1;
	if (type == TCPTAP_EV_CONNECT_FAILED)
		r.ev.error = ECONNREFUSED;
	snprintf(r.ev.comm, sizeof(r.ev.comm), "proc%u", pid);
	return r;
}

/* Publish like the daemon: table first, then history, then the clients. */
static uint64_t publish_record(struct fixture *fx, struct record *r)
{
	CHECK_EQ(CONN_TABLE_PUBLISH, conn_table_apply(fx->table, r));
	r->seq = ++fx->seq;
	history_append(fx->history, r);
	server_publish(fx->server, r);
	return r->seq;
}

static uint64_t publish(struct fixture *fx, uint8_t type, uint64_t cookie, uint32_t pid,
			uint16_t sport, uint16_t dport)
{
	struct record r = make_event(type, cookie, pid, sport, dport);

	return publish_record(fx, &r);
}

static uint64_t publish_lost(struct fixture *fx, uint32_t cpu, uint64_t count)
{
	struct record r = { .lost_count = count };

	r.ev.type = RECORD_LOST;
	r.ev.cpu = cpu;
	return publish_record(fx, &r);
}

/* The seqs of the live records a peer received after snapshot_end or hello. */
static size_t collect_seqs(const struct peer *p, size_t from, uint64_t *seqs, size_t max)
{
	size_t n = 0;

	for (size_t i = from; i < p->nlines; i++) {
		const char *type = line_type(p, i);

		if (strcmp(type, "hello") == 0 || strcmp(type, "snapshot") == 0 ||
		    strcmp(type, "snapshot_end") == 0 || strcmp(type, "overflow") == 0)
			continue;
		CHECK(n < max);
		seqs[n++] = line_u64(p, i, "seq");
	}
	return n;
}

static void check_seqs(const struct peer *p, const uint64_t *expected, size_t n)
{
	uint64_t got[64];
	size_t count = collect_seqs(p, 0, got, 64);

	CHECK_EQ(n, count);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(expected[i], got[i]);
}

/* Check that the peer got hello, exactly count snapshot lines and snapshot_end at seq. */
static void check_snapshot(const struct peer *p, uint64_t seq, size_t count)
{
	CHECK(p->nlines >= count + 2);
	CHECK_STR_EQ("hello", line_type(p, 0));
	for (size_t i = 1; i <= count; i++)
		CHECK_STR_EQ("snapshot", line_type(p, i));
	CHECK_STR_EQ("snapshot_end", line_type(p, count + 1));
	CHECK_EQ(seq, line_u64(p, count + 1, "seq"));
	CHECK_EQ(count, line_u64(p, count + 1, "count"));
}

static void test_stream_order(void)
{
	struct fixture_options o = { .request_wait_ms = 500 };
	struct fixture fx;
	struct record seed;
	struct peer *silent, *eager;
	uint64_t cookies = 0, start;

	fixture_init(&fx, &o);
	seed = make_event(TCPTAP_EV_CONNECT, 1001, 7, 40000, 80);
	CHECK_EQ(0, conn_table_seed(fx.table, &seed));
	seed = make_event(TCPTAP_EV_ACCEPT, 1002, 8, 22, 50000);
	CHECK_EQ(0, conn_table_seed(fx.table, &seed));
	publish(&fx, TCPTAP_EV_CONNECT, 1, 9, 40001, 443);
	publish(&fx, TCPTAP_EV_ACCEPT, 2, 9, 22, 50001);
	publish(&fx, TCPTAP_EV_CLOSE, 1, 9, 40001, 443);

	/* Nothing is sent before the request line or the end of the wait. */
	start = now_usec();
	silent = peer_connect(&fx, true);
	run_for(&fx, 100 * USEC_PER_MSEC);
	CHECK_EQ(0, silent->len);

	eager = peer_connect(&fx, true);
	peer_send_str(&fx, eager, "{}\n");
	run_until(&fx, has_snapshot_end, eager, WAIT_USEC, "snapshot_end for the eager client");
	CHECK(now_usec() - start < 500 * USEC_PER_MSEC);
	CHECK_EQ(0, silent->len);

	run_until(&fx, has_snapshot_end, silent, WAIT_USEC, "snapshot_end for the silent client");
	CHECK(now_usec() - start >= 500 * USEC_PER_MSEC);

	for (size_t i = 0; i < 2; i++) {
		struct peer *p = i == 0 ? silent : eager;

		check_snapshot(p, 3, 3);
		CHECK_EQ(1, line_u64(p, 0, "protocol"));
		CHECK_STR_EQ(RUN_ID, line_str(p, 0, "run_id"));
		CHECK_STR_EQ("tracepoint", line_str(p, 0, "backend"));
		CHECK_EQ(3, line_u64(p, 0, "snapshot_seq"));
		CHECK(!line_has(p, 0, "resumed"));
	}

	/* The snapshot is the table: both seeds and the accepted connection. */
	for (size_t i = 1; i <= 3; i++)
		cookies += line_u64(silent, i, "cookie");
	CHECK_EQ(1001 + 1002 + 2, cookies);

	publish(&fx, TCPTAP_EV_CONNECT, 3, 9, 40002, 443);
	publish(&fx, TCPTAP_EV_CLOSE, 2, 9, 22, 50001);
	wait_lines(&fx, silent, 7);
	wait_lines(&fx, eager, 7);
	for (size_t i = 0; i < 2; i++) {
		struct peer *p = i == 0 ? silent : eager;

		CHECK_EQ(7, p->nlines);
		CHECK_EQ(4, line_u64(p, 5, "seq"));
		CHECK_STR_EQ("connect", line_type(p, 5));
		CHECK_EQ(5, line_u64(p, 6, "seq"));
		CHECK_STR_EQ("close", line_type(p, 6));
	}

	fixture_free(&fx);
}

static void test_filters(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	struct fixture fx;
	struct peer *types, *port, *pid;

	fixture_init(&fx, &o);
	publish(&fx, TCPTAP_EV_CONNECT, 10, 100, 40000, 443);
	publish(&fx, TCPTAP_EV_ACCEPT, 11, 200, 22, 50000);

	types = peer_connect(&fx, true);
	peer_send_str(&fx, types, "{\"filter\":{\"types\":[\"close\"]}}\n");
	port = peer_connect(&fx, true);
	peer_send_str(&fx, port, "{\"filter\":{\"port\":443}}\n");
	pid = peer_connect(&fx, true);
	peer_send_str(&fx, pid, "{\"command\":\"subscribe\",\"filter\":{\"pid\":200}}\n");
	run_until(&fx, has_snapshot_end, types, WAIT_USEC, "snapshot_end (types filter)");
	run_until(&fx, has_snapshot_end, port, WAIT_USEC, "snapshot_end (port filter)");
	run_until(&fx, has_snapshot_end, pid, WAIT_USEC, "snapshot_end (pid filter)");

	/* Table entries are filtered like the records that introduced them. */
	check_snapshot(types, 2, 0);
	check_snapshot(port, 2, 1);
	CHECK_EQ(10, line_u64(port, 1, "cookie"));
	check_snapshot(pid, 2, 1);
	CHECK_EQ(11, line_u64(pid, 1, "cookie"));

	publish(&fx, TCPTAP_EV_CLOSE, 10, 100, 40000, 443);		/* seq 3 */
	publish(&fx, TCPTAP_EV_CONNECT, 12, 200, 40001, 80);		/* seq 4 */
	publish(&fx, TCPTAP_EV_CONNECT_FAILED, 13, 300, 40002, 443);	/* seq 5 */
	publish_lost(&fx, 1, 17);					/* seq 6 */

	wait_lines(&fx, types, 2 + 2);
	wait_lines(&fx, port, 3 + 3);
	wait_lines(&fx, pid, 3 + 2);
	run_for(&fx, 50 * USEC_PER_MSEC);

	check_seqs(types, (uint64_t[]){ 3, 6 }, 2);
	check_seqs(port, (uint64_t[]){ 3, 5, 6 }, 3);
	check_seqs(pid, (uint64_t[]){ 4, 6 }, 2);
	CHECK_STR_EQ("lost", line_type(pid, pid->nlines - 1));
	CHECK_EQ(17, line_u64(pid, pid->nlines - 1, "count"));

	fixture_free(&fx);
}

static void test_dump_and_stats(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	struct fixture fx;
	struct peer *dump, *stats;

	fixture_init(&fx, &o);
	publish(&fx, TCPTAP_EV_CONNECT, 10, 100, 40000, 443);
	publish(&fx, TCPTAP_EV_ACCEPT, 11, 200, 22, 50000);

	dump = peer_connect(&fx, true);
	peer_send_str(&fx, dump, "{\"command\":\"dump\"}\n");
	stats = peer_connect(&fx, true);
	peer_send_str(&fx, stats, "{\"command\":\"stats\"}\n");

	run_until(&fx, has_eof, dump, WAIT_USEC, "the end of the dump");
	run_until(&fx, has_eof, stats, WAIT_USEC, "the end of the stats reply");

	CHECK_EQ(0, dump->error);
	CHECK_EQ(4, dump->nlines);
	check_snapshot(dump, 2, 2);

	CHECK_EQ(0, stats->error);
	CHECK_EQ(2, stats->nlines);
	CHECK_STR_EQ("hello", line_type(stats, 0));
	CHECK_STR_EQ("stats", line_type(stats, 1));
	CHECK_EQ(42, line_u64(stats, 1, "answer"));
	CHECK_EQ(1, fx.stats_calls);

	/* Neither takes live records; both are gone from the server. */
	publish(&fx, TCPTAP_EV_CLOSE, 10, 100, 40000, 443);
	wait_clients(&fx, 0);
	CHECK_EQ(4, dump->nlines);
	CHECK_EQ(2, stats->nlines);
	CHECK_EQ(2, stats_of(&fx).accepted);
	CHECK_EQ(0, stats_of(&fx).bad_requests);

	fixture_free(&fx);
}

static struct peer *resume_peer(struct fixture *fx, uint64_t seq, const char *run_id,
				const char *filter)
{
	struct peer *p = peer_connect(fx, true);
	char line[256];

	snprintf(line, sizeof(line), "{\"resume_from\":%" PRIu64 ",\"run_id\":\"%s\"%s%s}\n", seq,
		 run_id, filter ? ",\"filter\":" : "", filter ? filter : "");
	peer_send_str(fx, p, line);
	return p;
}

static bool has_hello(struct fixture *fx, void *arg)
{
	struct peer *p = arg;

	return p->nlines > 0;
}

static void test_resume(void)
{
	struct fixture_options o = { .request_wait_ms = 5000, .history_records = 8 };
	struct fixture fx;
	struct peer *first, *hit, *filtered, *newest, *evicted, *other_run, *future;

	fixture_init(&fx, &o);
	for (uint64_t c = 1; c <= 5; c++)
		publish(&fx, TCPTAP_EV_CONNECT, c, 100, 40000, 443);

	first = peer_connect(&fx, true);
	peer_send_str(&fx, first, "{}\n");
	run_until(&fx, has_snapshot_end, first, WAIT_USEC, "snapshot_end of the first client");
	publish(&fx, TCPTAP_EV_CONNECT, 6, 100, 40000, 443);
	publish(&fx, TCPTAP_EV_CONNECT, 7, 100, 40000, 443);
	wait_lines(&fx, first, 1 + 5 + 1 + 2);
	CHECK_EQ(7, line_u64(first, first->nlines - 1, "seq"));
	peer_close(&fx, first);

	publish(&fx, TCPTAP_EV_CONNECT, 8, 100, 40000, 443);
	publish(&fx, TCPTAP_EV_CLOSE, 8, 100, 40000, 443);
	publish(&fx, TCPTAP_EV_ACCEPT, 9, 100, 22, 50000);

	/* Exactly the records after 7, without a snapshot, then live ones. */
	hit = resume_peer(&fx, 7, RUN_ID, NULL);
	filtered = resume_peer(&fx, 7, RUN_ID, "{\"types\":[\"close\"]}");
	newest = resume_peer(&fx, 10, RUN_ID, NULL);
	wait_lines(&fx, hit, 4);
	wait_lines(&fx, filtered, 2);
	run_until(&fx, has_hello, newest, WAIT_USEC, "hello of the client at the newest seq");
	publish(&fx, TCPTAP_EV_CLOSE, 9, 100, 22, 50000);
	wait_lines(&fx, hit, 5);
	wait_lines(&fx, filtered, 3);
	wait_lines(&fx, newest, 2);
	run_for(&fx, 50 * USEC_PER_MSEC);

	for (size_t i = 0; i < 3; i++) {
		struct peer *p = (struct peer *[]){ hit, filtered, newest }[i];

		CHECK_STR_EQ("hello", line_type(p, 0));
		CHECK(line_has(p, 0, "resumed"));
		CHECK_STR_EQ("true", line_str(p, 0, "resumed"));
		CHECK(!line_has(p, 0, "resume_error"));
		CHECK_EQ(p->nlines, find_type(p, 0, "snapshot_end"));
	}
	CHECK_EQ(7, line_u64(hit, 0, "snapshot_seq"));
	CHECK_EQ(7, line_u64(filtered, 0, "snapshot_seq"));
	CHECK_EQ(10, line_u64(newest, 0, "snapshot_seq"));
	check_seqs(hit, (uint64_t[]){ 8, 9, 10, 11 }, 4);
	check_seqs(filtered, (uint64_t[]){ 9, 11 }, 2);
	check_seqs(newest, (uint64_t[]){ 11 }, 1);

	/* Misses fall back to a fresh snapshot and state the reason. */
	for (uint64_t c = 20; c < 30; c++)
		publish(&fx, TCPTAP_EV_CONNECT, c, 100, 40000, 443);	/* seqs 12..21 */
	CHECK_EQ(14, history_oldest_seq(fx.history));

	evicted = resume_peer(&fx, 12, RUN_ID, NULL);
	other_run = resume_peer(&fx, 20, "fedcba9876543210", NULL);
	future = resume_peer(&fx, 22, RUN_ID, NULL);
	for (size_t i = 0; i < 3; i++) {
		struct peer *p = (struct peer *[]){ evicted, other_run, future }[i];

		run_until(&fx, has_snapshot_end, p, WAIT_USEC, "snapshot_end, resume missed");
		CHECK_STR_EQ("false", line_str(p, 0, "resumed"));
		CHECK(line_has(p, 0, "resume_error"));
		CHECK_EQ(21, line_u64(p, 0, "snapshot_seq"));
		/* Table: connections 1..7 and 20..29; 8 and 9 closed. */
		check_snapshot(p, 21, 17);
	}
	CHECK(strstr(line_str(evicted, 0, "resume_error"), "no longer") != NULL);
	CHECK(strstr(line_str(other_run, 0, "resume_error"), "run_id") != NULL);
	CHECK(strstr(line_str(future, 0, "resume_error"), "never published") != NULL);

	/* 13 is the oldest seq whose successors are all held. */
	peer_close(&fx, evicted);
	evicted = resume_peer(&fx, 13, RUN_ID, NULL);
	wait_lines(&fx, evicted, 9);
	CHECK_STR_EQ("true", line_str(evicted, 0, "resumed"));
	CHECK_EQ(14, line_u64(evicted, 1, "seq"));
	CHECK_EQ(21, line_u64(evicted, 8, "seq"));

	fixture_free(&fx);
}

struct bad_request {
	const char *name;
	const char *data;
	size_t len;		/* 0: strlen(data) */
	const char *code;
	const char *message_part;
};

static void test_bad_requests(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	static char long_line[5001], long_terminated[5002];
	static const char garbage[] = "\xff\xfe\x80\x01\x02{\x1b[31m\"\xc3\x28\n";
	static const char with_nul[] = "{\"command\"\0:\"dump\"}\n";
	const struct bad_request cases[] = {
		{ "truncated JSON", "{\"command\":\"subscribe\"\n", 0, "invalid_request", "JSON" },
		{ "unknown field", "{\"frobnicate\":1}\n", 0, "invalid_request", "frobnicate" },
		{ "unknown filter", "{\"filter\":{\"uid\":0}}\n", 0, "invalid_request", "uid" },
		{ "not an object", "[1,2]\n", 0, "invalid_request", "object" },
		{ "binary garbage", garbage, sizeof(garbage) - 1, "invalid_request", "" },
		{ "NUL byte", with_nul, sizeof(with_nul) - 1, "invalid_request", "NUL" },
		{ "long line", long_line, sizeof(long_line), "request_too_long", "4096" },
		{ "long terminated line", long_terminated, sizeof(long_terminated),
		  "request_too_long", "4096" },
	};
	const size_t ncases = sizeof(cases) / sizeof(cases[0]);
	struct peer *normal, *bad[8];
	struct fixture fx;
	uint64_t expected[64];
	size_t nexpected = 0;

	memset(long_line, 'a', sizeof(long_line));
	memset(long_terminated, ' ', sizeof(long_terminated));
	long_terminated[0] = '{';
	long_terminated[sizeof(long_terminated) - 2] = '}';
	long_terminated[sizeof(long_terminated) - 1] = '\n';

	fixture_init(&fx, &o);
	normal = peer_connect(&fx, true);
	peer_send_str(&fx, normal, "{}\n");
	run_until(&fx, has_snapshot_end, normal, WAIT_USEC, "snapshot_end of the normal client");

	/* Records go out while each bad client connects, sends and is closed. */
	for (size_t i = 0; i < ncases; i++) {
		bad[i] = peer_connect(&fx, true);
		expected[nexpected++] = publish(&fx, TCPTAP_EV_CONNECT, 100 + i, 1, 40000, 80);
		peer_send(&fx, bad[i], cases[i].data,
			  cases[i].len ? cases[i].len : strlen(cases[i].data));
		expected[nexpected++] = publish(&fx, TCPTAP_EV_CLOSE, 100 + i, 1, 40000, 80);
	}
	for (size_t i = 0; i < ncases; i++) {
		fprintf(stderr, "bad request: %s\n", cases[i].name);
		run_until(&fx, has_eof, bad[i], WAIT_USEC, "the server to close the bad client");
		CHECK_EQ(0, bad[i]->error);
		CHECK_EQ(1, bad[i]->nlines);
		CHECK_EQ(bad[i]->len, bad[i]->parsed);
		CHECK_STR_EQ("error", line_type(bad[i], 0));
		CHECK_STR_EQ(cases[i].code, line_str(bad[i], 0, "code"));
		CHECK(strstr(line_str(bad[i], 0, "message"), cases[i].message_part) != NULL);
	}

	wait_lines(&fx, normal, 2 + nexpected);
	run_for(&fx, 20 * USEC_PER_MSEC);
	check_seqs(normal, expected, nexpected);
	CHECK_EQ(ncases, stats_of(&fx).bad_requests);
	wait_clients(&fx, 1);

	fixture_free(&fx);
}

/* Publish batches of records until the server counts `overflows` overflows. */
static void publish_until_overflow(struct fixture *fx, uint64_t overflows)
{
	for (unsigned int batch = 0; stats_of(fx).overflows < overflows; batch++) {
		CHECK(batch < 400);
		for (unsigned int i = 0; i < 50; i++)
			publish(fx, TCPTAP_EV_CONNECT_FAILED, 0, 4242, 40000, 443);
		run_step(fx, 0);
		run_step(fx, 0);
	}
}

static void check_contiguous(const struct peer *p, uint64_t first, uint64_t last)
{
	uint64_t expected = first;

	for (size_t i = find_type(p, 0, "snapshot_end") + 1; i < p->nlines; i++) {
		if (strcmp(line_type(p, i), "overflow") == 0)
			break;
		CHECK_EQ(expected, line_u64(p, i, "seq"));
		expected++;
	}
	CHECK_EQ(last + 1, expected);
}

/* Read one buffer's worth from the peer without emptying its socket. */
static void peer_read_some(struct peer *p, size_t bytes)
{
	ssize_t n;

	if (p->capacity - p->len < bytes) {
		p->capacity = p->len + bytes;
		p->buf = realloc(p->buf, p->capacity);
		CHECK(p->buf != NULL);
	}
	n = recv(p->fd, p->buf + p->len, bytes, MSG_DONTWAIT);
	CHECK(n > 0);
	p->len += (size_t)n;
	peer_parse_lines(p);
}

static void test_slow_client(void)
{
	struct fixture_options o = { .request_wait_ms = 5000, .max_queue_bytes = 256 * 1024 };
	struct fixture fx;
	struct peer *normal, *slow, *stuck;
	uint64_t newest, last_record, overflow_at;
	size_t over;

	fixture_init(&fx, &o);
	normal = peer_connect(&fx, true);
	peer_send_str(&fx, normal, "{}\n");
	slow = peer_connect(&fx, false);
	peer_send_str(&fx, slow, "{}\n");
	run_until(&fx, has_snapshot_end, normal, WAIT_USEC, "snapshot_end of the normal client");
	run_for(&fx, 20 * USEC_PER_MSEC);

	/*
	 * Fill the slow client's socket and queue, then let it read a little:
	 * the next sendmsg() carries more than the socket takes and stops in
	 * the middle of a line, which must be completed before the overflow
	 * record.
	 */
	for (unsigned int batch = 0; stats_of(&fx).bytes_queued < 200 * 1024; batch++) {
		CHECK(batch < 400);
		for (unsigned int i = 0; i < 50; i++)
			publish(&fx, TCPTAP_EV_CONNECT_FAILED, 0, 4242, 40000, 443);
		run_step(&fx, 0);
		run_step(&fx, 0);
	}
	CHECK_EQ(0, stats_of(&fx).overflows);
	peer_read_some(slow, 160 * 1024);
	run_for(&fx, 20 * USEC_PER_MSEC);

	publish_until_overflow(&fx, 1);
	newest = fx.seq;
	CHECK_EQ(2, stats_of(&fx).clients);

	/* Read within the grace period: the overflow record ends a clean stream. */
	slow->reading = true;
	run_until(&fx, has_eof, slow, WAIT_USEC, "the slow client to be disconnected");
	CHECK_EQ(0, slow->error);
	CHECK_EQ(slow->len, slow->parsed);
	over = slow->nlines - 1;
	CHECK_STR_EQ("overflow", line_type(slow, over));
	CHECK_STR_EQ("connect_failed", line_type(slow, over - 1));
	last_record = line_u64(slow, over - 1, "seq");
	check_contiguous(slow, 1, last_record);
	CHECK_EQ(last_record, line_u64(slow, over, "last_seq_sent"));
	CHECK_EQ(256 * 1024, line_u64(slow, over, "limit_bytes"));
	CHECK(line_u64(slow, over, "queued_bytes") > 256 * 1024);
	CHECK(line_u64(slow, over, "newest_seq") > last_record);
	CHECK(line_u64(slow, over, "newest_seq") <= newest);
	CHECK_EQ(1, stats_of(&fx).overflows);
	wait_clients(&fx, 1);

	/* A client that never reads is cut off after the grace period. */
	stuck = peer_connect(&fx, false);
	peer_send_str(&fx, stuck, "{}\n");
	run_for(&fx, 20 * USEC_PER_MSEC);
	CHECK_EQ(2, stats_of(&fx).clients);
	publish_until_overflow(&fx, 2);
	overflow_at = now_usec();
	wait_clients(&fx, 1);
	CHECK(now_usec() - overflow_at >= 900 * USEC_PER_MSEC);
	stuck->reading = true;
	run_until(&fx, has_eof, stuck, WAIT_USEC, "the end of the stuck client's stream");

	/* The normal client got every record, before and after the overflows. */
	publish(&fx, TCPTAP_EV_CONNECT_FAILED, 0, 4242, 40000, 443);
	wait_lines(&fx, normal, 2 + fx.seq);
	run_for(&fx, 20 * USEC_PER_MSEC);
	CHECK_EQ(2 + fx.seq, normal->nlines);
	check_contiguous(normal, 1, fx.seq);
	CHECK_EQ(0, normal->error);
	CHECK(!normal->eof);
	CHECK_EQ(2, stats_of(&fx).overflows);

	fixture_free(&fx);
}

/*
 * A snapshot several times max_queue_bytes reaches a slow reader whole, and it
 * is the table as of snapshot_end's seq even when records change the table
 * while the snapshot is still being sent.
 */
static void test_large_snapshot(void)
{
	struct fixture_options o = {
		.request_wait_ms = 5000,
		.max_queue_bytes = 16 * 1024,
		.table_entries = 8192,
	};
	struct fixture fx;
	struct peer *sub, *dump;
	uint64_t cookies = 0;

	fixture_init(&fx, &o);
	for (uint64_t c = 1; c <= 4000; c++) {
		struct record seed = make_event(TCPTAP_EV_ACCEPT, c, 100, 22, 50000);

		CHECK_EQ(0, conn_table_seed(fx.table, &seed));
	}
	publish(&fx, TCPTAP_EV_CONNECT, 5000, 100, 40000, 443);

	sub = peer_connect(&fx, false);
	peer_send_str(&fx, sub, "{}\n");
	dump = peer_connect(&fx, false);
	peer_send_str(&fx, dump, "{\"command\":\"dump\"}\n");
	run_for(&fx, 50 * USEC_PER_MSEC);

	/* Change the table while neither client has read anything. */
	for (uint64_t c = 1; c <= 20; c++)
		publish(&fx, TCPTAP_EV_CLOSE, c, 100, 22, 50000);
	run_for(&fx, 20 * USEC_PER_MSEC);

	sub->reading = true;
	dump->reading = true;
	wait_lines(&fx, sub, 1 + 4001 + 1 + 20);
	run_until(&fx, has_eof, dump, WAIT_USEC, "the end of the large dump");
	run_for(&fx, 20 * USEC_PER_MSEC);

	CHECK_EQ(1 + 4001 + 1 + 20, sub->nlines);
	check_snapshot(sub, 1, 4001);
	for (size_t i = 1; i <= 4001; i++)
		cookies += line_u64(sub, i, "cookie");
	CHECK_EQ(4000 * 4001 / 2 + 5000, cookies);
	check_contiguous(sub, 2, 21);

	CHECK_EQ(0, dump->error);
	CHECK_EQ(1 + 4001 + 1, dump->nlines);
	check_snapshot(dump, 1, 4001);
	CHECK_EQ(0, stats_of(&fx).overflows);

	/* A client that hangs up in the middle of its snapshot is freed at once,
	 * with the rest of the snapshot (LeakSanitizer checks the memory). */
	peer_close(&fx, dump);
	wait_clients(&fx, 1);
	dump = peer_connect(&fx, false);
	peer_send_str(&fx, dump, "{}\n");
	run_for(&fx, 50 * USEC_PER_MSEC);
	peer_read_some(dump, 64 * 1024);
	CHECK_STR_EQ("hello", line_type(dump, 0));
	CHECK_EQ(dump->nlines, find_type(dump, 0, "snapshot_end"));
	peer_close(&fx, dump);
	wait_clients(&fx, 1);

	fixture_free(&fx);
}

/* A burst larger than max_queue_bytes in one loop iteration spills into the
 * socket buffer instead of overflowing a client that reads. */
static void test_burst(void)
{
	struct fixture_options o = { .request_wait_ms = 5000, .max_queue_bytes = 64 * 1024 };
	struct fixture fx;
	struct peer *reader;

	fixture_init(&fx, &o);
	reader = peer_connect(&fx, true);
	peer_send_str(&fx, reader, "{}\n");
	run_until(&fx, has_snapshot_end, reader, WAIT_USEC, "snapshot_end of the reader");

	for (unsigned int i = 0; i < 500; i++)
		publish(&fx, TCPTAP_EV_CONNECT_FAILED, 0, 4242, 40000, 443);
	wait_lines(&fx, reader, 2 + 500);
	check_contiguous(reader, 1, 500);
	CHECK_EQ(0, stats_of(&fx).overflows);

	fixture_free(&fx);
}

static void test_request_timeout(void)
{
	struct fixture_options o = { .request_wait_ms = 100 };
	struct fixture fx;
	struct peer *silent, *partial;

	fixture_init(&fx, &o);
	publish(&fx, TCPTAP_EV_CONNECT, 1, 100, 40000, 443);

	/* No request at all: a default subscription. A started line: an error. */
	silent = peer_connect(&fx, true);
	partial = peer_connect(&fx, true);
	peer_send_str(&fx, partial, "{\"command\":");
	run_until(&fx, has_snapshot_end, silent, WAIT_USEC, "snapshot_end after the wait");
	run_until(&fx, has_eof, partial, WAIT_USEC, "the server to close the partial request");

	check_snapshot(silent, 1, 1);
	CHECK_EQ(0, partial->error);
	CHECK_EQ(1, partial->nlines);
	CHECK_STR_EQ("invalid_request", line_str(partial, 0, "code"));
	CHECK(strstr(line_str(partial, 0, "message"), "100 ms") != NULL);
	CHECK_EQ(1, stats_of(&fx).bad_requests);
	wait_clients(&fx, 1);

	fixture_free(&fx);
}

static void test_half_close(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	struct fixture fx;
	struct peer *silent, *unterminated, *later;
	uint64_t start;

	fixture_init(&fx, &o);
	publish(&fx, TCPTAP_EV_CONNECT, 1, 100, 40000, 443);

	/* End of file stands for the request: no wait for the timer. */
	start = now_usec();
	silent = peer_connect(&fx, true);
	CHECK(shutdown(silent->fd, SHUT_WR) == 0);
	unterminated = peer_connect(&fx, true);
	peer_send_str(&fx, unterminated, "{\"filter\":{\"types\":[\"accept\"]}}");
	CHECK(shutdown(unterminated->fd, SHUT_WR) == 0);
	later = peer_connect(&fx, true);
	peer_send_str(&fx, later, "{}\n");

	run_until(&fx, has_snapshot_end, silent, WAIT_USEC, "snapshot_end after end of file");
	run_until(&fx, has_snapshot_end, unterminated, WAIT_USEC, "snapshot_end, no newline");
	run_until(&fx, has_snapshot_end, later, WAIT_USEC, "snapshot_end of the third client");
	CHECK(now_usec() - start < 2 * USEC_PER_SEC);
	check_snapshot(silent, 1, 1);
	check_snapshot(unterminated, 1, 0);
	CHECK(shutdown(later->fd, SHUT_WR) == 0);
	run_for(&fx, 20 * USEC_PER_MSEC);

	/* All three still get live records after shutting down their side. */
	publish(&fx, TCPTAP_EV_ACCEPT, 2, 100, 22, 50000);
	publish(&fx, TCPTAP_EV_CLOSE, 1, 100, 40000, 443);
	wait_lines(&fx, silent, 3 + 2);
	wait_lines(&fx, unterminated, 2 + 1);
	wait_lines(&fx, later, 3 + 2);
	run_for(&fx, 20 * USEC_PER_MSEC);
	check_seqs(silent, (uint64_t[]){ 2, 3 }, 2);
	check_seqs(unterminated, (uint64_t[]){ 2 }, 1);
	check_seqs(later, (uint64_t[]){ 2, 3 }, 2);
	CHECK_EQ(3, stats_of(&fx).clients);
	CHECK(!silent->eof);
	CHECK(!unterminated->eof);
	CHECK(!later->eof);

	/* Closing the socket entirely frees the client at once. */
	peer_close(&fx, later);
	wait_clients(&fx, 2);

	fixture_free(&fx);
}

static void test_max_clients(void)
{
	struct fixture_options o = { .request_wait_ms = 5000, .max_clients = 4 };
	struct fixture fx;
	struct peer *p[4], *extra, *after;

	fixture_init(&fx, &o);
	for (size_t i = 0; i < 4; i++) {
		p[i] = peer_connect(&fx, true);
		peer_send_str(&fx, p[i], "{}\n");
		run_until(&fx, has_snapshot_end, p[i], WAIT_USEC, "snapshot_end under the limit");
	}

	extra = peer_connect(&fx, true);
	run_until(&fx, has_eof, extra, WAIT_USEC, "the extra client to be closed");
	CHECK_EQ(0, extra->error);
	CHECK_EQ(1, extra->nlines);
	CHECK_STR_EQ("error", line_type(extra, 0));
	CHECK_STR_EQ("too_many_clients", line_str(extra, 0, "code"));
	CHECK_EQ(1, stats_of(&fx).rejected);
	CHECK_EQ(4, stats_of(&fx).clients);

	/* A slot freed by a disconnect is taken by the next client. */
	peer_close(&fx, p[0]);
	wait_clients(&fx, 3);
	after = peer_connect(&fx, true);
	peer_send_str(&fx, after, "{}\n");
	run_until(&fx, has_snapshot_end, after, WAIT_USEC, "snapshot_end after a slot freed");
	CHECK_EQ(4, stats_of(&fx).clients);
	CHECK_EQ(1, stats_of(&fx).rejected);

	fixture_free(&fx);
}

static bool accepted_at(struct fixture *fx, void *arg)
{
	return stats_of(fx).accepted == *(uint64_t *)arg;
}

/* Running out of file descriptors pauses accepting instead of spinning on a
 * listening socket that stays readable, and accepting resumes by itself. */
static void test_fd_exhaustion(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct rlimit saved, low;
	struct fixture fx;
	int fds[6], first_free, second_free;
	uint64_t expected, steps;

	fixture_init(&fx, &o);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.path);
	for (size_t i = 0; i < 6; i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		CHECK(fds[i] >= 0);
	}

	/*
	 * Room for two accepted connections: new descriptors take the lowest
	 * free numbers, and the limit caps the number, not the count. The
	 * connect() calls below need no new descriptor.
	 */
	first_free = dup(0);
	second_free = dup(0);
	CHECK(first_free >= 0);
	CHECK(second_free > first_free);
	close(first_free);
	close(second_free);
	CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0);
	low = saved;
	low.rlim_cur = (rlim_t)second_free + 1;
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	for (size_t i = 0; i < 6; i++)
		CHECK(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) == 0);

	expected = 2;
	run_until(&fx, accepted_at, &expected, WAIT_USEC, "two connections accepted");

	/* Idle steps take RUN_STEP_USEC; a loop that spins on accept() takes
	 * far more steps in the same time. */
	steps = fx.steps;
	run_for(&fx, 300 * USEC_PER_MSEC);
	CHECK(fx.steps - steps < 2 * 300 * USEC_PER_MSEC / RUN_STEP_USEC);
	CHECK_EQ(2, stats_of(&fx).accepted);
	CHECK_EQ(2, stats_of(&fx).clients);

	CHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0);
	expected = 6;
	run_until(&fx, accepted_at, &expected, WAIT_USEC, "the rest accepted after the pause");
	CHECK_EQ(6, stats_of(&fx).clients);

	for (size_t i = 0; i < 6; i++)
		close(fds[i]);
	wait_clients(&fx, 0);
	fixture_free(&fx);
}

static size_t count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	size_t n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own descriptor */
}

#ifdef __SANITIZE_ADDRESS__
size_t __sanitizer_get_current_allocated_bytes(void);

static size_t allocated_bytes(void)
{
	return __sanitizer_get_current_allocated_bytes();
}
#else
static size_t allocated_bytes(void)
{
	return mallinfo2().uordblks;
}
#endif

enum churn_kind {
	CHURN_DUMP,		/* read the dump to the end */
	CHURN_SUBSCRIBE,	/* read up to snapshot_end, then hang up */
	CHURN_HANG_UP,		/* hang up before sending anything */
	CHURN_GARBAGE,		/* read the error to the end */
	CHURN_HALF_CLOSE,	/* shut down the sending side, read up to snapshot_end */
	CHURN_KINDS,
};

struct churn_round {
	struct peer *peers[50];
	size_t n;
};

static bool churn_round_done(struct fixture *fx, void *arg)
{
	struct churn_round *round = arg;

	for (size_t i = 0; i < round->n; i++) {
		struct peer *p = round->peers[i];

		if (!p)
			continue;
		switch (i % CHURN_KINDS) {
		case CHURN_DUMP:
		case CHURN_GARBAGE:
			if (!p->eof)
				return false;
			break;
		case CHURN_SUBSCRIBE:
		case CHURN_HALF_CLOSE:
			if (!has_snapshot_end(fx, p))
				return false;
			break;
		}
	}
	return true;
}

static void churn_round(struct fixture *fx)
{
	struct churn_round round = { .n = 50 };

	for (size_t i = 0; i < round.n; i++) {
		struct peer *p = peer_connect(fx, true);

		round.peers[i] = p;
		switch (i % CHURN_KINDS) {
		case CHURN_DUMP:
			peer_send_str(fx, p, "{\"command\":\"dump\"}\n");
			break;
		case CHURN_SUBSCRIBE:
			peer_send_str(fx, p, "{}\n");
			break;
		case CHURN_HANG_UP:
			peer_close(fx, p);
			round.peers[i] = NULL;
			break;
		case CHURN_GARBAGE:
			peer_send_str(fx, p, "x\n");
			break;
		case CHURN_HALF_CLOSE:
			CHECK(shutdown(p->fd, SHUT_WR) == 0);
			break;
		}
	}

	publish(fx, TCPTAP_EV_CONNECT, fx->seq + 1000, 1, 40000, 80);
	run_until(fx, churn_round_done, &round, WAIT_USEC, "a round of clients to finish");
	for (size_t i = 0; i < round.n; i++)
		if (round.peers[i])
			peer_close(fx, round.peers[i]);
	wait_clients(fx, 0);
}

static void test_churn(void)
{
	struct fixture_options o = { .request_wait_ms = 5000 };
	struct fixture fx;
	size_t fds_before, bytes_before, bytes_after;

	fixture_init(&fx, &o);

	/* Warm up the loop's own tables before measuring. */
	for (unsigned int i = 0; i < 4; i++)
		churn_round(&fx);
	fds_before = count_open_fds();
	bytes_before = allocated_bytes();

	for (unsigned int i = 0; i < 46; i++)
		churn_round(&fx);

	bytes_after = allocated_bytes();
	CHECK_EQ(fds_before, count_open_fds());
	CHECK_EQ(0, stats_of(&fx).clients);
	CHECK_EQ(0, stats_of(&fx).bytes_queued);
	CHECK_EQ(50 * 50, stats_of(&fx).accepted);
	CHECK_EQ(50 * 10, stats_of(&fx).bad_requests);
	if (bytes_after > bytes_before + 64 * 1024) {
		fprintf(stderr, "heap grew from %zu to %zu bytes over 2300 clients\n", bytes_before,
			bytes_after);
		abort();
	}

	fixture_free(&fx);
}

int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "stream order", test_stream_order },
		{ "filters", test_filters },
		{ "dump and stats", test_dump_and_stats },
		{ "resume", test_resume },
		{ "bad requests", test_bad_requests },
		{ "slow client", test_slow_client },
		{ "large snapshot", test_large_snapshot },
		{ "burst", test_burst },
		{ "request timeout", test_request_timeout },
		{ "half close", test_half_close },
		{ "max clients", test_max_clients },
		{ "fd exhaustion", test_fd_exhaustion },
		{ "client churn", test_churn },
	};

	log_set_prefix(false);
	if (getenv("TEST_SERVER_DEBUG"))
		log_set_max_level(LOG_DEBUG);

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		test_start_usec = now_usec();
		fprintf(stderr, "test-server: %s\n", tests[i].name);
		tests[i].fn();
	}
	printf("test-server: all passed\n");
	return 0;
}
