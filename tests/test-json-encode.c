// SPDX-License-Identifier: LGPL-2.1-or-later
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
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

/* The longest possible lines fit JSON_RECORD_MAX_BYTES, the size callers allocate. */
static void test_max_length(void)
{
	struct record r = { .seq = UINT64_MAX, .late = true, .origin = RECORD_ORIGIN_SEEDED };
	char buf[4096];
	int len;

	r.ev = (struct tcptap_event) {
		.ts_ns = UINT64_MAX, .cookie = UINT64_MAX, .cgroup = UINT64_MAX,
		.netns = UINT32_MAX, .pid = UINT32_MAX, .tid = UINT32_MAX, .uid = UINT32_MAX,
		.cpu = UINT32_MAX, .error = INT32_MIN, .sport = UINT16_MAX, .dport = UINT16_MAX,
		.type = TCPTAP_EV_CONNECT_FAILED, .family = TCPTAP_FAMILY_INET6,
	};
	/* ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 is the longest inet_ntop() text. */
	memset(r.ev.saddr_be, 0xff, TCPTAP_ADDR_LEN);
	memset(r.ev.daddr_be, 0xff, TCPTAP_ADDR_LEN);
	memset(r.ev.saddr_be, 0, 10);
	memset(r.ev.daddr_be, 0, 10);
	memset(r.ev.comm, 0xff, TCPTAP_COMM_LEN);

	len = json_encode_record(&r, buf, sizeof(buf));
	CHECK(len > 0);
	CHECK(len <= JSON_RECORD_MAX_BYTES);
	fprintf(stderr, "longest record line: %d bytes (limit %d)\n", len, JSON_RECORD_MAX_BYTES);

	len = json_encode_snapshot(&r, buf, sizeof(buf));
	CHECK(len > 0);
	CHECK(len <= JSON_RECORD_MAX_BYTES);

	/* C1 controls take 2 input bytes for 6 output bytes, fewer than 0xff's 1 for 6. */
	memset(r.ev.comm, 0x01, TCPTAP_COMM_LEN);
	len = json_encode_record(&r, buf, sizeof(buf));
	CHECK(len > 0);
	CHECK(len <= JSON_RECORD_MAX_BYTES);
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
	test_errno_names();
	test_hello();
	test_other_messages();
	test_golden(argv[1]);

	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
