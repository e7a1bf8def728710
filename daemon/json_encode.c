// SPDX-License-Identifier: LGPL-2.1-or-later
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_encode.h"

/*
 * Records and snapshot entries are encoded by hand into the caller's buffer:
 * every published record is encoded once per daemon, however many clients
 * read it, so this path allocates nothing. The rarer messages (hello,
 * snapshot_end, error, overflow) go through json-c.
 *
 * The record writers below advance a plain cursor and check no bounds. They
 * rely on the maximum line length, RECORD_LINE_MAX_LEN, and on no write
 * reaching more than WRITE_SLACK_BYTES past the end of the text written so
 * far. The public functions give them a buffer of JSON_RECORD_MAX_BYTES,
 * which covers both, and copy the line out when the caller's buffer is smaller.
 */

/* Maximum text lengths of the variable fields. */
#define U16_TEXT_MAX 5		/* 65535 */
#define U32_TEXT_MAX 10		/* 4294967295 */
#define U64_TEXT_MAX 20		/* 18446744073709551615 */
#define COMM_TEXT_MAX (2 + 6 * TCPTAP_COMM_LEN)	/* quotes, and a 6-byte escape per byte */
#define ADDR_TEXT_MAX (2 + 39)	/* quotes, and eight groups of 4 hex digits */
#define ERROR_TEXT_MAX (2 + 13)	/* quotes, and EADDRNOTAVAIL, the longest json_errno_name() */
#define WIRE_NAME_MAX 15	/* a padded name's text; "connect_failed" has 14 bytes */

#define LITERAL_LEN(s) (sizeof("" s "") - 1)

/* The fields of writer_put_connection(). */
#define CONNECTION_TEXT_MAX								\
	(LITERAL_LEN(",\"pid\":") + U32_TEXT_MAX + LITERAL_LEN(",\"tid\":") + U32_TEXT_MAX +	\
	 LITERAL_LEN(",\"comm\":") + COMM_TEXT_MAX + LITERAL_LEN(",\"uid\":") + U32_TEXT_MAX +	\
	 LITERAL_LEN(",\"family\":\"") + WIRE_NAME_MAX + LITERAL_LEN("\",\"saddr\":") +	\
	 ADDR_TEXT_MAX + LITERAL_LEN(",\"sport\":") + U16_TEXT_MAX +			\
	 LITERAL_LEN(",\"daddr\":") + ADDR_TEXT_MAX + LITERAL_LEN(",\"dport\":") +		\
	 U16_TEXT_MAX + LITERAL_LEN(",\"netns\":") + U32_TEXT_MAX +				\
	 LITERAL_LEN(",\"cookie\":") + U64_TEXT_MAX + LITERAL_LEN(",\"cgroup\":") +	\
	 U64_TEXT_MAX + LITERAL_LEN(",\"cpu\":") + U32_TEXT_MAX)

/* A record line is longest as connect_failed with "late". A snapshot line has
 * fewer bytes both before and after the connection fields, and a lost record has
 * no connection fields. */
#define RECORD_LINE_MAX_LEN									\
	(LITERAL_LEN("{\"seq\":") + U64_TEXT_MAX + LITERAL_LEN(",\"ts_ns\":") + U64_TEXT_MAX +	\
	 LITERAL_LEN(",\"type\":\"") + WIRE_NAME_MAX + LITERAL_LEN("\"") + CONNECTION_TEXT_MAX +	\
	 LITERAL_LEN(",\"error\":") + ERROR_TEXT_MAX + LITERAL_LEN(",\"late\":true") +	\
	 LITERAL_LEN("}\n"))

/* Some writes store a fixed block of up to 16 bytes and advance only by the length of
 * the text in it. */
#define WRITE_SLACK_BYTES 16

_Static_assert(RECORD_LINE_MAX_LEN + WRITE_SLACK_BYTES <= JSON_RECORD_MAX_BYTES,
	       "JSON_RECORD_MAX_BYTES must hold the longest record line");

static inline char *put_bytes(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

/* Copy a string literal. Its length is a constant, so the copy compiles to a few stores. */
#define put_literal(p, s) put_bytes(p, "" s "", LITERAL_LEN(s))

static inline char *put_char(char *p, char c)
{
	*p = c;
	return p + 1;
}

static const char digit_pairs[] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

/* Return the number of decimal digits of v, which is 1 for 0. */
static inline unsigned int u32_digits(uint32_t v)
{
	static const uint32_t pow10[] = {
		1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
	};
	/* bits * 1233 / 4096 is floor(bits * log10(2)) for 1 <= bits <= 32, so a
	 * number of that many bits has that many decimal digits or one more. */
	unsigned int bits = 32 - (unsigned int)__builtin_clz(v | 1);
	unsigned int t = (bits * 1233) >> 12;

	return t + ((v | 1) >= pow10[t]);
}

static inline void put_pair(char *p, uint32_t v)
{
	memcpy(p, digit_pairs + 2 * v, 2);
}

/* Write v in decimal: count its digits, then fill pairs of digits from the end. */
static inline char *put_u32(char *p, uint32_t v)
{
	unsigned int n = u32_digits(v);
	char *q = p + n;

	while (v >= 100) {
		uint32_t rest = v / 100;

		q -= 2;
		put_pair(q, v - 100 * rest);
		v = rest;
	}
	if (v >= 10)
		put_pair(q - 2, v);
	else
		q[-1] = (char)('0' + v);
	return p + n;
}

/* Write v < 10^8 in exactly 8 decimal digits. */
static inline char *put_8_digits(char *p, uint32_t v)
{
	uint32_t high = v / 10000, low = v % 10000;

	put_pair(p, high / 100);
	put_pair(p + 2, high % 100);
	put_pair(p + 4, low / 100);
	put_pair(p + 6, low % 100);
	return p + 8;
}

/* Write v in decimal. Above UINT32_MAX, 8 digits at a time in 32-bit arithmetic. */
static char *put_u64(char *p, uint64_t v)
{
	uint64_t high;

	if (v <= UINT32_MAX)
		return put_u32(p, (uint32_t)v);

	high = v / 100000000;
	if (high <= UINT32_MAX) {
		p = put_u32(p, (uint32_t)high);
	} else {
		/* UINT64_MAX / 10^16 is 1844, so high / 10^8 has at most 4 digits. */
		p = put_u32(p, (uint32_t)(high / 100000000));
		p = put_8_digits(p, (uint32_t)(high % 100000000));
	}
	return put_8_digits(p, (uint32_t)(v % 100000000));
}

static char *put_hex_escape(char *p, unsigned int code)
{
	static const char hex[] = "0123456789abcdef";
	char esc[6] = { '\\', 'u', '0', '0', hex[(code >> 4) & 0xf], hex[code & 0xf] };

	return put_bytes(p, esc, sizeof(esc));
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

/* Write comm[i..n) with escapes, as described at writer_put_comm(). */
static char *put_comm_escaped(char *p, const char *comm, size_t i, size_t n)
{
	const unsigned char *s = (const unsigned char *)comm;

	while (i < n) {
		size_t seq = utf8_sequence_len(s + i, n - i);

		if (seq == 0) {
			p = put_literal(p, "\\ufffd");
			i++;
		} else if (seq == 2 && s[i] == 0xc2 && s[i + 1] <= 0x9f) {
			p = put_hex_escape(p, s[i + 1]);
			i += 2;
		} else if (seq > 1) {
			p = put_bytes(p, comm + i, seq);
			i += seq;
		} else if (s[i] == '"' || s[i] == '\\') {
			p = put_char(p, '\\');
			p = put_char(p, comm[i]);
			i++;
		} else if (s[i] < 0x20 || s[i] == 0x7f) {
			p = put_hex_escape(p, s[i]);
			i++;
		} else {
			p = put_char(p, comm[i]);
			i++;
		}
	}
	return p;
}

/* Load 8 bytes with the first in the least significant byte, on any byte order. */
static inline uint64_t load_le64(const char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

#define BYTES_OF(b) (0x0101010101010101ULL * (b))
#define HIGH_BITS BYTES_OF(0x80)

/*
 * Return the number of leading bytes of comm that are printable ASCII other
 * than '"' and '\\'. It tests 8 bytes at a time: each test below sets the high
 * bit of the bytes it matches. A borrow or carry between bytes only starts at a
 * byte that matched, so the lowest flagged byte is exact even where higher
 * ones are not.
 */
static size_t comm_plain_prefix(const char comm[TCPTAP_COMM_LEN])
{
	for (size_t i = 0; i < TCPTAP_COMM_LEN; i += 8) {
		uint64_t x = load_le64(comm + i);
		uint64_t quote = x ^ BYTES_OF('"'), backslash = x ^ BYTES_OF('\\');
		uint64_t below_space = (x - BYTES_OF(0x20)) & ~x;
		uint64_t del_or_above = (x + BYTES_OF(0x01)) | x;
		uint64_t is_quote = (quote - BYTES_OF(0x01)) & ~quote;
		uint64_t is_backslash = (backslash - BYTES_OF(0x01)) & ~backslash;
		uint64_t special = (below_space | del_or_above | is_quote | is_backslash) & HIGH_BITS;

		if (special)
			return i + (size_t)__builtin_ctzll(special) / 8;
	}
	return TCPTAP_COMM_LEN;
}

/*
 * Write comm as a JSON string. comm is whatever the process set with
 * prctl(PR_SET_NAME) or exec: it ends at the first NUL or after
 * TCPTAP_COMM_LEN bytes. '"' and '\\' are escaped. C0 controls, DEL and the
 * C1 controls U+0080..U+009F become \u00XX, so no terminal control reaches a
 * reader. Every byte that is not part of a well-formed UTF-8 sequence becomes
 * one \ufffd. The output therefore depends only on the input bytes.
 */
static char *writer_put_comm(char *p, const char comm[TCPTAP_COMM_LEN])
{
	/* Most names are printable ASCII without '"' or '\\', which is copied as is.
	 * The copy takes all TCPTAP_COMM_LEN bytes and the cursor keeps the plain
	 * prefix, which the escaped path continues from a character boundary. */
	size_t i = comm_plain_prefix(comm);

	p = put_char(p, '"');
	memcpy(p, comm, TCPTAP_COMM_LEN);
	p += i;
	if (i < TCPTAP_COMM_LEN && comm[i] != '\0')
		p = put_comm_escaped(p, comm, i, i + strnlen(comm + i, TCPTAP_COMM_LEN - i));
	return put_char(p, '"');
}

/* "0" to "255", each padded to 3 bytes and followed by its length. */
#define OCTET1(u) { '0' + (u), 0, 0, 1 }
#define OCTET2(t, u) { '0' + (t), '0' + (u), 0, 2 }
#define OCTET3(h, t, u) { '0' + (h), '0' + (t), '0' + (u), 3 }
#define OCTET2_ROW(t) OCTET2(t, 0), OCTET2(t, 1), OCTET2(t, 2), OCTET2(t, 3), OCTET2(t, 4), \
	OCTET2(t, 5), OCTET2(t, 6), OCTET2(t, 7), OCTET2(t, 8), OCTET2(t, 9)
#define OCTET3_ROW(h, t) OCTET3(h, t, 0), OCTET3(h, t, 1), OCTET3(h, t, 2), OCTET3(h, t, 3), \
	OCTET3(h, t, 4), OCTET3(h, t, 5), OCTET3(h, t, 6), OCTET3(h, t, 7), OCTET3(h, t, 8), \
	OCTET3(h, t, 9)

static const char octet_text[256][4] = {
	OCTET1(0), OCTET1(1), OCTET1(2), OCTET1(3), OCTET1(4), OCTET1(5), OCTET1(6), OCTET1(7),
	OCTET1(8), OCTET1(9),
	OCTET2_ROW(1), OCTET2_ROW(2), OCTET2_ROW(3), OCTET2_ROW(4), OCTET2_ROW(5),
	OCTET2_ROW(6), OCTET2_ROW(7), OCTET2_ROW(8), OCTET2_ROW(9),
	OCTET3_ROW(1, 0), OCTET3_ROW(1, 1), OCTET3_ROW(1, 2), OCTET3_ROW(1, 3), OCTET3_ROW(1, 4),
	OCTET3_ROW(1, 5), OCTET3_ROW(1, 6), OCTET3_ROW(1, 7), OCTET3_ROW(1, 8), OCTET3_ROW(1, 9),
	OCTET3_ROW(2, 0), OCTET3_ROW(2, 1), OCTET3_ROW(2, 2), OCTET3_ROW(2, 3), OCTET3_ROW(2, 4),
	OCTET3(2, 5, 0), OCTET3(2, 5, 1), OCTET3(2, 5, 2), OCTET3(2, 5, 3), OCTET3(2, 5, 4),
	OCTET3(2, 5, 5),
};

/* Write a dotted quad without leading zeros, the text inet_ntop() writes. */
static char *put_ipv4(char *p, const uint8_t addr_be[4])
{
	for (int i = 0; i < 4; i++) {
		const char *octet = octet_text[addr_be[i]];

		if (i > 0)
			p = put_char(p, '.');
		memcpy(p, octet, 4);	/* the bytes after the digits get overwritten */
		p += octet[3];
	}
	return p;
}

static const char hex_pairs[] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	"404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* Write a 16-bit group in lowercase hex without leading zeros. Stores 4 bytes. */
static inline char *put_hex_group(char *p, unsigned int group)
{
	unsigned int bits = 32 - (unsigned int)__builtin_clz(group | 1);
	unsigned int n = (bits + 3) / 4;
	uint16_t high, low;
	uint32_t text;

	/* Built in a register: storing the pairs to memory and reloading them as
	 * one word measured slower, because the load waits for the two stores. */
	memcpy(&high, hex_pairs + 2 * (group >> 8), 2);
	memcpy(&low, hex_pairs + 2 * (group & 0xff), 2);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	text = ((uint32_t)high << 16 | low) << 8 * (4 - n);
#else
	text = (high | (uint32_t)low << 16) >> 8 * (4 - n);
#endif
	/* The leading zeros were the first bytes in memory order, now dropped. */
	memcpy(p, &text, sizeof(text));
	return p + n;
}

/*
 * Write an IPv6 address as glibc's inet_ntop() does, which the tests check. The
 * longest run of two or more zero groups becomes "::", the first one if runs tie.
 * An address whose longest zero run is exactly its first six groups, or its
 * first five followed by ffff, ends in a dotted quad.
 */
static char *put_ipv6(char *p, const uint8_t addr_be[TCPTAP_ADDR_LEN])
{
	unsigned int groups[8];
	int run_start = -1, run_len = 0, cur_start = 0, cur_len = 0;

	for (int i = 0; i < 8; i++) {
		groups[i] = (unsigned int)addr_be[2 * i] << 8 | addr_be[2 * i + 1];
		if (groups[i] != 0) {
			cur_len = 0;
			continue;
		}
		if (cur_len++ == 0)
			cur_start = i;
		if (cur_len > run_len) {
			run_start = cur_start;
			run_len = cur_len;
		}
	}
	if (run_len < 2) {
		run_start = -1;
		run_len = 0;
	}

	if (run_start == 0 && (run_len == 6 || (run_len == 5 && groups[5] == 0xffff))) {
		p = run_len == 6 ? put_literal(p, "::") : put_literal(p, "::ffff:");
		return put_ipv4(p, addr_be + 12);
	}

	for (int i = 0; i < 8; i++) {
		if (i == run_start) {
			p = put_literal(p, "::");
			i += run_len - 1;
			continue;
		}
		if (i > 0 && i != run_start + run_len)
			p = put_char(p, ':');
		p = put_hex_group(p, groups[i]);
	}
	return p;
}

static char *writer_put_addr(char *p, uint8_t family, const uint8_t addr_be[TCPTAP_ADDR_LEN])
{
	p = put_char(p, '"');
	if (family == TCPTAP_FAMILY_INET)
		p = put_ipv4(p, addr_be);
	else
		p = put_ipv6(p, addr_be);
	return put_char(p, '"');
}

/* A wire name zero-padded to 16 bytes, so it is copied with one fixed-size memcpy(). */
struct wire_name {
	char text[WIRE_NAME_MAX + 1];
	uint8_t len;
};

#define WIRE_NAME(s) { .text = "" s "", .len = LITERAL_LEN(s) }

/* Copy all of name->text and advance by its length. */
static inline char *put_wire_name(char *p, const struct wire_name *name)
{
	memcpy(p, name->text, sizeof(name->text));
	return p + name->len;
}

static const struct wire_name *type_wire_name(unsigned int type)
{
	static const struct wire_name event_names[] = {
		[TCPTAP_EV_CONNECT] = WIRE_NAME("connect"),
		[TCPTAP_EV_ACCEPT] = WIRE_NAME("accept"),
		[TCPTAP_EV_CLOSE] = WIRE_NAME("close"),
		[TCPTAP_EV_CONNECT_FAILED] = WIRE_NAME("connect_failed"),
	};
	static const struct wire_name lost = WIRE_NAME("lost");

	if (type == RECORD_LOST)
		return &lost;
	if (type < sizeof(event_names) / sizeof(event_names[0]) && event_names[type].len > 0)
		return &event_names[type];
	return NULL;
}

static const struct wire_name *family_wire_name(unsigned int family)
{
	static const struct wire_name inet = WIRE_NAME("inet"), inet6 = WIRE_NAME("inet6");

	switch (family) {
	case TCPTAP_FAMILY_INET:
		return &inet;
	case TCPTAP_FAMILY_INET6:
		return &inet6;
	default:
		return NULL;
	}
}

static const struct wire_name *origin_wire_name(unsigned int origin)
{
	static const struct wire_name names[] = {
		[RECORD_ORIGIN_CONNECT] = WIRE_NAME("connect"),
		[RECORD_ORIGIN_ACCEPT] = WIRE_NAME("accept"),
		[RECORD_ORIGIN_SEEDED] = WIRE_NAME("seeded"),
	};

	if (origin < sizeof(names) / sizeof(names[0]) && names[origin].len > 0)
		return &names[origin];
	return NULL;
}

const char *json_type_name(unsigned int type)
{
	const struct wire_name *name = type_wire_name(type);

	return name ? name->text : NULL;
}

const char *json_family_name(unsigned int family)
{
	const struct wire_name *name = family_wire_name(family);

	return name ? name->text : NULL;
}

const char *json_origin_name(unsigned int origin)
{
	const struct wire_name *name = origin_wire_name(origin);

	return name ? name->text : NULL;
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
static char *writer_put_error(char *p, int32_t error)
{
	const char *name = json_errno_name(error);

	p = put_char(p, '"');
	if (name) {
		p = put_bytes(p, name, strlen(name));
	} else {
		p = put_char(p, 'E');
		if (error < 0)
			p = put_char(p, '-');
		p = put_u64(p, error < 0 ? (uint64_t)-(int64_t)error : (uint64_t)error);
	}
	return put_char(p, '"');
}

/* The fields an event record and a snapshot record share, from "pid" to "cpu".
 * Returns the new cursor, or NULL for a family without a wire name. */
static char *writer_put_connection(char *p, const struct tcptap_event *ev)
{
	const struct wire_name *family = family_wire_name(ev->family);

	if (!family)
		return NULL;

	p = put_literal(p, ",\"pid\":");
	p = put_u32(p, ev->pid);
	p = put_literal(p, ",\"tid\":");
	p = put_u32(p, ev->tid);
	p = put_literal(p, ",\"comm\":");
	p = writer_put_comm(p, ev->comm);
	p = put_literal(p, ",\"uid\":");
	p = put_u32(p, ev->uid);
	p = put_literal(p, ",\"family\":\"");
	p = put_wire_name(p, family);
	p = put_literal(p, "\",\"saddr\":");
	p = writer_put_addr(p, ev->family, ev->saddr_be);
	p = put_literal(p, ",\"sport\":");
	p = put_u32(p, ev->sport);
	p = put_literal(p, ",\"daddr\":");
	p = writer_put_addr(p, ev->family, ev->daddr_be);
	p = put_literal(p, ",\"dport\":");
	p = put_u32(p, ev->dport);
	p = put_literal(p, ",\"netns\":");
	p = put_u32(p, ev->netns);
	p = put_literal(p, ",\"cookie\":");
	p = put_u64(p, ev->cookie);
	p = put_literal(p, ",\"cgroup\":");
	p = put_u64(p, ev->cgroup);
	p = put_literal(p, ",\"cpu\":");
	return put_u32(p, ev->cpu);
}

/* Encode r into buf, which has room for JSON_RECORD_MAX_BYTES. Returns the
 * length or -EINVAL. */
static int encode_record_unchecked(const struct record *r, char *buf)
{
	const struct wire_name *type = type_wire_name(r->ev.type);
	char *p = buf;

	if (!type)
		return -EINVAL;

	p = put_literal(p, "{\"seq\":");
	p = put_u64(p, r->seq);
	p = put_literal(p, ",\"ts_ns\":");
	p = put_u64(p, r->ev.ts_ns);
	p = put_literal(p, ",\"type\":\"");
	p = put_wire_name(p, type);
	p = put_char(p, '"');

	if (r->ev.type == RECORD_LOST) {
		if (r->lost_reason == RECORD_LOST_NESTED) {
			p = put_literal(p, ",\"reason\":\"nested\"");
		} else {
			p = put_literal(p, ",\"reason\":\"ring_full\",\"cpu\":");
			p = put_u32(p, r->ev.cpu);
		}
		p = put_literal(p, ",\"count\":");
		p = put_u64(p, r->lost_count);
	} else {
		p = writer_put_connection(p, &r->ev);
		if (!p)
			return -EINVAL;
		if (r->ev.type == TCPTAP_EV_CONNECT_FAILED) {
			p = put_literal(p, ",\"error\":");
			p = writer_put_error(p, r->ev.error);
		}
		if (r->ev.type == TCPTAP_EV_CLOSE && r->inferred)
			p = put_literal(p, ",\"inferred\":true");
	}

	if (r->late)
		p = put_literal(p, ",\"late\":true");

	p = put_literal(p, "}\n");
	return (int)(p - buf);
}

/* Encode r as a snapshot line into buf, which has room for JSON_RECORD_MAX_BYTES.
 * Returns the length or -EINVAL. */
static int encode_snapshot_unchecked(const struct record *r, char *buf)
{
	const struct wire_name *origin = origin_wire_name(r->origin);
	char *p = buf;

	if (!origin)
		return -EINVAL;

	p = put_literal(p, "{\"ts_ns\":");
	p = put_u64(p, r->ev.ts_ns);
	p = put_literal(p, ",\"type\":\"snapshot\"");
	p = writer_put_connection(p, &r->ev);
	if (!p)
		return -EINVAL;
	p = put_literal(p, ",\"origin\":\"");
	p = put_wire_name(p, origin);
	p = put_literal(p, "\"}\n");
	return (int)(p - buf);
}

/* Run an unchecked encoder on buf if it has room for any line, else on a local
 * buffer whose line is copied to buf if it fits. Returns the length, -ENOSPC or
 * the encoder's -EINVAL. */
static inline int encode_checked(int (*encode)(const struct record *r, char *buf),
				 const struct record *r, char *buf, size_t size)
{
	char line[JSON_RECORD_MAX_BYTES];
	int len;

	if (size >= JSON_RECORD_MAX_BYTES)
		return encode(r, buf);

	len = encode(r, line);
	if (len < 0)
		return len;
	if ((size_t)len > size)
		return -ENOSPC;
	memcpy(buf, line, (size_t)len);
	return len;
}

int json_encode_record(const struct record *r, char *buf, size_t size)
{
	return encode_checked(encode_record_unchecked, r, buf, size);
}

int json_encode_snapshot(const struct record *r, char *buf, size_t size)
{
	return encode_checked(encode_snapshot_unchecked, r, buf, size);
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
