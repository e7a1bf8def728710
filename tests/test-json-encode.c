// SPDX-License-Identifier: LGPL-2.1-or-later
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_encode.h"

/*
 * Unit tests of the wire encoder. Every line the encoder writes is parsed
 * back with json-c and compared field by field. Fixed records are compared
 * byte for byte with the golden file named by argv[1]. With --print the
 * golden stream goes to stdout instead, to regenerate the file after a
 * deliberate format change (review the diff before committing it).
 */

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
		if (e_ && a_ && strcmp(e_, a_) == 0) {                                  \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "%s:%d: %s:\n  expected: %s\n  actual:   %s\n", \
				__FILE__, __LINE__, #actual, e_ ? e_ : "(null)",        \
				a_ ? a_ : "(null)");                                    \
		}                                                                       \
	} while (0)

static struct record make_connection(uint8_t type, uint8_t family, const char *saddr,
				     uint16_t sport, const char *daddr, uint16_t dport)
{
	struct record r = { .seq = 12 };
	int af = family == TCPTAP_FAMILY_INET ? AF_INET : AF_INET6;

	r.ev = (struct tcptap_event) {
		.ts_ns = 123456789,
		.cookie = 4097,
		.cgroup = 1,
		.netns = 4026531840u,
		.pid = 1234,
		.tid = 1235,
		.uid = 1000,
		.cpu = 1,
		.sport = sport,
		.dport = dport,
		.type = type,
		.family = family,
	};
	if (inet_pton(af, saddr, r.ev.saddr_be) != 1 || inet_pton(af, daddr, r.ev.daddr_be) != 1)
		abort();
	memcpy(r.ev.comm, "curl", 5);
	return r;
}

/* Parse one encoded line: it must end in exactly one '\n' and hold one object. */
static struct json_object *parse_line(const char *buf, int len)
{
	struct json_tokener *tok;
	struct json_object *obj;

	CHECK(len > 0);
	if (len <= 0)
		return NULL;
	CHECK_INT('\n', buf[len - 1]);
	CHECK(memchr(buf, '\n', (size_t)len - 1) == NULL);

	tok = json_tokener_new();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, buf, len - 1);
	CHECK_INT(json_tokener_success, json_tokener_get_error(tok));
	CHECK_INT(len - 1, json_tokener_get_parse_end(tok));
	json_tokener_free(tok);
	CHECK(obj != NULL);
	if (obj && !json_object_is_type(obj, json_type_object)) {
		CHECK(json_object_is_type(obj, json_type_object));
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

/* Check that obj's keys are exactly keys[], in that order. */
static void check_keys(struct json_object *obj, const char *const *keys)
{
	size_t i = 0;

	json_object_object_foreach(obj, key, value) {
		(void)value;
		CHECK_STR(keys[i], key);
		if (!keys[i])
			return;
		i++;
	}
	if (keys[i]) {
		failed++;
		fprintf(stderr, "%s:%d: expected key \"%s\" after the last one\n", __FILE__,
			__LINE__, keys[i]);
	} else {
		passed++;
	}
}

static uint64_t get_u64(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int)) {
		fprintf(stderr, "missing integer field \"%s\"\n", key);
		failed++;
		return UINT64_MAX - 1;
	}
	return json_object_get_uint64(v);
}

static const char *get_str(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return "(missing string)";
	return json_object_get_string(v);
}

static void check_connection_fields(struct json_object *obj, const struct record *r,
				    const char *saddr, const char *daddr)
{
	CHECK_U64(r->ev.ts_ns, get_u64(obj, "ts_ns"));
	CHECK_U64(r->ev.pid, get_u64(obj, "pid"));
	CHECK_U64(r->ev.tid, get_u64(obj, "tid"));
	CHECK_U64(r->ev.uid, get_u64(obj, "uid"));
	CHECK_STR(r->ev.family == TCPTAP_FAMILY_INET ? "inet" : "inet6", get_str(obj, "family"));
	CHECK_STR(saddr, get_str(obj, "saddr"));
	CHECK_U64(r->ev.sport, get_u64(obj, "sport"));
	CHECK_STR(daddr, get_str(obj, "daddr"));
	CHECK_U64(r->ev.dport, get_u64(obj, "dport"));
	CHECK_U64(r->ev.netns, get_u64(obj, "netns"));
	CHECK_U64(r->ev.cookie, get_u64(obj, "cookie"));
	CHECK_U64(r->ev.cgroup, get_u64(obj, "cgroup"));
	CHECK_U64(r->ev.cpu, get_u64(obj, "cpu"));
}

static const char *const EVENT_KEYS[] = {
	"seq", "ts_ns", "type", "pid", "tid", "comm", "uid", "family", "saddr", "sport",
	"daddr", "dport", "netns", "cookie", "cgroup", "cpu", NULL,
};

static void test_record_connect_inet(void)
{
	struct record r = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1",
					  40000, "10.1.2.3", 80);
	char buf[JSON_RECORD_MAX_BYTES];
	struct json_object *obj;
	int len;

	len = json_encode_record(&r, buf, sizeof(buf));
	obj = parse_line(buf, len);
	if (!obj)
		return;

	check_keys(obj, EVENT_KEYS);
	CHECK_U64(12, get_u64(obj, "seq"));
	CHECK_STR("connect", get_str(obj, "type"));
	CHECK_STR("curl", get_str(obj, "comm"));
	check_connection_fields(obj, &r, "127.0.0.1", "10.1.2.3");
	json_object_put(obj);
}

static void test_record_types(void)
{
	static const struct {
		uint8_t type;
		const char *name;
	} cases[] = {
		{ TCPTAP_EV_CONNECT, "connect" },
		{ TCPTAP_EV_ACCEPT, "accept" },
		{ TCPTAP_EV_CLOSE, "close" },
	};
	char buf[JSON_RECORD_MAX_BYTES];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct record r = make_connection(cases[i].type, TCPTAP_FAMILY_INET6, "::1", 8080,
						  "fe80::1:2", 51000);
		struct json_object *obj = parse_line(buf, json_encode_record(&r, buf, sizeof(buf)));

		if (!obj)
			continue;
		check_keys(obj, EVENT_KEYS);
		CHECK_STR(cases[i].name, get_str(obj, "type"));
		check_connection_fields(obj, &r, "::1", "fe80::1:2");
		json_object_put(obj);
	}
}

static void test_record_connect_failed(void)
{
	static const char *const keys[] = {
		"seq", "ts_ns", "type", "pid", "tid", "comm", "uid", "family", "saddr", "sport",
		"daddr", "dport", "netns", "cookie", "cgroup", "cpu", "error", NULL,
	};
	static const struct {
		int error;
		const char *name;
	} cases[] = {
		{ ECONNREFUSED, "ECONNREFUSED" },
		{ ETIMEDOUT, "ETIMEDOUT" },
		{ ECONNRESET, "ECONNRESET" },
		{ EHOSTUNREACH, "EHOSTUNREACH" },
		{ ENETUNREACH, "ENETUNREACH" },
		{ EINTR, "EINTR" },
		{ 0, "E0" },
		{ 4095, "E4095" },
		{ -5, "E-5" },
		{ INT32_MIN, "E-2147483648" },
	};
	char buf[JSON_RECORD_MAX_BYTES];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct record r = make_connection(TCPTAP_EV_CONNECT_FAILED, TCPTAP_FAMILY_INET,
						  "192.0.2.1", 33000, "192.0.2.2", 443);
		struct json_object *obj;

		r.ev.error = cases[i].error;
		obj = parse_line(buf, json_encode_record(&r, buf, sizeof(buf)));
		if (!obj)
			continue;
		check_keys(obj, keys);
		CHECK_STR("connect_failed", get_str(obj, "type"));
		CHECK_STR(cases[i].name, get_str(obj, "error"));
		json_object_put(obj);
	}
}

static void test_record_late(void)
{
	static const char *const keys[] = {
		"seq", "ts_ns", "type", "pid", "tid", "comm", "uid", "family", "saddr", "sport",
		"daddr", "dport", "netns", "cookie", "cgroup", "cpu", "late", NULL,
	};
	struct record r = make_connection(TCPTAP_EV_CLOSE, TCPTAP_FAMILY_INET, "127.0.0.1", 1,
					  "127.0.0.1", 2);
	char buf[JSON_RECORD_MAX_BYTES];
	struct json_object *obj, *late;

	r.late = true;
	obj = parse_line(buf, json_encode_record(&r, buf, sizeof(buf)));
	if (!obj)
		return;
	check_keys(obj, keys);
	CHECK(json_object_object_get_ex(obj, "late", &late));
	CHECK(json_object_is_type(late, json_type_boolean));
	CHECK(json_object_get_boolean(late));
	json_object_put(obj);
}

static void test_record_lost(void)
{
	static const char *const keys[] = { "seq", "ts_ns", "type", "reason", "cpu", "count",
					    NULL };
	struct record r = { .seq = 99, .lost_count = 7 };
	char buf[JSON_RECORD_MAX_BYTES];
	struct json_object *obj;

	r.ev.type = RECORD_LOST;
	r.ev.ts_ns = 5000;
	r.ev.cpu = 1;
	obj = parse_line(buf, json_encode_record(&r, buf, sizeof(buf)));
	if (!obj)
		return;
	check_keys(obj, keys);
	CHECK_U64(99, get_u64(obj, "seq"));
	CHECK_U64(5000, get_u64(obj, "ts_ns"));
	CHECK_STR("lost", get_str(obj, "type"));
	CHECK_STR("ring_full", get_str(obj, "reason"));
	CHECK_U64(1, get_u64(obj, "cpu"));
	CHECK_U64(7, get_u64(obj, "count"));
	json_object_put(obj);
}

static void test_record_lost_nested(void)
{
	static const char *const keys[] = { "seq", "ts_ns", "type", "reason", "count", NULL };
	struct record r = { .seq = 100, .lost_count = 3, .lost_reason = RECORD_LOST_NESTED };
	char buf[JSON_RECORD_MAX_BYTES];
	struct json_object *obj;

	r.ev.type = RECORD_LOST;
	r.ev.ts_ns = 6000;
	r.ev.cpu = 1;	/* not known for nested runs, so not encoded */
	obj = parse_line(buf, json_encode_record(&r, buf, sizeof(buf)));
	if (!obj)
		return;
	check_keys(obj, keys);
	CHECK_STR("nested", get_str(obj, "reason"));
	CHECK_U64(3, get_u64(obj, "count"));
	json_object_put(obj);
}

static void test_record_invalid(void)
{
	struct record r = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 1,
					  "127.0.0.1", 2);
	char buf[JSON_RECORD_MAX_BYTES];

	r.ev.type = TCPTAP_EV_SYNC;
	CHECK_INT(-EINVAL, json_encode_record(&r, buf, sizeof(buf)));
	r.ev.type = 0;
	CHECK_INT(-EINVAL, json_encode_record(&r, buf, sizeof(buf)));
	r.ev.type = TCPTAP_EV_CONNECT;
	r.ev.family = 0;
	CHECK_INT(-EINVAL, json_encode_record(&r, buf, sizeof(buf)));
	r.ev.family = 1;
	CHECK_INT(-EINVAL, json_encode_snapshot(&r, buf, sizeof(buf)));
}

static void test_snapshot(void)
{
	static const char *const keys[] = {
		"ts_ns", "type", "pid", "tid", "comm", "uid", "family", "saddr", "sport", "daddr",
		"dport", "netns", "cookie", "cgroup", "cpu", "origin", NULL,
	};
	static const struct {
		uint8_t origin;
		const char *name;
	} cases[] = {
		{ RECORD_ORIGIN_CONNECT, "connect" },
		{ RECORD_ORIGIN_ACCEPT, "accept" },
		{ RECORD_ORIGIN_SEEDED, "seeded" },
	};
	char buf[JSON_RECORD_MAX_BYTES];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct record r = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "10.0.0.1",
						  22, "10.0.0.2", 50000);
		struct json_object *obj;

		r.origin = cases[i].origin;
		r.late = true;	/* a table entry is never "late"; the flag must not leak */
		obj = parse_line(buf, json_encode_snapshot(&r, buf, sizeof(buf)));
		if (!obj)
			continue;
		check_keys(obj, keys);
		CHECK_STR("snapshot", get_str(obj, "type"));
		CHECK_STR(cases[i].name, get_str(obj, "origin"));
		check_connection_fields(obj, &r, "10.0.0.1", "10.0.0.2");
		json_object_put(obj);
	}

	{
		struct record r = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "10.0.0.1",
						  22, "10.0.0.2", 50000);

		r.origin = RECORD_ORIGIN_NONE;
		CHECK_INT(-EINVAL, json_encode_snapshot(&r, buf, sizeof(buf)));
	}
}

/* Encode comm, check the JSON text of the "comm" value and what json-c decodes from it. */
static void check_comm(const char comm[TCPTAP_COMM_LEN], const char *expected_json,
		       const char *expected_decoded)
{
	struct record r = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 1,
					  "127.0.0.1", 2);
	char buf[JSON_RECORD_MAX_BYTES], actual[128];
	const char *start, *end;
	struct json_object *obj;
	int len;

	memcpy(r.ev.comm, comm, TCPTAP_COMM_LEN);
	len = json_encode_record(&r, buf, sizeof(buf));
	obj = parse_line(buf, len);
	if (!obj)
		return;

	start = strstr(buf, "\"comm\":");
	end = start ? strstr(start, ",\"uid\":") : NULL;
	if (start && end && (size_t)(end - start - 7) < sizeof(actual)) {
		memcpy(actual, start + 7, (size_t)(end - start - 7));
		actual[end - start - 7] = '\0';
		CHECK_STR(expected_json, actual);
	} else {
		CHECK(!"comm field found in the encoded line");
	}
	CHECK_STR(expected_decoded, get_str(obj, "comm"));
	json_object_put(obj);
}

static void test_comm_escaping(void)
{
	/* Each comm is exactly TCPTAP_COMM_LEN bytes as the kernel hands it over. */
	check_comm("curl\0\0\0\0\0\0\0\0\0\0\0", "\"curl\"", "curl");
	check_comm("\0ignored\0\0\0\0\0\0\0\0", "\"\"", "");
	check_comm("a\"b\\c\0\0\0\0\0\0\0\0\0\0", "\"a\\\"b\\\\c\"", "a\"b\\c");
	check_comm("\x01\t\n\x1b[31m\x7f\0\0\0\0\0\0\0", "\"\\u0001\\u0009\\u000a\\u001b[31m\\u007f\"",
		   "\x01\t\n\x1b[31m\x7f");
	/* U+0085 and U+009B are C1 controls; U+00A0 is the first character after them. */
	check_comm("\xc2\x85\xc2\x9b\xc2\xa0\0\0\0\0\0\0\0\0\0", "\"\\u0085\\u009b\xc2\xa0\"",
		   "\xc2\x85\xc2\x9b\xc2\xa0");
	/* Well-formed 2-, 3- and 4-byte sequences pass unchanged. */
	check_comm("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\0\0\0\0\0\0",
		   "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	/* A stray continuation byte, 0xff and an overlong NUL: one U+FFFD per byte. */
	check_comm("a\x80" "b\xff" "c\xc0\x80\0\0\0\0\0\0\0\0\0",
		   "\"a\\ufffdb\\ufffdc\\ufffd\\ufffd\"",
		   "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd");
	/* An encoded surrogate (U+D800) and a code point past U+10FFFF. */
	check_comm("\xed\xa0\x80\xf4\x90\x80\x80\0\0\0\0\0\0\0\0\0",
		   "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"",
		   "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
		   "\xef\xbf\xbd");
	/* A 3-byte sequence cut by the 16-byte limit, no NUL terminator. */
	check_comm("abcdefghijklmn\xe2\x82", "\"abcdefghijklmn\\ufffd\\ufffd\"",
		   "abcdefghijklmn\xef\xbf\xbd\xef\xbf\xbd");
	check_comm("abcdefghijklmnop", "\"abcdefghijklmnop\"", "abcdefghijklmnop");
	/* A multibyte sequence whose lead byte is the last byte. */
	check_comm("abcdefghijklmno\xc3", "\"abcdefghijklmno\\ufffd\"",
		   "abcdefghijklmno\xef\xbf\xbd");
}

/* Every buffer shorter than the line fails with -ENOSPC and writes nothing past size. */
static void check_enospc(const struct record *r, int (*encode)(const struct record *, char *,
								size_t))
{
	char full[JSON_RECORD_MAX_BYTES], buf[JSON_RECORD_MAX_BYTES + 16];
	int len = encode(r, full, sizeof(full));
	unsigned int short_failures = 0, overruns = 0;

	CHECK(len > 0);
	if (len <= 0)
		return;

	for (int size = 0; size < len; size++) {
		memset(buf, 0x5a, sizeof(buf));
		if (encode(r, buf, (size_t)size) != -ENOSPC)
			short_failures++;
		for (size_t i = (size_t)size; i < sizeof(buf); i++)
			if (buf[i] != 0x5a) {
				overruns++;
				break;
			}
	}
	CHECK_INT(0, short_failures);
	CHECK_INT(0, overruns);

	CHECK_INT(len, encode(r, buf, (size_t)len));
	CHECK(memcmp(buf, full, (size_t)len) == 0);
}

static void test_buffer_too_small(void)
{
	struct record r = make_connection(TCPTAP_EV_CONNECT_FAILED, TCPTAP_FAMILY_INET6,
					  "2001:db8::1", 40000, "2001:db8::2", 80);
	struct record lost = { .seq = 3, .lost_count = 10 };

	r.ev.error = ECONNREFUSED;
	r.late = true;
	memcpy(r.ev.comm, "\xff\"\x01", 4);
	check_enospc(&r, json_encode_record);

	r.origin = RECORD_ORIGIN_SEEDED;
	check_enospc(&r, json_encode_snapshot);

	lost.ev.type = RECORD_LOST;
	check_enospc(&lost, json_encode_record);
}

/*
 * Exact maximum line lengths. The longest record line is a connect_failed record
 * with "late" and the 13-byte error name EADDRNOTAVAIL. Its numbers take 20
 * digits (u64), 10 (u32) and 5 (ports), its IPv6 addresses eight 4-digit groups
 * (39 bytes), and each of its 16 comm bytes becomes a 6-byte escape. The longest
 * snapshot line has the same fields and the origin "connect".
 */
#define RECORD_LINE_MAX_LEN 516
#define SNAPSHOT_LINE_MAX_LEN 466

static struct record make_max_length_record(void)
{
	struct record r = { .seq = UINT64_MAX, .late = true, .origin = RECORD_ORIGIN_CONNECT };

	r.ev = (struct tcptap_event) {
		.ts_ns = UINT64_MAX, .cookie = UINT64_MAX, .cgroup = UINT64_MAX,
		.netns = UINT32_MAX, .pid = UINT32_MAX, .tid = UINT32_MAX, .uid = UINT32_MAX,
		.cpu = UINT32_MAX, .error = EADDRNOTAVAIL, .sport = UINT16_MAX,
		.dport = UINT16_MAX, .type = TCPTAP_EV_CONNECT_FAILED,
		.family = TCPTAP_FAMILY_INET6,
	};
	memset(r.ev.saddr_be, 0xff, TCPTAP_ADDR_LEN);
	memset(r.ev.daddr_be, 0xff, TCPTAP_ADDR_LEN);
	memset(r.ev.comm, 0xff, TCPTAP_COMM_LEN);
	return r;
}

/* Raise *record_max and *snapshot_max to the lengths of r's lines if they are longer. */
static void measure_lengths(const struct record *r, int *record_max, int *snapshot_max)
{
	char buf[4096];
	int len;

	len = json_encode_record(r, buf, sizeof(buf));
	CHECK(len > 0);
	if (len > *record_max)
		*record_max = len;

	len = json_encode_snapshot(r, buf, sizeof(buf));
	CHECK(len > 0);
	if (len > *snapshot_max)
		*snapshot_max = len;
}

/*
 * The maximum line lengths are exact and fit JSON_RECORD_MAX_BYTES, the size
 * callers allocate. The fields' lengths add up independently, so varying one
 * field at a time from make_max_length_record() finds the maximum.
 */
static void test_max_length(void)
{
	static const char *const comms[] = {
		"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
		"\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01",
		"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"",
		"\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80",
		"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80",
		"\xe2\x82\xe2\x82\xe2\x82\xe2\x82\xe2\x82\xe2\x82\xe2\x82\xe2\x82",
	};
	static const char *const addrs[] = {
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:255.255.255.255",
		"::255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
	};
	static const uint8_t types[] = {
		TCPTAP_EV_CONNECT, TCPTAP_EV_ACCEPT, TCPTAP_EV_CLOSE, TCPTAP_EV_CONNECT_FAILED,
		RECORD_LOST,
	};
	struct record longest = make_max_length_record(), r;
	int record_max = 0, snapshot_max = 0;

	for (size_t i = 0; i < sizeof(comms) / sizeof(comms[0]); i++) {
		r = longest;
		memcpy(r.ev.comm, comms[i], TCPTAP_COMM_LEN);
		measure_lengths(&r, &record_max, &snapshot_max);
	}

	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		r = longest;
		CHECK_INT(1, inet_pton(AF_INET6, addrs[i], r.ev.saddr_be));
		CHECK_INT(1, inet_pton(AF_INET6, addrs[i], r.ev.daddr_be));
		measure_lengths(&r, &record_max, &snapshot_max);
	}

	for (int64_t error = -5000; error <= 5000; error++) {
		r = longest;
		r.ev.error = (int32_t)error;
		measure_lengths(&r, &record_max, &snapshot_max);
	}
	r = longest;
	r.ev.error = INT32_MIN;
	measure_lengths(&r, &record_max, &snapshot_max);

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		r = longest;
		r.ev.type = types[i];
		r.inferred = true;
		measure_lengths(&r, &record_max, &snapshot_max);
	}

	for (uint8_t origin = RECORD_ORIGIN_CONNECT; origin <= RECORD_ORIGIN_SEEDED; origin++) {
		r = longest;
		r.origin = origin;
		measure_lengths(&r, &record_max, &snapshot_max);
	}

	CHECK_INT(RECORD_LINE_MAX_LEN, record_max);
	CHECK_INT(SNAPSHOT_LINE_MAX_LEN, snapshot_max);
	CHECK(record_max <= JSON_RECORD_MAX_BYTES);
	CHECK(snapshot_max <= JSON_RECORD_MAX_BYTES);
}

/*
 * Reference encoder for the randomized comparison: the record format written
 * plainly with snprintf() and inet_ntop(), independent of the encoder's code.
 */
struct ref_line {
	char text[2048];
	size_t len;
};

static void ref_printf(struct ref_line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ref_printf(struct ref_line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(l->text) - l->len)
		abort();
	l->len += (size_t)n;
}

/*
 * Decode the UTF-8 sequence at s[0..n) into *ret_cp. Returns its length, or 0
 * if s does not start a well-formed sequence: a bad lead or continuation byte,
 * a truncated sequence, an overlong form, a surrogate or a value above U+10FFFF.
 */
static size_t ref_utf8_decode(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
	static const uint32_t min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80) {
		*ret_cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min_cp[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	*ret_cp = cp;
	return len;
}

static void ref_comm(struct ref_line *l, const char comm[TCPTAP_COMM_LEN])
{
	const unsigned char *s = (const unsigned char *)comm;
	size_t n = strnlen(comm, TCPTAP_COMM_LEN);

	ref_printf(l, "\"");
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t len = ref_utf8_decode(s + i, n - i, &cp);

		if (len == 0) {
			ref_printf(l, "\\ufffd");
			i++;
			continue;
		}
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			ref_printf(l, "\\u%04x", (unsigned int)cp);
		else if (cp == '"' || cp == '\\')
			ref_printf(l, "\\%c", (char)cp);
		else
			ref_printf(l, "%.*s", (int)len, comm + i);
		i += len;
	}
	ref_printf(l, "\"");
}

static void ref_addr(struct ref_line *l, uint8_t family, const uint8_t addr_be[TCPTAP_ADDR_LEN])
{
	char text[INET6_ADDRSTRLEN];

	if (!inet_ntop(family == TCPTAP_FAMILY_INET ? AF_INET : AF_INET6, addr_be, text,
		       sizeof(text)))
		abort();
	ref_printf(l, "\"%s\"", text);
}

static bool ref_connection(struct ref_line *l, const struct tcptap_event *ev)
{
	const char *family = json_family_name(ev->family);

	if (!family)
		return false;

	ref_printf(l, ",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"comm\":", ev->pid, ev->tid);
	ref_comm(l, ev->comm);
	ref_printf(l, ",\"uid\":%" PRIu32 ",\"family\":\"%s\",\"saddr\":", ev->uid, family);
	ref_addr(l, ev->family, ev->saddr_be);
	ref_printf(l, ",\"sport\":%" PRIu16 ",\"daddr\":", ev->sport);
	ref_addr(l, ev->family, ev->daddr_be);
	ref_printf(l, ",\"dport\":%" PRIu16 ",\"netns\":%" PRIu32 ",\"cookie\":%" PRIu64
		   ",\"cgroup\":%" PRIu64 ",\"cpu\":%" PRIu32,
		   ev->dport, ev->netns, (uint64_t)ev->cookie, (uint64_t)ev->cgroup, ev->cpu);
	return true;
}

/* Returns the line's length, or -EINVAL where the encoder must reject the record. */
static int ref_encode_record(const struct record *r, struct ref_line *l)
{
	const char *type = json_type_name(r->ev.type);

	l->len = 0;
	if (!type)
		return -EINVAL;

	ref_printf(l, "{\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64 ",\"type\":\"%s\"", r->seq,
		   (uint64_t)r->ev.ts_ns, type);
	if (r->ev.type == RECORD_LOST) {
		if (r->lost_reason == RECORD_LOST_NESTED)
			ref_printf(l, ",\"reason\":\"nested\"");
		else
			ref_printf(l, ",\"reason\":\"ring_full\",\"cpu\":%" PRIu32, r->ev.cpu);
		ref_printf(l, ",\"count\":%" PRIu64, r->lost_count);
	} else {
		if (!ref_connection(l, &r->ev))
			return -EINVAL;
		if (r->ev.type == TCPTAP_EV_CONNECT_FAILED) {
			const char *name = json_errno_name(r->ev.error);

			if (name)
				ref_printf(l, ",\"error\":\"%s\"", name);
			else
				ref_printf(l, ",\"error\":\"E%" PRId32 "\"", r->ev.error);
		}
		if (r->ev.type == TCPTAP_EV_CLOSE && r->inferred)
			ref_printf(l, ",\"inferred\":true");
	}
	if (r->late)
		ref_printf(l, ",\"late\":true");
	ref_printf(l, "}\n");
	return (int)l->len;
}

static int ref_encode_snapshot(const struct record *r, struct ref_line *l)
{
	const char *origin = json_origin_name(r->origin);

	l->len = 0;
	if (!origin)
		return -EINVAL;

	ref_printf(l, "{\"ts_ns\":%" PRIu64 ",\"type\":\"snapshot\"", (uint64_t)r->ev.ts_ns);
	if (!ref_connection(l, &r->ev))
		return -EINVAL;
	ref_printf(l, ",\"origin\":\"%s\"}\n", origin);
	return (int)l->len;
}

/* Return the next splitmix64 value. A fixed seed makes a failure reproducible. */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *state, uint64_t bound)
{
	return rng_next(state) % bound;
}

/* Return a number of at most max_digits digits, each length equally likely, with
 * the edge values 0, 10^k - 1, 10^k and max_value mixed in. */
static uint64_t random_number(uint64_t *state, unsigned int max_digits, uint64_t max_value)
{
	unsigned int digits = 1 + (unsigned int)rng_below(state, max_digits);
	uint64_t low = 1, v;

	for (unsigned int i = 1; i < digits; i++)
		low *= 10;

	switch (rng_below(state, 8)) {
	case 0:
		v = 0;
		break;
	case 1:
		v = max_value;
		break;
	case 2:
		v = low;
		break;
	case 3:
		v = low - 1;
		break;
	default:
		/* low .. 10 * low - 1, or up to max_value for the longest length */
		if (digits == 20)
			v = low + rng_below(state, max_value - low + 1);
		else
			v = low + rng_below(state, 9 * low);
		break;
	}
	return v > max_value ? max_value : v;
}

/* Fill comm with bytes that exercise every escaping rule: plain ASCII, quotes,
 * controls, well-formed and invalid UTF-8, a NUL at any position or none. */
static void random_comm(uint64_t *state, char comm[TCPTAP_COMM_LEN])
{
	static const char *const pieces[] = {
		"a", "Z", "0", " ", ":", "-", "\"", "\\", "\x01", "\t", "\x1b", "\x7f",
		"\xc2\x80", "\xc2\x9f", "\xc2\xa0", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		"\xef\xbf\xbd", "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf",
		"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xf5", "\xff", "\xe2\x82", "\xf0\x9f\x98",
	};
	size_t i = 0;

	memset(comm, 0, TCPTAP_COMM_LEN);
	if (rng_below(state, 4) == 0) {
		/* Any bytes at all. */
		for (i = 0; i < TCPTAP_COMM_LEN; i++)
			comm[i] = (char)rng_next(state);
		return;
	}
	while (i < TCPTAP_COMM_LEN) {
		const char *piece = pieces[rng_below(state, sizeof(pieces) / sizeof(pieces[0]))];
		size_t len;

		/* Plain letters make up a third of the pieces. */
		if (rng_below(state, 3) == 0)
			piece = "x";
		len = strlen(piece);
		if (len > TCPTAP_COMM_LEN - i)
			len = TCPTAP_COMM_LEN - i;
		memcpy(comm + i, piece, len);
		i += len;
		if (rng_below(state, 12) == 0)
			break;
	}
	/* Bytes after the NUL are not part of comm and must not show. */
	if (i < TCPTAP_COMM_LEN)
		for (size_t j = i + 1; j < TCPTAP_COMM_LEN; j++)
			comm[j] = (char)rng_next(state);
}

/* Fill addr_be with random bytes. For IPv6, add zero runs of every length and
 * position, and the IPv4-mapped and IPv4-compatible forms written in dotted form. */
static void random_addr(uint64_t *state, uint8_t family, uint8_t addr_be[TCPTAP_ADDR_LEN])
{
	unsigned int shape = (unsigned int)rng_below(state, 4);

	for (int i = 0; i < TCPTAP_ADDR_LEN; i++)
		addr_be[i] = (uint8_t)rng_next(state);
	if (family == TCPTAP_FAMILY_INET || shape == 0)
		return;

	for (int w = 0; w < 8; w++) {
		switch (rng_below(state, 4)) {
		case 0:
			addr_be[2 * w] = 0;
			addr_be[2 * w + 1] = 0;
			break;
		case 1:
			addr_be[2 * w] = 0;
			addr_be[2 * w + 1] &= (uint8_t)(0xff >> rng_below(state, 8));
			break;
		case 2:
			addr_be[2 * w] &= 0x0f;
			break;
		}
	}
	if (shape == 2) {
		memset(addr_be, 0, 10);
		addr_be[10] = addr_be[11] = rng_below(state, 2) ? 0xff : 0;
	}
}

static void random_record(uint64_t *state, struct record *r)
{
	static const uint8_t types[] = {
		TCPTAP_EV_CONNECT, TCPTAP_EV_ACCEPT, TCPTAP_EV_CLOSE, TCPTAP_EV_CONNECT_FAILED,
		RECORD_LOST,
	};
	uint64_t kind = rng_below(state, 100);

	memset(r, 0, sizeof(*r));
	r->seq = random_number(state, 20, UINT64_MAX);
	r->lost_count = random_number(state, 20, UINT64_MAX);
	r->late = rng_below(state, 2);
	r->lost_reason = (uint8_t)rng_below(state, 2);
	r->inferred = rng_below(state, 2);
	r->origin = (uint8_t)rng_below(state, 4);

	r->ev.ts_ns = random_number(state, 20, UINT64_MAX);
	r->ev.cookie = random_number(state, 20, UINT64_MAX);
	r->ev.cgroup = random_number(state, 20, UINT64_MAX);
	r->ev.netns = (uint32_t)random_number(state, 10, UINT32_MAX);
	r->ev.pid = (uint32_t)random_number(state, 10, UINT32_MAX);
	r->ev.tid = (uint32_t)random_number(state, 10, UINT32_MAX);
	r->ev.uid = (uint32_t)random_number(state, 10, UINT32_MAX);
	r->ev.cpu = (uint32_t)random_number(state, 10, UINT32_MAX);
	r->ev.sport = (uint16_t)random_number(state, 5, UINT16_MAX);
	r->ev.dport = (uint16_t)random_number(state, 5, UINT16_MAX);
	if (rng_below(state, 2))
		r->ev.error = (int32_t)rng_below(state, 200) - 20;
	else
		r->ev.error = (int32_t)(uint32_t)random_number(state, 10, UINT32_MAX);

	/* A few records have no publishable type or family, so both encoders must reject them. */
	if (kind == 0)
		r->ev.type = (uint8_t)rng_next(state);
	else
		r->ev.type = types[rng_below(state, sizeof(types) / sizeof(types[0]))];
	if (kind == 1)
		r->ev.family = (uint8_t)rng_next(state);
	else
		r->ev.family = rng_below(state, 2) ? TCPTAP_FAMILY_INET6 : TCPTAP_FAMILY_INET;

	random_comm(state, r->ev.comm);
	random_addr(state, r->ev.family, r->ev.saddr_be);
	random_addr(state, r->ev.family, r->ev.daddr_be);
}

typedef int (*encode_fn)(const struct record *r, char *buf, size_t size);
typedef int (*ref_encode_fn)(const struct record *r, struct ref_line *l);

/*
 * Compare one encoder's output for r with the reference, through the buffer
 * sizes that take different paths: JSON_RECORD_MAX_BYTES and more, exactly the
 * line's length, and one byte less. Returns false on the first difference.
 */
static bool compare_encoding(const struct record *r, encode_fn encode, ref_encode_fn ref_encode,
			     const char *name)
{
	struct ref_line expected;
	char buf[JSON_RECORD_MAX_BYTES + 64];
	int expected_len = ref_encode(r, &expected);
	const size_t sizes[] = { JSON_RECORD_MAX_BYTES, JSON_RECORD_MAX_BYTES + 64,
				 expected_len > 0 ? (size_t)expected_len : 1,
				 expected_len > 0 ? (size_t)expected_len - 1 : 0 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int want = expected_len;
		int len;

		if (expected_len > 0 && sizes[i] < (size_t)expected_len)
			want = -ENOSPC;

		memset(buf, 0x5a, sizeof(buf));
		len = encode(r, buf, sizes[i]);
		if (len != want) {
			fprintf(stderr, "%s, buffer of %zu bytes: returned %d, expected %d\n"
				"  expected line: %.*s", name, sizes[i], len, want,
				(int)expected.len, expected.text);
			return false;
		}
		if (len > 0 && memcmp(buf, expected.text, (size_t)len) != 0) {
			fprintf(stderr, "%s, buffer of %zu bytes: line differs\n"
				"  expected: %.*s  actual:   %.*s", name, sizes[i],
				(int)expected.len, expected.text, len, buf);
			return false;
		}
		for (size_t j = sizes[i]; j < sizeof(buf); j++) {
			if (buf[j] != 0x5a) {
				fprintf(stderr, "%s, buffer of %zu bytes: wrote byte %zu, past the end\n",
					name, sizes[i], j);
				return false;
			}
		}
	}
	return true;
}

/* Random records of every type, family, number length and comm byte pattern
 * encode exactly as the reference does, through every buffer size path. */
static void test_random_records(void)
{
	const unsigned int count = 50000;
	uint64_t state = 20240607;
	unsigned int mismatches = 0;

	for (unsigned int i = 0; i < count && mismatches < 5; i++) {
		struct record r;

		random_record(&state, &r);
		if (!compare_encoding(&r, json_encode_record, ref_encode_record, "record"))
			mismatches++;
		if (!compare_encoding(&r, json_encode_snapshot, ref_encode_snapshot, "snapshot"))
			mismatches++;
	}
	CHECK_INT(0, mismatches);
}

static void test_errno_names(void)
{
	static const struct {
		int error;
		const char *name;
	} cases[] = {
		{ ECONNREFUSED, "ECONNREFUSED" }, { ETIMEDOUT, "ETIMEDOUT" },
		{ ECONNRESET, "ECONNRESET" }, { EHOSTUNREACH, "EHOSTUNREACH" },
		{ ENETUNREACH, "ENETUNREACH" }, { ECONNABORTED, "ECONNABORTED" },
		{ EACCES, "EACCES" }, { EPERM, "EPERM" }, { EADDRNOTAVAIL, "EADDRNOTAVAIL" },
		{ EPIPE, "EPIPE" }, { EPROTO, "EPROTO" }, { EHOSTDOWN, "EHOSTDOWN" },
		{ ENETDOWN, "ENETDOWN" }, { EINTR, "EINTR" }, { EADDRINUSE, "EADDRINUSE" },
		{ ENOBUFS, "ENOBUFS" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_STR(cases[i].name, json_errno_name(cases[i].error));
	CHECK(json_errno_name(0) == NULL);
	CHECK(json_errno_name(100000) == NULL);

	CHECK_STR("connect", json_type_name(TCPTAP_EV_CONNECT));
	CHECK_STR("lost", json_type_name(RECORD_LOST));
	CHECK(json_type_name(TCPTAP_EV_SYNC) == NULL);
	CHECK_STR("inet6", json_family_name(TCPTAP_FAMILY_INET6));
	CHECK(json_family_name(0) == NULL);
	CHECK_STR("seeded", json_origin_name(RECORD_ORIGIN_SEEDED));
	CHECK(json_origin_name(RECORD_ORIGIN_NONE) == NULL);
}

static struct json_object *parse_message(char *line)
{
	struct json_object *obj;

	CHECK(line != NULL);
	if (!line)
		return NULL;
	obj = parse_line(line, (int)strlen(line));
	free(line);
	return obj;
}

static void test_hello(void)
{
	static const char *const plain_keys[] = {
		"type", "protocol", "version", "backend", "cpus", "clock", "boot_id", "run_id",
		"snapshot_seq", NULL,
	};
	static const char *const rejected_keys[] = {
		"type", "protocol", "version", "backend", "cpus", "clock", "boot_id", "run_id",
		"snapshot_seq", "resumed", "resume_error", NULL,
	};
	struct hello_info h = {
		.protocol = 1, .version = "0.1.0", .backend = "tracepoint", .ncpus = 2,
		.boot_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", .run_id = "r/un\"1",
		.snapshot_seq = 41, .resumed = -1,
	};
	struct json_object *obj, *v;

	obj = parse_message(json_encode_hello(&h));
	if (obj) {
		check_keys(obj, plain_keys);
		CHECK_STR("hello", get_str(obj, "type"));
		CHECK_U64(1, get_u64(obj, "protocol"));
		CHECK_STR("0.1.0", get_str(obj, "version"));
		CHECK_STR("tracepoint", get_str(obj, "backend"));
		CHECK_U64(2, get_u64(obj, "cpus"));
		CHECK_STR("CLOCK_MONOTONIC", get_str(obj, "clock"));
		CHECK_STR(h.boot_id, get_str(obj, "boot_id"));
		CHECK_STR("r/un\"1", get_str(obj, "run_id"));
		CHECK_U64(41, get_u64(obj, "snapshot_seq"));
		json_object_put(obj);
	}

	h.resumed = 0;
	h.resume_error = "seq 3 is no longer in the replay history";
	obj = parse_message(json_encode_hello(&h));
	if (obj) {
		check_keys(obj, rejected_keys);
		CHECK(json_object_object_get_ex(obj, "resumed", &v) &&
		      json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v));
		CHECK_STR(h.resume_error, get_str(obj, "resume_error"));
		json_object_put(obj);
	}

	h.resumed = 1;
	obj = parse_message(json_encode_hello(&h));
	if (obj) {
		CHECK(json_object_object_get_ex(obj, "resumed", &v) &&
		      json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v));
		CHECK(!json_object_object_get_ex(obj, "resume_error", NULL));
		json_object_put(obj);
	}
}

static void test_other_messages(void)
{
	static const char *const end_keys[] = { "type", "seq", "count", NULL };
	static const char *const error_keys[] = { "type", "code", "message", NULL };
	static const char *const overflow_keys[] = {
		"type", "queued_bytes", "limit_bytes", "last_seq_sent", "newest_seq", NULL,
	};
	struct json_object *obj;

	obj = parse_message(json_encode_snapshot_end(UINT64_MAX, 3));
	if (obj) {
		check_keys(obj, end_keys);
		CHECK_STR("snapshot_end", get_str(obj, "type"));
		CHECK_U64(UINT64_MAX, get_u64(obj, "seq"));
		CHECK_U64(3, get_u64(obj, "count"));
		json_object_put(obj);
	}

	/* Messages quote client input: quotes, newlines and controls must stay escaped. */
	obj = parse_message(json_encode_error("invalid_request", "unknown field \"a\nb\x01\""));
	if (obj) {
		check_keys(obj, error_keys);
		CHECK_STR("error", get_str(obj, "type"));
		CHECK_STR("invalid_request", get_str(obj, "code"));
		CHECK_STR("unknown field \"a\nb\x01\"", get_str(obj, "message"));
		json_object_put(obj);
	}

	obj = parse_message(json_encode_overflow(1 << 20, 1 << 20, 17, 4000));
	if (obj) {
		check_keys(obj, overflow_keys);
		CHECK_STR("overflow", get_str(obj, "type"));
		CHECK_U64(1 << 20, get_u64(obj, "queued_bytes"));
		CHECK_U64(1 << 20, get_u64(obj, "limit_bytes"));
		CHECK_U64(17, get_u64(obj, "last_seq_sent"));
		CHECK_U64(4000, get_u64(obj, "newest_seq"));
		json_object_put(obj);
	}
}

/* Append a malloc'd message line to out, taking ownership of it. */
static void append_message(char *out, size_t *n, size_t size, char *line)
{
	size_t len = line ? strlen(line) : 0;

	CHECK(line != NULL);
	if (line && *n + len <= size) {
		memcpy(out + *n, line, len);
		*n += len;
	}
	free(line);
}

/* Account for a line an in-place encoder wrote at out + *n. */
static void append_encoded(char *out, size_t *n, size_t size, int len)
{
	CHECK(len > 0);
	if (len > 0 && *n + (size_t)len <= size)
		*n += (size_t)len;
}

/*
 * The golden stream: what a subscriber receives from a hand-built daemon state.
 * Each element is either a record (encoded as a record or as a snapshot) or a
 * message built by one of the json-c encoders.
 */
static size_t golden_stream(char *out, size_t size)
{
	struct hello_info h = {
		.protocol = 1, .version = "0.1.0", .backend = "tracepoint", .ncpus = 2,
		.boot_id = "8a0c3b2e-5f41-4d6a-9c1e-0b7d2f3a4e5c", .run_id = "5d1f0c9a7b3e4f21",
		.snapshot_seq = 40, .resumed = -1,
	};
	struct record recs[9];
	size_t n = 0;

	recs[0] = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 40000,
				  "127.0.0.1", 80);
	recs[0].origin = RECORD_ORIGIN_CONNECT;
	recs[1] = make_connection(TCPTAP_EV_ACCEPT, TCPTAP_FAMILY_INET6, "::1", 22, "::1", 51234);
	recs[1].origin = RECORD_ORIGIN_SEEDED;
	memcpy(recs[1].ev.comm, "sshd", 5);

	recs[2] = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 40002,
				  "127.0.0.1", 8080);
	recs[2].seq = 41;
	recs[3] = make_connection(TCPTAP_EV_ACCEPT, TCPTAP_FAMILY_INET, "127.0.0.1", 8080,
				  "127.0.0.1", 40002);
	recs[3].seq = 42;
	memcpy(recs[3].ev.comm, "nginx: worker", 14);
	recs[4] = make_connection(TCPTAP_EV_CONNECT_FAILED, TCPTAP_FAMILY_INET6, "::1", 40004,
				  "::1", 9);
	recs[4].seq = 43;
	recs[4].ev.error = ECONNREFUSED;
	recs[5] = make_connection(TCPTAP_EV_CLOSE, TCPTAP_FAMILY_INET, "127.0.0.1", 40002,
				  "127.0.0.1", 8080);
	recs[5].seq = 44;
	recs[6] = (struct record) { .seq = 45, .lost_count = 12 };
	recs[6].ev.type = RECORD_LOST;
	recs[6].ev.ts_ns = 123456999;
	recs[7] = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 40006,
				  "127.0.0.1", 443);
	recs[7].seq = 46;
	recs[7].late = true;
	recs[7].ev.ts_ns = 123450000;
	/* A hostile comm: quote, backslash, escape sequence, invalid UTF-8, no NUL. */
	recs[8] = make_connection(TCPTAP_EV_CONNECT, TCPTAP_FAMILY_INET, "127.0.0.1", 40008,
				  "127.0.0.1", 80);
	recs[8].seq = 47;
	memcpy(recs[8].ev.comm, "\"x\\\x1b[2J\xff\xc3\xa9zzzzzzz", TCPTAP_COMM_LEN);

	/* Distinct sockets get distinct cookies; the close reports the connect's socket. */
	for (int i = 0; i < 9; i++)
		recs[i].ev.cookie = 4097 + (uint64_t)i;
	recs[5].ev.cookie = recs[2].ev.cookie;

	append_message(out, &n, size, json_encode_hello(&h));
	for (int i = 0; i < 2; i++)
		append_encoded(out, &n, size, json_encode_snapshot(&recs[i], out + n, size - n));
	append_message(out, &n, size, json_encode_snapshot_end(40, 2));
	for (int i = 2; i < 9; i++)
		append_encoded(out, &n, size, json_encode_record(&recs[i], out + n, size - n));
	append_message(out, &n, size, json_encode_overflow(65536, 65536, 47, 1047));
	append_message(out, &n, size, json_encode_error("invalid_request",
							   "unknown field \"fitler\""));
	return n;
}

static void test_golden(const char *path)
{
	char actual[16384], expected[16384];
	size_t actual_len = golden_stream(actual, sizeof(actual));
	size_t expected_len = 0;
	FILE *f = fopen(path, "re");

	CHECK(f != NULL);
	if (!f) {
		fprintf(stderr, "cannot open golden file %s: %m\n", path);
		return;
	}
	expected_len = fread(expected, 1, sizeof(expected), f);
	fclose(f);

	CHECK_U64(expected_len, actual_len);
	if (expected_len != actual_len || memcmp(expected, actual, actual_len) != 0) {
		failed++;
		fprintf(stderr, "golden mismatch with %s; actual output:\n%.*s", path,
			(int)actual_len, actual);
	} else {
		passed++;
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--print") == 0) {
		char out[16384];
		size_t n = golden_stream(out, sizeof(out));

		fwrite(out, 1, n, stdout);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s GOLDEN.jsonl | --print\n", argv[0]);
		return 2;
	}

	test_record_connect_inet();
	test_record_types();
	test_record_connect_failed();
	test_record_late();
	test_record_lost();
	test_record_lost_nested();
	test_record_invalid();
	test_snapshot();
	test_comm_escaping();
	test_buffer_too_small();
	test_max_length();
	test_random_records();
	test_errno_names();
	test_hello();
	test_other_messages();
	test_golden(argv[1]);

	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
