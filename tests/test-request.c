// SPDX-License-Identifier: LGPL-2.1-or-later
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

/* Unit tests of the request parser and of record_filter_match(). */

static unsigned int passed, failed;

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (cond) {                                                             \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                       \
	} while (0)

#define CHECK_INT(expected, actual)                                                     \
	do {                                                                            \
		long long e_ = (long long)(expected), a_ = (long long)(actual);         \
		if (e_ == a_) {                                                         \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "%s:%d: %s: expected %lld, actual %lld\n",      \
				__FILE__, __LINE__, #actual, e_, a_);                   \
		}                                                                       \
	} while (0)

#define CHECK_U64(expected, actual)                                                     \
	do {                                                                            \
		uint64_t e_ = (expected), a_ = (actual);                                \
		if (e_ == a_) {                                                         \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "%s:%d: %s: expected %" PRIu64 ", actual %" PRIu64 "\n", \
				__FILE__, __LINE__, #actual, e_, a_);                   \
		}                                                                       \
	} while (0)

#define CHECK_STR(expected, actual)                                                     \
	do {                                                                            \
		const char *e_ = (expected), *a_ = (actual);                            \
		if (strcmp(e_, a_) == 0) {                                              \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "%s:%d: %s:\n  expected: %s\n  actual:   %s\n", \
				__FILE__, __LINE__, #actual, e_, a_);                   \
		}                                                                       \
	} while (0)

static int parse(const char *line, struct client_request *ret, char *err, size_t err_size)
{
	return request_parse(line, strlen(line), ret, err, err_size);
}

static void test_defaults(void)
{
	static const char *const lines[] = { "{}", "", "   \t", " { } \r" };
	char err[256];

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct client_request req;

		memset(&req, 0xa5, sizeof(req));
		err[0] = '\0';
		CHECK_INT(0, parse(lines[i], &req, err, sizeof(err)));
		CHECK_STR("", err);
		CHECK_INT(REQUEST_SUBSCRIBE, req.command);
		CHECK_U64(0, req.filter.types);
		CHECK(!req.filter.has_pid);
		CHECK(!req.filter.has_comm);
		CHECK(!req.filter.has_port);
		CHECK(!req.filter.has_netns);
		CHECK(!req.filter.has_cgroup);
		CHECK_INT(0, req.filter.family);
		CHECK(!req.has_resume);
		CHECK_STR("", req.run_id);
	}
}

static void test_full_request(void)
{
	const char *line =
		"{\"command\":\"subscribe\",\"filter\":{\"types\":[\"connect\",\"connect_failed\"],"
		"\"pid\":4294967295,\"comm\":\"nginx: worker\",\"port\":65535,\"family\":\"inet6\","
		"\"netns\":4026531840,\"cgroup\":18446744073709551615},"
		"\"resume_from\":18446744073709551615,\"run_id\":\"5d1f0c9a7b3e4f21\"}";
	struct client_request req;
	char err[256] = "";

	CHECK_INT(0, parse(line, &req, err, sizeof(err)));
	CHECK_STR("", err);
	CHECK_INT(REQUEST_SUBSCRIBE, req.command);
	CHECK_U64((1u << TCPTAP_EV_CONNECT) | (1u << TCPTAP_EV_CONNECT_FAILED), req.filter.types);
	CHECK(req.filter.has_pid);
	CHECK_U64(UINT32_MAX, req.filter.pid);
	CHECK(req.filter.has_comm);
	CHECK_STR("nginx: worker", req.filter.comm);
	CHECK(req.filter.has_port);
	CHECK_U64(65535, req.filter.port);
	CHECK_INT(TCPTAP_FAMILY_INET6, req.filter.family);
	CHECK(req.filter.has_netns);
	CHECK_U64(4026531840u, req.filter.netns);
	CHECK(req.filter.has_cgroup);
	CHECK_U64(UINT64_MAX, req.filter.cgroup);
	CHECK(req.has_resume);
	CHECK_U64(UINT64_MAX, req.resume_from);
	CHECK_STR("5d1f0c9a7b3e4f21", req.run_id);
}

static void test_commands(void)
{
	struct client_request req;
	char err[256];

	CHECK_INT(0, parse("{\"command\":\"dump\"}", &req, err, sizeof(err)));
	CHECK_INT(REQUEST_DUMP, req.command);
	CHECK_INT(0, parse("{\"command\":\"stats\"}", &req, err, sizeof(err)));
	CHECK_INT(REQUEST_STATS, req.command);
	CHECK_INT(0, parse("{\"command\":\"subscribe\"}", &req, err, sizeof(err)));
	CHECK_INT(REQUEST_SUBSCRIBE, req.command);
	/* A dump may be filtered too. */
	CHECK_INT(0, parse("{\"command\":\"dump\",\"filter\":{\"port\":22}}", &req, err,
			   sizeof(err)));
	CHECK_INT(REQUEST_DUMP, req.command);
	CHECK(req.filter.has_port);
	CHECK_U64(22, req.filter.port);
	/* Escaped keys and values mean the same as plain ones. */
	CHECK_INT(0, parse("{\"\\u0063ommand\":\"d\\u0075mp\"}", &req, err, sizeof(err)));
	CHECK_INT(REQUEST_DUMP, req.command);
	/* Zero is a valid pid (the idle task) and a valid resume point. */
	CHECK_INT(0, parse("{\"filter\":{\"pid\":0},\"resume_from\":0,\"run_id\":\"r\"}", &req,
			   err, sizeof(err)));
	CHECK(req.filter.has_pid);
	CHECK_U64(0, req.filter.pid);
	CHECK(req.has_resume);
	CHECK_U64(0, req.resume_from);
}

static const struct {
	const char *line;
	const char *message;
} error_cases[] = {
	/* Syntax. */
	{ "{", "invalid JSON: request ends early" },
	{ "{\"command\":\"dump\"", "invalid JSON: request ends early" },
	{ "{\"a\":1,}", "invalid JSON at byte 7: unexpected character" },
	{ "{} {}", "invalid JSON: unexpected data after the object at byte 3" },
	{ "{}  \r\n x", "invalid JSON: unexpected data after the object at byte 7" },
	{ "{}x", "invalid JSON: unexpected data after the object at byte 2" },
	{ "{'command':\"dump\"}", "invalid JSON: strings must be in double quotes" },
	{ "{\"command\":'dump'}", "invalid JSON at byte 11: unexpected character" },
	{ "{\"filter\":{\"pid\":NaN}}", "invalid JSON: unexpected \"NaN\" at byte 17" },
	{ "{\"filter\":{\"pid\":Infinity}}", "invalid JSON: unexpected \"Infinity\" at byte 17" },
	{ "{\"filter\":{\"pid\":01}}", "invalid JSON at byte 19: number expected" },
	{ "{\"command\":\"\xff\"}", "invalid JSON at byte 12: invalid utf-8 string" },
	{ "{\"filter\":{\"types\":[[[[[[[[1]]]]]]]]}}", "invalid JSON at byte 25: nesting too deep" },
	/* Seven levels parse, so the semantic check reports; eight do not. */
	{ "{\"a\":[[[[[[1]]]]]]}", "unknown field \"a\"" },
	{ "{\"a\":[[[[[[[1]]]]]]]}", "invalid JSON at byte 12: nesting too deep" },
	/* Shape. */
	{ "[]", "request must be a JSON object" },
	{ "\"subscribe\"", "request must be a JSON object" },
	{ "42", "request must be a JSON object" },
	{ "null", "request must be a JSON object" },
	{ "  x", "request must be a JSON object" },
	{ "{\"fitler\":{}}", "unknown field \"fitler\"" },
	{ "{\"filter\":{\"prot\":80}}", "unknown field \"prot\" in \"filter\"" },
	{ "{\"x\\n\\u0001\\\"y\":1}", "unknown field \"x???y\"" },
	{ "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}",
	  "unknown field \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\"" },
	{ "{\"command\":\"dump\",\"command\":\"stats\"}", "duplicate field \"command\"" },
	{ "{\"command\":\"dump\",\"\\u0063ommand\":\"stats\"}", "duplicate field \"command\"" },
	{ "{\"filter\":{\"pid\":1,\"pid\":2}}", "duplicate field \"pid\"" },
	{ "{\"filter\":{},\"filter\":{}}", "duplicate field \"filter\"" },
	/* command */
	{ "{\"command\":\"watch\"}", "\"command\" must be \"subscribe\", \"dump\" or \"stats\"" },
	{ "{\"command\":1}", "\"command\" must be \"subscribe\", \"dump\" or \"stats\"" },
	{ "{\"command\":null}", "\"command\" must be \"subscribe\", \"dump\" or \"stats\"" },
	/* filter */
	{ "{\"filter\":[]}", "\"filter\" must be an object" },
	{ "{\"filter\":null}", "\"filter\" must be an object" },
	{ "{\"filter\":{\"types\":[]}}", "\"types\" must not be empty" },
	{ "{\"filter\":{\"types\":\"connect\"}}", "\"types\" must be an array of event type names" },
	{ "{\"filter\":{\"types\":[1]}}", "\"types\" must be an array of event type names" },
	{ "{\"filter\":{\"types\":[\"connect\",\"open\"]}}",
	  "unknown type \"open\" in \"types\": expected connect, accept, close or connect_failed" },
	{ "{\"filter\":{\"types\":[\"lost\"]}}",
	  "unknown type \"lost\" in \"types\": expected connect, accept, close or connect_failed" },
	{ "{\"filter\":{\"types\":[\"snapshot\"]}}",
	  "unknown type \"snapshot\" in \"types\": expected connect, accept, close or connect_failed" },
	{ "{\"filter\":{\"pid\":4294967296}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"pid\":-1}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"pid\":1.0}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"pid\":1e3}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"pid\":\"1\"}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"pid\":true}}", "\"pid\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"port\":0}}", "\"port\" must be an integer from 1 to 65535" },
	{ "{\"filter\":{\"port\":65536}}", "\"port\" must be an integer from 1 to 65535" },
	{ "{\"filter\":{\"port\":-80}}", "\"port\" must be an integer from 1 to 65535" },
	{ "{\"filter\":{\"port\":-9223372036854775809}}",
	  "\"port\" must be an integer from 1 to 65535" },
	{ "{\"filter\":{\"netns\":4294967296}}", "\"netns\" must be an integer from 0 to 4294967295" },
	{ "{\"filter\":{\"cgroup\":-1}}",
	  "\"cgroup\" must be an integer from 0 to 18446744073709551615" },
	{ "{\"filter\":{\"cgroup\":18446744073709551616}}",
	  "\"cgroup\" is larger than 18446744073709551615" },
	{ "{\"filter\":{\"cgroup\":99999999999999999999999}}",
	  "\"cgroup\" is larger than 18446744073709551615" },
	{ "{\"filter\":{\"comm\":\"\"}}", "\"comm\" must be a string of 1 to 15 bytes without NUL" },
	{ "{\"filter\":{\"comm\":\"0123456789abcdef\"}}",
	  "\"comm\" must be a string of 1 to 15 bytes without NUL" },
	{ "{\"filter\":{\"comm\":\"a\\u0000b\"}}",
	  "\"comm\" must be a string of 1 to 15 bytes without NUL" },
	{ "{\"filter\":{\"comm\":7}}", "\"comm\" must be a string of 1 to 15 bytes without NUL" },
	{ "{\"filter\":{\"family\":\"ipv4\"}}", "\"family\" must be \"inet\" or \"inet6\"" },
	{ "{\"filter\":{\"family\":2}}", "\"family\" must be \"inet\" or \"inet6\"" },
	/* resume */
	{ "{\"resume_from\":5}", "\"resume_from\" requires \"run_id\"" },
	{ "{\"run_id\":\"abc\"}", "\"run_id\" requires \"resume_from\"" },
	{ "{\"resume_from\":-5,\"run_id\":\"abc\"}",
	  "\"resume_from\" must be an integer from 0 to 18446744073709551615" },
	{ "{\"resume_from\":\"5\",\"run_id\":\"abc\"}",
	  "\"resume_from\" must be an integer from 0 to 18446744073709551615" },
	{ "{\"resume_from\":18446744073709551616,\"run_id\":\"abc\"}",
	  "\"resume_from\" is larger than 18446744073709551615" },
	{ "{\"resume_from\":5,\"run_id\":\"\"}",
	  "\"run_id\" must be a string of 1 to 63 bytes without NUL" },
	{ "{\"resume_from\":5,\"run_id\":5}",
	  "\"run_id\" must be a string of 1 to 63 bytes without NUL" },
	{ "{\"resume_from\":5,\"run_id\":"
	  "\"0123456789012345678901234567890123456789012345678901234567890123\"}",
	  "\"run_id\" must be a string of 1 to 63 bytes without NUL" },
	{ "{\"command\":\"dump\",\"resume_from\":5,\"run_id\":\"abc\"}",
	  "\"resume_from\" is only valid with \"command\": \"subscribe\"" },
	{ "{\"command\":\"stats\",\"resume_from\":5,\"run_id\":\"abc\"}",
	  "\"resume_from\" is only valid with \"command\": \"subscribe\"" },
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
		struct client_request req, before;
		char err[256] = "";
		int r;

		memset(&req, 0x5a, sizeof(req));
		before = req;
		r = parse(error_cases[i].line, &req, err, sizeof(err));
		if (r != -EINVAL)
			fprintf(stderr, "request: %s\n", error_cases[i].line);
		CHECK_INT(-EINVAL, r);
		CHECK_STR(error_cases[i].message, err);
		/* ret_request stays untouched on failure. */
		CHECK(memcmp(&req, &before, sizeof(req)) == 0);
	}
}

static void test_nul_and_length(void)
{
	static const char with_nul[] = "{\"command\":\"du\0mp\"}";
	struct client_request req;
	char line[REQUEST_MAX_BYTES + 2];
	char err[256] = "";
	size_t n;

	CHECK_INT(-EINVAL, request_parse(with_nul, sizeof(with_nul) - 1, &req, err, sizeof(err)));
	CHECK_STR("request contains a NUL byte at byte 14", err);

	/* Exactly REQUEST_MAX_BYTES is allowed: pad a valid request with spaces. */
	memset(line, ' ', sizeof(line));
	memcpy(line, "{\"command\":\"dump\"}", 18);
	CHECK_INT(0, request_parse(line, REQUEST_MAX_BYTES, &req, err, sizeof(err)));
	CHECK_INT(REQUEST_DUMP, req.command);

	CHECK_INT(-EINVAL, request_parse(line, REQUEST_MAX_BYTES + 1, &req, err, sizeof(err)));
	CHECK_STR("request is longer than 4096 bytes", err);

	/* A request of many distinct unknown keys is rejected at the first one. */
	n = 0;
	line[n++] = '{';
	for (int i = 0; n + 12 < REQUEST_MAX_BYTES; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s\"k%d\":0", i ? "," : "", i);
	line[n++] = '}';
	CHECK_INT(-EINVAL, request_parse(line, n, &req, err, sizeof(err)));
	CHECK_STR("unknown field \"k0\"", err);

	/* A short error buffer truncates the message but still terminates it. */
	CHECK_INT(-EINVAL, parse("{\"fitler\":1}", &req, err, 8));
	CHECK_STR("unknown", err);
	CHECK_INT(-EINVAL, parse("{\"fitler\":1}", &req, NULL, 0));
}

static struct record make_record(uint8_t type, uint32_t pid, const char *comm, uint16_t sport,
				 uint16_t dport)
{
	struct record r = { .seq = 1 };

	r.ev.type = type;
	r.ev.family = TCPTAP_FAMILY_INET;
	r.ev.pid = pid;
	r.ev.sport = sport;
	r.ev.dport = dport;
	r.ev.netns = 4026531840u;
	r.ev.cgroup = 77;
	memcpy(r.ev.comm, comm, strnlen(comm, TCPTAP_COMM_LEN));
	return r;
}

static bool match(const char *line, const struct record *r)
{
	struct client_request req;
	char err[256];

	if (parse(line, &req, err, sizeof(err)) < 0) {
		fprintf(stderr, "unexpected parse failure of %s: %s\n", line, err);
		failed++;
		return false;
	}
	return record_filter_match(&req.filter, r);
}

static void test_filter_match(void)
{
	struct record connect = make_record(TCPTAP_EV_CONNECT, 100, "curl", 40000, 80);
	struct record close = make_record(TCPTAP_EV_CLOSE, 100, "curl", 40000, 80);
	struct record lost = { .seq = 2, .lost_count = 3 };
	struct record full_comm = make_record(TCPTAP_EV_ACCEPT, 1, "0123456789abcdef", 22, 5000);
	struct record v6 = make_record(TCPTAP_EV_ACCEPT, 1, "sshd", 22, 5000);

	lost.ev.type = RECORD_LOST;
	v6.ev.family = TCPTAP_FAMILY_INET6;

	CHECK(match("{}", &connect));
	CHECK(match("{\"filter\":{\"types\":[\"connect\"]}}", &connect));
	CHECK(!match("{\"filter\":{\"types\":[\"connect\"]}}", &close));
	CHECK(match("{\"filter\":{\"types\":[\"accept\",\"close\"]}}", &close));
	CHECK(match("{\"filter\":{\"pid\":100}}", &connect));
	CHECK(!match("{\"filter\":{\"pid\":101}}", &connect));
	CHECK(match("{\"filter\":{\"comm\":\"curl\"}}", &connect));
	CHECK(!match("{\"filter\":{\"comm\":\"cur\"}}", &connect));
	CHECK(!match("{\"filter\":{\"comm\":\"curl2\"}}", &connect));
	/* A 16-byte comm without NUL never equals a filter of at most 15 bytes. */
	CHECK(!match("{\"filter\":{\"comm\":\"0123456789abcde\"}}", &full_comm));
	CHECK(match("{\"filter\":{\"port\":80}}", &connect));
	CHECK(match("{\"filter\":{\"port\":40000}}", &connect));
	CHECK(!match("{\"filter\":{\"port\":443}}", &connect));
	CHECK(match("{\"filter\":{\"family\":\"inet\"}}", &connect));
	CHECK(!match("{\"filter\":{\"family\":\"inet6\"}}", &connect));
	CHECK(match("{\"filter\":{\"family\":\"inet6\"}}", &v6));
	CHECK(match("{\"filter\":{\"netns\":4026531840}}", &connect));
	CHECK(!match("{\"filter\":{\"netns\":4026531841}}", &connect));
	CHECK(match("{\"filter\":{\"cgroup\":77}}", &connect));
	CHECK(!match("{\"filter\":{\"cgroup\":78}}", &connect));
	/* Every condition must hold. */
	CHECK(match("{\"filter\":{\"pid\":100,\"port\":80,\"types\":[\"connect\"]}}", &connect));
	CHECK(!match("{\"filter\":{\"pid\":100,\"port\":81,\"types\":[\"connect\"]}}", &connect));
	/* Lost records reach every subscriber, whatever its filter. */
	CHECK(match("{\"filter\":{\"types\":[\"close\"],\"pid\":5,\"comm\":\"x\",\"port\":1,"
		    "\"family\":\"inet6\",\"netns\":1,\"cgroup\":1}}", &lost));
}

static void test_filter_snapshot_origin(void)
{
	struct record entry = make_record(TCPTAP_EV_CONNECT, 100, "curl", 40000, 80);
	const char *connect_only = "{\"filter\":{\"types\":[\"connect\"]}}";
	const char *accept_only = "{\"filter\":{\"types\":[\"accept\"]}}";
	const char *close_only = "{\"filter\":{\"types\":[\"close\",\"connect_failed\"]}}";

	entry.origin = RECORD_ORIGIN_CONNECT;
	CHECK(match(connect_only, &entry));
	CHECK(!match(accept_only, &entry));
	CHECK(!match(close_only, &entry));

	entry.origin = RECORD_ORIGIN_ACCEPT;
	entry.ev.type = TCPTAP_EV_ACCEPT;
	CHECK(!match(connect_only, &entry));
	CHECK(match(accept_only, &entry));
	CHECK(!match(close_only, &entry));

	/* A seeded entry counts as either; its ev.type does not matter. */
	entry.origin = RECORD_ORIGIN_SEEDED;
	entry.ev.type = 0;
	CHECK(match(connect_only, &entry));
	CHECK(match(accept_only, &entry));
	CHECK(!match(close_only, &entry));
	CHECK(match("{}", &entry));
}

int main(void)
{
	test_defaults();
	test_full_request();
	test_commands();
	test_errors();
	test_nul_and_length();
	test_filter_match();
	test_filter_snapshot_origin();

	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
