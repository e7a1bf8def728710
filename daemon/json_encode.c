// SPDX-License-Identifier: LGPL-2.1-or-later
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_encode.h"

/*
 * Records and snapshot entries are encoded by hand into the caller's buffer:
 * every published record is encoded once per daemon, however many clients
 * read it, so this path allocates nothing. The rarer messages (hello,
 * snapshot_end, error, overflow) go through json-c.
 */

/* Output cursor over the caller's buffer; overflow sticks once set. */
struct json_writer {
	char *buf;
	size_t size;
	size_t len;
	bool overflow;
};

static void writer_put(struct json_writer *w, const char *s, size_t n)
{
	if (w->overflow || n > w->size - w->len) {
		w->overflow = true;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

static void writer_put_str(struct json_writer *w, const char *s)
{
	writer_put(w, s, strlen(s));
}

/* Two digits per division, which halves the chain of dependent divisions:
 * a record has a dozen numbers of up to 20 digits. */
static void writer_put_u64(struct json_writer *w, uint64_t v)
{
	static const char pairs[] =
		"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
		"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
		"8081828384858687888990919293949596979899";
	char digits[20];	/* UINT64_MAX has 20 decimal digits */
	size_t i = sizeof(digits);

	while (v >= 100) {
		const char *pair = pairs + 2 * (v % 100);

		v /= 100;
		digits[--i] = pair[1];
		digits[--i] = pair[0];
	}
	if (v >= 10) {
		digits[--i] = pairs[2 * v + 1];
		digits[--i] = pairs[2 * v];
	} else {
		digits[--i] = (char)('0' + v);
	}

	writer_put(w, digits + i, sizeof(digits) - i);
}

static void writer_put_hex_escape(struct json_writer *w, unsigned int code)
{
	static const char hex[] = "0123456789abcdef";
	char esc[6] = { '\\', 'u', '0', '0', hex[(code >> 4) & 0xf], hex[code & 0xf] };

	writer_put(w, esc, sizeof(esc));
}

/*
 * Length of the well-formed UTF-8 sequence at s (at most n bytes available),
 * or 0 if the byte at s does not start one. Follows the well-formed byte
 * sequences table of the Unicode standard (chapter 3): no overlong forms, no
 * surrogates, nothing above U+10FFFF.
 */
static size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;

	if (len > n)
		return 0;

	/* The second byte's range narrows for a few lead bytes. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;

	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;

	return len;
}

/*
 * Write comm as a JSON string. comm is whatever the process set with
 * prctl(PR_SET_NAME) or exec: it ends at the first NUL or after
 * TCPTAP_COMM_LEN bytes. '"' and '\\' are escaped; C0 controls, DEL and the
 * C1 controls U+0080..U+009F become \u00XX so no terminal control reaches a
 * reader; every byte that is not part of a well-formed UTF-8 sequence becomes
 * one \ufffd. The output therefore depends only on the input bytes.
 */
static void writer_put_comm(struct json_writer *w, const char comm[TCPTAP_COMM_LEN])
{
	const unsigned char *s = (const unsigned char *)comm;
	size_t n = strnlen(comm, TCPTAP_COMM_LEN);
	size_t i = 0;

	writer_put(w, "\"", 1);
	while (i < n) {
		size_t seq = utf8_sequence_len(s + i, n - i);

		if (seq == 0) {
			writer_put(w, "\\ufffd", 6);
			i++;
		} else if (seq == 2 && s[i] == 0xc2 && s[i + 1] <= 0x9f) {
			writer_put_hex_escape(w, s[i + 1]);
			i += 2;
		} else if (seq > 1) {
			writer_put(w, comm + i, seq);
			i += seq;
		} else if (s[i] == '"' || s[i] == '\\') {
			char esc[2] = { '\\', (char)s[i] };

			writer_put(w, esc, 2);
			i++;
		} else if (s[i] < 0x20 || s[i] == 0x7f) {
			writer_put_hex_escape(w, s[i]);
			i++;
		} else {
			writer_put(w, comm + i, 1);
			i++;
		}
	}
	writer_put(w, "\"", 1);
}

static int writer_put_addr(struct json_writer *w, uint8_t family,
			   const uint8_t addr_be[TCPTAP_ADDR_LEN])
{
	char text[INET6_ADDRSTRLEN];

	/* glibc's inet_ntop() formats IPv4 with sprintf(), which took more
	 * instructions than the rest of the record together. This writes the
	 * same dotted quad without leading zeros. */
	if (family == TCPTAP_FAMILY_INET) {
		writer_put(w, "\"", 1);
		for (int i = 0; i < 4; i++) {
			if (i > 0)
				writer_put(w, ".", 1);
			writer_put_u64(w, addr_be[i]);
		}
		writer_put(w, "\"", 1);
		return 0;
	}

	if (!inet_ntop(AF_INET6, addr_be, text, sizeof(text)))
		return -errno;

	writer_put(w, "\"", 1);
	writer_put_str(w, text);
	writer_put(w, "\"", 1);
	return 0;
}

const char *json_type_name(unsigned int type)
{
	switch (type) {
	case TCPTAP_EV_CONNECT:
		return "connect";
	case TCPTAP_EV_ACCEPT:
		return "accept";
	case TCPTAP_EV_CLOSE:
		return "close";
	case TCPTAP_EV_CONNECT_FAILED:
		return "connect_failed";
	case RECORD_LOST:
		return "lost";
	default:
		return NULL;
	}
}

const char *json_family_name(unsigned int family)
{
	switch (family) {
	case TCPTAP_FAMILY_INET:
		return "inet";
	case TCPTAP_FAMILY_INET6:
		return "inet6";
	default:
		return NULL;
	}
}

const char *json_origin_name(unsigned int origin)
{
	switch (origin) {
	case RECORD_ORIGIN_CONNECT:
		return "connect";
	case RECORD_ORIGIN_ACCEPT:
		return "accept";
	case RECORD_ORIGIN_SEEDED:
		return "seeded";
	default:
		return NULL;
	}
}

/*
 * A fixed list rather than strerrorname_np(), so the wire names do not change
 * with the C library. Covers what tcp_set_state()/sk_err can carry for an
 * active open plus the errors connect() itself returns.
 */
const char *json_errno_name(int error)
{
	switch (error) {
	case EPERM:		return "EPERM";
	case EINTR:		return "EINTR";
	case EAGAIN:		return "EAGAIN";
	case ENOMEM:		return "ENOMEM";
	case EACCES:		return "EACCES";
	case EINVAL:		return "EINVAL";
	case EPIPE:		return "EPIPE";
	case ETIME:		return "ETIME";
	case ENONET:		return "ENONET";
	case EPROTO:		return "EPROTO";
	case EMSGSIZE:		return "EMSGSIZE";
	case ENOPROTOOPT:	return "ENOPROTOOPT";
	case EOPNOTSUPP:	return "EOPNOTSUPP";
	case EAFNOSUPPORT:	return "EAFNOSUPPORT";
	case EADDRINUSE:	return "EADDRINUSE";
	case EADDRNOTAVAIL:	return "EADDRNOTAVAIL";
	case ENETDOWN:		return "ENETDOWN";
	case ENETUNREACH:	return "ENETUNREACH";
	case ENETRESET:		return "ENETRESET";
	case ECONNABORTED:	return "ECONNABORTED";
	case ECONNRESET:	return "ECONNRESET";
	case ENOBUFS:		return "ENOBUFS";
	case EISCONN:		return "EISCONN";
	case ENOTCONN:		return "ENOTCONN";
	case ESHUTDOWN:		return "ESHUTDOWN";
	case ETIMEDOUT:		return "ETIMEDOUT";
	case ECONNREFUSED:	return "ECONNREFUSED";
	case EHOSTDOWN:		return "EHOSTDOWN";
	case EHOSTUNREACH:	return "EHOSTUNREACH";
	case EALREADY:		return "EALREADY";
	case EINPROGRESS:	return "EINPROGRESS";
	case ECANCELED:		return "ECANCELED";
	default:		return NULL;
	}
}

/* An errno without a name is written as "E" and its decimal value, e.g. "E135". */
static void writer_put_error(struct json_writer *w, int32_t error)
{
	const char *name = json_errno_name(error);

	writer_put(w, "\"", 1);
	if (name) {
		writer_put_str(w, name);
	} else {
		writer_put(w, "E", 1);
		if (error < 0)
			writer_put(w, "-", 1);
		writer_put_u64(w, error < 0 ? (uint64_t)-(int64_t)error : (uint64_t)error);
	}
	writer_put(w, "\"", 1);
}

/* The fields an event record and a snapshot record share, from "pid" to "cpu". */
static int writer_put_connection(struct json_writer *w, const struct tcptap_event *ev)
{
	const char *family = json_family_name(ev->family);
	int r;

	if (!family)
		return -EINVAL;

	writer_put_str(w, ",\"pid\":");
	writer_put_u64(w, ev->pid);
	writer_put_str(w, ",\"tid\":");
	writer_put_u64(w, ev->tid);
	writer_put_str(w, ",\"comm\":");
	writer_put_comm(w, ev->comm);
	writer_put_str(w, ",\"uid\":");
	writer_put_u64(w, ev->uid);
	writer_put_str(w, ",\"family\":\"");
	writer_put_str(w, family);
	writer_put_str(w, "\",\"saddr\":");
	r = writer_put_addr(w, ev->family, ev->saddr_be);
	if (r < 0)
		return r;
	writer_put_str(w, ",\"sport\":");
	writer_put_u64(w, ev->sport);
	writer_put_str(w, ",\"daddr\":");
	r = writer_put_addr(w, ev->family, ev->daddr_be);
	if (r < 0)
		return r;
	writer_put_str(w, ",\"dport\":");
	writer_put_u64(w, ev->dport);
	writer_put_str(w, ",\"netns\":");
	writer_put_u64(w, ev->netns);
	writer_put_str(w, ",\"cookie\":");
	writer_put_u64(w, ev->cookie);
	writer_put_str(w, ",\"cgroup\":");
	writer_put_u64(w, ev->cgroup);
	writer_put_str(w, ",\"cpu\":");
	writer_put_u64(w, ev->cpu);
	return 0;
}

static int writer_finish(struct json_writer *w)
{
	writer_put(w, "}\n", 2);
	if (w->overflow)
		return -ENOSPC;
	return (int)w->len;
}

int json_encode_record(const struct record *r, char *buf, size_t size)
{
	struct json_writer w = { .buf = buf, .size = size };
	const char *type = json_type_name(r->ev.type);
	int ret;

	if (!type)
		return -EINVAL;

	writer_put_str(&w, "{\"seq\":");
	writer_put_u64(&w, r->seq);
	writer_put_str(&w, ",\"ts_ns\":");
	writer_put_u64(&w, r->ev.ts_ns);
	writer_put_str(&w, ",\"type\":\"");
	writer_put_str(&w, type);
	writer_put(&w, "\"", 1);

	if (r->ev.type == RECORD_LOST) {
		if (r->lost_reason == RECORD_LOST_NESTED) {
			writer_put_str(&w, ",\"reason\":\"nested\"");
		} else {
			writer_put_str(&w, ",\"reason\":\"ring_full\",\"cpu\":");
			writer_put_u64(&w, r->ev.cpu);
		}
		writer_put_str(&w, ",\"count\":");
		writer_put_u64(&w, r->lost_count);
	} else {
		ret = writer_put_connection(&w, &r->ev);
		if (ret < 0)
			return ret;
		if (r->ev.type == TCPTAP_EV_CONNECT_FAILED) {
			writer_put_str(&w, ",\"error\":");
			writer_put_error(&w, r->ev.error);
		}
		if (r->ev.type == TCPTAP_EV_CLOSE && r->inferred)
			writer_put_str(&w, ",\"inferred\":true");
	}

	if (r->late)
		writer_put_str(&w, ",\"late\":true");

	return writer_finish(&w);
}

int json_encode_snapshot(const struct record *r, char *buf, size_t size)
{
	struct json_writer w = { .buf = buf, .size = size };
	const char *origin = json_origin_name(r->origin);
	int ret;

	if (!origin)
		return -EINVAL;

	writer_put_str(&w, "{\"ts_ns\":");
	writer_put_u64(&w, r->ev.ts_ns);
	writer_put_str(&w, ",\"type\":\"snapshot\"");
	ret = writer_put_connection(&w, &r->ev);
	if (ret < 0)
		return ret;
	writer_put_str(&w, ",\"origin\":\"");
	writer_put_str(&w, origin);
	writer_put(&w, "\"", 1);

	return writer_finish(&w);
}

/* Serialize obj as one line ending in '\n'. Takes ownership of obj. */
static char *json_object_to_line(struct json_object *obj)
{
	const char *text;
	size_t len;
	char *line = NULL;

	if (!obj)
		return NULL;

	text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		goto out;

	len = strlen(text);
	line = malloc(len + 2);
	if (!line)
		goto out;
	memcpy(line, text, len);
	line[len] = '\n';
	line[len + 1] = '\0';
out:
	json_object_put(obj);
	return line;
}

/*
 * json-c's add functions return non-zero only on allocation failure; a NULL
 * value (failed json_object_new_*) is also treated as one.
 */
static bool object_add(struct json_object *obj, const char *key, struct json_object *value)
{
	if (!value)
		return false;
	if (json_object_object_add(obj, key, value) < 0) {
		json_object_put(value);
		return false;
	}
	return true;
}

static struct json_object *object_new_typed(const char *type)
{
	struct json_object *obj = json_object_new_object();

	if (obj && !object_add(obj, "type", json_object_new_string(type))) {
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

char *json_encode_hello(const struct hello_info *h)
{
	struct json_object *obj;
	bool ok;

	assert(h->version && h->backend && h->boot_id && h->run_id);

	obj = object_new_typed("hello");
	if (!obj)
		return NULL;

	ok = object_add(obj, "protocol", json_object_new_uint64(h->protocol)) &&
	     object_add(obj, "version", json_object_new_string(h->version)) &&
	     object_add(obj, "backend", json_object_new_string(h->backend)) &&
	     object_add(obj, "cpus", json_object_new_uint64(h->ncpus)) &&
	     object_add(obj, "clock", json_object_new_string("CLOCK_MONOTONIC")) &&
	     object_add(obj, "boot_id", json_object_new_string(h->boot_id)) &&
	     object_add(obj, "run_id", json_object_new_string(h->run_id)) &&
	     object_add(obj, "snapshot_seq", json_object_new_uint64(h->snapshot_seq));
	if (ok && h->resumed >= 0)
		ok = object_add(obj, "resumed", json_object_new_boolean(h->resumed > 0));
	if (ok && h->resumed == 0 && h->resume_error)
		ok = object_add(obj, "resume_error", json_object_new_string(h->resume_error));

	if (!ok) {
		json_object_put(obj);
		return NULL;
	}
	return json_object_to_line(obj);
}

char *json_encode_snapshot_end(uint64_t seq, uint64_t count)
{
	struct json_object *obj = object_new_typed("snapshot_end");

	if (!obj)
		return NULL;

	if (!object_add(obj, "seq", json_object_new_uint64(seq)) ||
	    !object_add(obj, "count", json_object_new_uint64(count))) {
		json_object_put(obj);
		return NULL;
	}
	return json_object_to_line(obj);
}

char *json_encode_error(const char *code, const char *message)
{
	struct json_object *obj = object_new_typed("error");

	assert(code && message);

	if (!obj)
		return NULL;

	if (!object_add(obj, "code", json_object_new_string(code)) ||
	    !object_add(obj, "message", json_object_new_string(message))) {
		json_object_put(obj);
		return NULL;
	}
	return json_object_to_line(obj);
}

char *json_encode_overflow(uint64_t queued_bytes, uint64_t limit_bytes, uint64_t last_seq_sent,
			   uint64_t newest_seq)
{
	struct json_object *obj = object_new_typed("overflow");

	if (!obj)
		return NULL;

	if (!object_add(obj, "queued_bytes", json_object_new_uint64(queued_bytes)) ||
	    !object_add(obj, "limit_bytes", json_object_new_uint64(limit_bytes)) ||
	    !object_add(obj, "last_seq_sent", json_object_new_uint64(last_seq_sent)) ||
	    !object_add(obj, "newest_seq", json_object_new_uint64(newest_seq))) {
		json_object_put(obj);
		return NULL;
	}
	return json_object_to_line(obj);
}
