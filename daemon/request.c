// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "request.h"

/*
 * A request is one JSON object on one line. json-c 0.16 checks the syntax, but
 * even in strict mode it accepts single-quoted keys, NaN and Infinity, and it
 * saturates integers past UINT64_MAX. It also keeps the last of duplicate
 * keys. A second, lexical pass over the text rejects all of these. The parsed
 * object is then checked field by field.
 */

/* json-c's parser stack depth: it allows one level less of nested objects and
 * arrays, so 7. A valid request needs 3. */
#define REQUEST_MAX_DEPTH 8
/* Every distinct key takes at least 4 bytes of the line ("k":0,). */
#define REQUEST_MAX_KEYS (REQUEST_MAX_BYTES / 4)
/* Bytes of a client-supplied name quoted back in an error message. */
#define QUOTE_MAX_BYTES 32

static int request_error(char *errbuf, size_t errbuf_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int request_error(char *errbuf, size_t errbuf_size, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errbuf_size > 0) {
		va_start(ap, fmt);
		(void)vsnprintf(errbuf, errbuf_size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/*
 * Copy a client-supplied name for an error message: at most QUOTE_MAX_BYTES,
 * cut on a UTF-8 character boundary, '"', '\\' and control bytes shown as '?',
 * so the message stays one readable line in logs too.
 */
static const char *quote_user(const char *s, size_t len, char out[QUOTE_MAX_BYTES + 4])
{
	size_t n = len, i;

	if (n > QUOTE_MAX_BYTES) {
		n = QUOTE_MAX_BYTES;
		/* Back up over continuation bytes so no character is split. */
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
	}
	if (n < len) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

struct key_span {
	uint16_t offset;	/* into lexer.keys */
	uint16_t len;
};

struct lexer_frame {
	bool object;
	size_t first_key;	/* index of this object's first key in lexer.spans */
	size_t keys_used;	/* lexer.keys_used when the frame opened */
};

struct lexer {
	const char *text;
	size_t len;
	size_t pos;
	char keys[REQUEST_MAX_BYTES];		/* decoded keys of the open objects */
	size_t keys_used;
	struct key_span spans[REQUEST_MAX_KEYS];
	size_t nspans;
	struct lexer_frame frames[REQUEST_MAX_DEPTH];
	size_t depth;
};

static void utf8_put(char *out, size_t *n, uint32_t cp)
{
	if (cp < 0x80) {
		out[(*n)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*n)++] = (char)(0xc0 | cp >> 6);
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[(*n)++] = (char)(0xe0 | cp >> 12);
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[(*n)++] = (char)(0xf0 | cp >> 18);
		out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	}
}

static uint32_t hex4(const char *s)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
	}
	return v;
}

/*
 * Decode the JSON string body text[start..end) into out, which has room for
 * end - start bytes (no escape decodes to more bytes than it takes). A lone
 * surrogate becomes U+FFFD, as json-c decodes it. Returns the decoded length.
 */
static size_t json_string_decode(const char *text, size_t start, size_t end, char *out)
{
	size_t n = 0, i = start;

	while (i < end) {
		uint32_t cp;

		if (text[i] != '\\') {
			out[n++] = text[i++];
			continue;
		}
		if (i + 1 >= end)
			break;
		switch (text[i + 1]) {
		case 'b': out[n++] = '\b'; i += 2; continue;
		case 'f': out[n++] = '\f'; i += 2; continue;
		case 'n': out[n++] = '\n'; i += 2; continue;
		case 'r': out[n++] = '\r'; i += 2; continue;
		case 't': out[n++] = '\t'; i += 2; continue;
		case 'u': break;
		default: out[n++] = text[i + 1]; i += 2; continue;
		}

		if (i + 6 > end)
			break;
		cp = hex4(text + i + 2);
		i += 6;
		if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= end && text[i] == '\\' &&
		    text[i + 1] == 'u') {
			uint32_t low = hex4(text + i + 2);

			if (low >= 0xdc00 && low <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
				i += 6;
			}
		}
		if (cp >= 0xd800 && cp <= 0xdfff)
			cp = 0xfffd;
		utf8_put(out, &n, cp);
	}
	return n;
}

/* The key most recently read in the innermost open object, for messages. */
static const char *lexer_current_key(const struct lexer *lx, char out[QUOTE_MAX_BYTES + 4])
{
	const struct key_span *k;

	if (lx->nspans == 0)
		return quote_user("", 0, out);
	k = &lx->spans[lx->nspans - 1];
	return quote_user(lx->keys + k->offset, k->len, out);
}

static bool lexer_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int lexer_key(struct lexer *lx, size_t start, size_t end, char *errbuf, size_t errbuf_size)
{
	struct lexer_frame *f = &lx->frames[lx->depth - 1];
	char *key = lx->keys + lx->keys_used;
	char quoted[QUOTE_MAX_BYTES + 4];
	size_t len;

	if (lx->nspans >= REQUEST_MAX_KEYS || end - start > sizeof(lx->keys) - lx->keys_used)
		return request_error(errbuf, errbuf_size, "request has too many fields");

	len = json_string_decode(lx->text, start, end, key);
	for (size_t i = f->first_key; i < lx->nspans; i++)
		if (lx->spans[i].len == len && memcmp(lx->keys + lx->spans[i].offset, key, len) == 0)
			return request_error(errbuf, errbuf_size, "duplicate field \"%s\"",
					     quote_user(key, len, quoted));

	lx->spans[lx->nspans++] = (struct key_span) {
		.offset = (uint16_t)lx->keys_used,
		.len = (uint16_t)len,
	};
	lx->keys_used += len;
	return 0;
}

static int lexer_string(struct lexer *lx, char *errbuf, size_t errbuf_size)
{
	size_t start = ++lx->pos, end, next;

	while (lx->pos < lx->len && lx->text[lx->pos] != '"')
		lx->pos += lx->text[lx->pos] == '\\' ? 2 : 1;
	if (lx->pos >= lx->len)
		return request_error(errbuf, errbuf_size, "invalid JSON: unterminated string");
	end = lx->pos++;

	/* A string is a key if it sits in an object and a ':' follows it. */
	next = lx->pos;
	while (next < lx->len && lexer_is_ws(lx->text[next]))
		next++;
	if (lx->depth > 0 && lx->frames[lx->depth - 1].object && next < lx->len &&
	    lx->text[next] == ':')
		return lexer_key(lx, start, end, errbuf, errbuf_size);
	return 0;
}

static int lexer_number(struct lexer *lx, char *errbuf, size_t errbuf_size)
{
	static const char UINT64_MAX_TEXT[] = "18446744073709551615";
	size_t start = lx->pos, digits;
	bool integer = true;
	char quoted[QUOTE_MAX_BYTES + 4];

	while (lx->pos < lx->len && strchr("0123456789+-.eE", lx->text[lx->pos])) {
		if (strchr(".eE", lx->text[lx->pos]))
			integer = false;
		lx->pos++;
	}

	/* Negative integers are rejected later; they do not saturate silently. */
	if (!integer || lx->text[start] == '-')
		return 0;

	digits = lx->pos - start;
	if (digits > sizeof(UINT64_MAX_TEXT) - 1 ||
	    (digits == sizeof(UINT64_MAX_TEXT) - 1 &&
	     memcmp(lx->text + start, UINT64_MAX_TEXT, digits) > 0))
		return request_error(errbuf, errbuf_size, "\"%s\" is larger than %s",
				     lexer_current_key(lx, quoted), UINT64_MAX_TEXT);
	return 0;
}

static int lexer_word(struct lexer *lx, char *errbuf, size_t errbuf_size)
{
	size_t start = lx->pos;
	char quoted[QUOTE_MAX_BYTES + 4];

	while (lx->pos < lx->len && ((lx->text[lx->pos] >= 'a' && lx->text[lx->pos] <= 'z') ||
				     (lx->text[lx->pos] >= 'A' && lx->text[lx->pos] <= 'Z')))
		lx->pos++;

	if ((lx->pos - start == 4 && memcmp(lx->text + start, "true", 4) == 0) ||
	    (lx->pos - start == 5 && memcmp(lx->text + start, "false", 5) == 0) ||
	    (lx->pos - start == 4 && memcmp(lx->text + start, "null", 4) == 0))
		return 0;

	return request_error(errbuf, errbuf_size, "invalid JSON: unexpected \"%s\" at byte %zu",
			     quote_user(lx->text + start, lx->pos - start, quoted), start);
}

static int lexer_open(struct lexer *lx, bool object, char *errbuf, size_t errbuf_size)
{
	if (lx->depth >= REQUEST_MAX_DEPTH)
		return request_error(errbuf, errbuf_size, "request is nested too deeply");
	lx->frames[lx->depth++] = (struct lexer_frame) {
		.object = object,
		.first_key = lx->nspans,
		.keys_used = lx->keys_used,
	};
	lx->pos++;
	return 0;
}

static void lexer_close(struct lexer *lx)
{
	/* The closed object's keys are forgotten; its siblings may reuse them. */
	if (lx->depth > 0) {
		const struct lexer_frame *f = &lx->frames[--lx->depth];

		lx->nspans = f->first_key;
		lx->keys_used = f->keys_used;
	}
	lx->pos++;
}

/* Run over text that json-c accepted, rejecting what strict JSON does not allow. */
static int request_lex(struct lexer *lx, char *errbuf, size_t errbuf_size)
{
	int r = 0;

	while (r >= 0 && lx->pos < lx->len) {
		char c = lx->text[lx->pos];

		if (lexer_is_ws(c) || c == ',' || c == ':')
			lx->pos++;
		else if (c == '{' || c == '[')
			r = lexer_open(lx, c == '{', errbuf, errbuf_size);
		else if (c == '}' || c == ']')
			lexer_close(lx);
		else if (c == '"')
			r = lexer_string(lx, errbuf, errbuf_size);
		else if (c == '-' || (c >= '0' && c <= '9'))
			r = lexer_number(lx, errbuf, errbuf_size);
		else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
			r = lexer_word(lx, errbuf, errbuf_size);
		else if (c == '\'')
			r = request_error(errbuf, errbuf_size,
					  "invalid JSON: strings must be in double quotes");
		else
			r = request_error(errbuf, errbuf_size,
					  "invalid JSON: unexpected byte 0x%02x at byte %zu",
					  (unsigned char)c, lx->pos);
	}
	return r;
}

/* Read an integer field into [min, max]; the message states the range. */
static int parse_uint(struct json_object *v, const char *name, uint64_t min, uint64_t max,
		      uint64_t *ret_value, char *errbuf, size_t errbuf_size)
{
	uint64_t u;

	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		goto invalid;

	u = json_object_get_uint64(v);
	if (u < min || u > max)
		goto invalid;

	*ret_value = u;
	return 0;

invalid:
	return request_error(errbuf, errbuf_size,
			     "\"%s\" must be an integer from %" PRIu64 " to %" PRIu64,
			     name, min, max);
}

static int parse_types(struct json_object *v, uint32_t *ret_types, char *errbuf,
		       size_t errbuf_size)
{
	static const struct {
		const char *name;
		unsigned int type;
	} names[] = {
		{ "connect", TCPTAP_EV_CONNECT },
		{ "accept", TCPTAP_EV_ACCEPT },
		{ "close", TCPTAP_EV_CLOSE },
		{ "connect_failed", TCPTAP_EV_CONNECT_FAILED },
	};
	char quoted[QUOTE_MAX_BYTES + 4];
	uint32_t types = 0;
	size_t n;

	if (!json_object_is_type(v, json_type_array))
		return request_error(errbuf, errbuf_size,
				     "\"types\" must be an array of event type names");
	n = json_object_array_length(v);
	if (n == 0)
		return request_error(errbuf, errbuf_size, "\"types\" must not be empty");

	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(v, i);
		const char *s;
		size_t j;

		if (!json_object_is_type(e, json_type_string))
			return request_error(errbuf, errbuf_size,
					     "\"types\" must be an array of event type names");
		s = json_object_get_string(e);
		for (j = 0; j < sizeof(names) / sizeof(names[0]); j++)
			if (strcmp(s, names[j].name) == 0)
				break;
		if (j == sizeof(names) / sizeof(names[0]))
			return request_error(errbuf, errbuf_size,
					     "unknown type \"%s\" in \"types\": expected connect, "
					     "accept, close or connect_failed",
					     quote_user(s, (size_t)json_object_get_string_len(e),
							quoted));
		types |= 1u << names[j].type;
	}

	*ret_types = types;
	return 0;
}

static int parse_comm(struct json_object *v, char ret_comm[TCPTAP_COMM_LEN], char *errbuf,
		      size_t errbuf_size)
{
	const char *s;
	size_t len;

	if (!json_object_is_type(v, json_type_string))
		goto invalid;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (len == 0 || len > TCPTAP_COMM_LEN - 1 || memchr(s, '\0', len))
		goto invalid;

	memset(ret_comm, 0, TCPTAP_COMM_LEN);
	memcpy(ret_comm, s, len);
	return 0;

invalid:
	return request_error(errbuf, errbuf_size,
			     "\"comm\" must be a string of 1 to %d bytes without NUL",
			     TCPTAP_COMM_LEN - 1);
}

static int parse_family(struct json_object *v, uint8_t *ret_family, char *errbuf,
			size_t errbuf_size)
{
	const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";

	if (strcmp(s, "inet") == 0)
		*ret_family = TCPTAP_FAMILY_INET;
	else if (strcmp(s, "inet6") == 0)
		*ret_family = TCPTAP_FAMILY_INET6;
	else
		return request_error(errbuf, errbuf_size,
				     "\"family\" must be \"inet\" or \"inet6\"");
	return 0;
}

static int parse_filter(struct json_object *obj, struct record_filter *f, char *errbuf,
			size_t errbuf_size)
{
	char quoted[QUOTE_MAX_BYTES + 4];
	uint64_t u;
	int r;

	if (!json_object_is_type(obj, json_type_object))
		return request_error(errbuf, errbuf_size, "\"filter\" must be an object");

	json_object_object_foreach(obj, key, v) {
		if (strcmp(key, "types") == 0) {
			r = parse_types(v, &f->types, errbuf, errbuf_size);
		} else if (strcmp(key, "pid") == 0) {
			r = parse_uint(v, key, 0, UINT32_MAX, &u, errbuf, errbuf_size);
			f->pid = (uint32_t)u;
			f->has_pid = true;
		} else if (strcmp(key, "comm") == 0) {
			r = parse_comm(v, f->comm, errbuf, errbuf_size);
			f->has_comm = true;
		} else if (strcmp(key, "port") == 0) {
			r = parse_uint(v, key, 1, UINT16_MAX, &u, errbuf, errbuf_size);
			f->port = (uint16_t)u;
			f->has_port = true;
		} else if (strcmp(key, "family") == 0) {
			r = parse_family(v, &f->family, errbuf, errbuf_size);
		} else if (strcmp(key, "netns") == 0) {
			r = parse_uint(v, key, 0, UINT32_MAX, &u, errbuf, errbuf_size);
			f->netns = (uint32_t)u;
			f->has_netns = true;
		} else if (strcmp(key, "cgroup") == 0) {
			r = parse_uint(v, key, 0, UINT64_MAX, &u, errbuf, errbuf_size);
			f->cgroup = u;
			f->has_cgroup = true;
		} else {
			r = request_error(errbuf, errbuf_size, "unknown field \"%s\" in \"filter\"",
					  quote_user(key, strlen(key), quoted));
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_command(struct json_object *v, enum request_command *ret_command,
			 char *errbuf, size_t errbuf_size)
{
	const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";

	if (strcmp(s, "subscribe") == 0)
		*ret_command = REQUEST_SUBSCRIBE;
	else if (strcmp(s, "dump") == 0)
		*ret_command = REQUEST_DUMP;
	else if (strcmp(s, "stats") == 0)
		*ret_command = REQUEST_STATS;
	else
		return request_error(errbuf, errbuf_size,
				     "\"command\" must be \"subscribe\", \"dump\" or \"stats\"");
	return 0;
}

static int parse_run_id(struct json_object *v, char *ret_run_id, size_t size, char *errbuf,
			size_t errbuf_size)
{
	size_t len;

	if (!json_object_is_type(v, json_type_string))
		goto invalid;
	len = (size_t)json_object_get_string_len(v);
	if (len == 0 || len >= size || memchr(json_object_get_string(v), '\0', len))
		goto invalid;

	memcpy(ret_run_id, json_object_get_string(v), len + 1);
	return 0;

invalid:
	return request_error(errbuf, errbuf_size,
			     "\"run_id\" must be a string of 1 to %zu bytes without NUL", size - 1);
}

static int parse_request_object(struct json_object *obj, struct client_request *req,
				char *errbuf, size_t errbuf_size)
{
	char quoted[QUOTE_MAX_BYTES + 4];
	bool has_run_id = false;
	int r;

	if (!json_object_is_type(obj, json_type_object))
		return request_error(errbuf, errbuf_size, "request must be a JSON object");

	json_object_object_foreach(obj, key, v) {
		if (strcmp(key, "command") == 0) {
			r = parse_command(v, &req->command, errbuf, errbuf_size);
		} else if (strcmp(key, "filter") == 0) {
			r = parse_filter(v, &req->filter, errbuf, errbuf_size);
		} else if (strcmp(key, "resume_from") == 0) {
			r = parse_uint(v, key, 0, UINT64_MAX, &req->resume_from, errbuf,
				       errbuf_size);
			req->has_resume = true;
		} else if (strcmp(key, "run_id") == 0) {
			r = parse_run_id(v, req->run_id, sizeof(req->run_id), errbuf, errbuf_size);
			has_run_id = true;
		} else {
			r = request_error(errbuf, errbuf_size, "unknown field \"%s\"",
					  quote_user(key, strlen(key), quoted));
		}
		if (r < 0)
			return r;
	}

	/* seq values are per daemon run, so a resume without its run is meaningless. */
	if (req->has_resume && !has_run_id)
		return request_error(errbuf, errbuf_size, "\"resume_from\" requires \"run_id\"");
	if (has_run_id && !req->has_resume)
		return request_error(errbuf, errbuf_size, "\"run_id\" requires \"resume_from\"");
	if (req->has_resume && req->command != REQUEST_SUBSCRIBE)
		return request_error(errbuf, errbuf_size,
				     "\"resume_from\" is only valid with \"command\": \"subscribe\"");
	return 0;
}

/* Parse text with json-c and the strictness pass; *ret_obj is NULL for a blank line. */
static int request_parse_json(const char *line, size_t len, struct json_object **ret_obj,
			      char *errbuf, size_t errbuf_size)
{
	struct json_tokener *tok;
	struct json_object *obj = NULL;
	enum json_tokener_error jerr;
	size_t end, i;
	struct lexer *lx;
	int r;

	for (i = 0; i < len && lexer_is_ws(line[i]); i++)
		;
	if (i == len) {
		*ret_obj = NULL;
		return 0;
	}
	/* Checked first: json-c cannot tell a complete top-level number from a truncated one. */
	if (line[i] != '{')
		return request_error(errbuf, errbuf_size, "request must be a JSON object");

	tok = json_tokener_new_ex(REQUEST_MAX_DEPTH);
	if (!tok)
		return -ENOMEM;
	/* Trailing data is allowed here only so it can be reported with its offset below. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 |
			       JSON_TOKENER_ALLOW_TRAILING_CHARS);
	obj = json_tokener_parse_ex(tok, line, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);

	if (!obj && jerr == json_tokener_continue)
		return request_error(errbuf, errbuf_size, "invalid JSON: request ends early");
	if (!obj)
		return request_error(errbuf, errbuf_size, "invalid JSON at byte %zu: %s", end,
				     json_tokener_error_desc(jerr));

	while (end < len && lexer_is_ws(line[end]))
		end++;
	if (end < len) {
		json_object_put(obj);
		return request_error(errbuf, errbuf_size,
				     "invalid JSON: unexpected data after the object at byte %zu",
				     end);
	}

	lx = calloc(1, sizeof(*lx));
	if (!lx) {
		json_object_put(obj);
		return -ENOMEM;
	}
	lx->text = line;
	lx->len = len;
	r = request_lex(lx, errbuf, errbuf_size);
	free(lx);
	if (r < 0) {
		json_object_put(obj);
		return r;
	}

	*ret_obj = obj;
	return 0;
}

int request_parse(const char *line, size_t len, struct client_request *ret_request,
		  char *errbuf, size_t errbuf_size)
{
	struct client_request req = { .command = REQUEST_SUBSCRIBE };
	struct json_object *obj = NULL;
	const char *nul;
	int r;

	if (len > REQUEST_MAX_BYTES)
		return request_error(errbuf, errbuf_size, "request is longer than %d bytes",
				     REQUEST_MAX_BYTES);

	nul = memchr(line, '\0', len);
	if (nul)
		return request_error(errbuf, errbuf_size, "request contains a NUL byte at byte %zu",
				     (size_t)(nul - line));

	r = request_parse_json(line, len, &obj, errbuf, errbuf_size);
	if (r < 0)
		return r;

	/* A blank line requests the defaults: subscribe to everything. */
	if (obj) {
		r = parse_request_object(obj, &req, errbuf, errbuf_size);
		json_object_put(obj);
		if (r < 0)
			return r;
	}

	*ret_request = req;
	return 0;
}

static bool filter_types_match(uint32_t types, const struct record *r)
{
	switch (r->origin) {
	case RECORD_ORIGIN_CONNECT:
		return types & (1u << TCPTAP_EV_CONNECT);
	case RECORD_ORIGIN_ACCEPT:
		return types & (1u << TCPTAP_EV_ACCEPT);
	case RECORD_ORIGIN_SEEDED:
		/* Whether a seeded connection was opened actively or passively is unknown. */
		return types & ((1u << TCPTAP_EV_CONNECT) | (1u << TCPTAP_EV_ACCEPT));
	default:
		return r->ev.type < 32 && (types & (1u << r->ev.type));
	}
}

bool record_filter_match(const struct record_filter *f, const struct record *r)
{
	const struct tcptap_event *ev = &r->ev;

	if (ev->type == RECORD_LOST)
		return true;

	if (f->types != 0 && !filter_types_match(f->types, r))
		return false;
	if (f->has_pid && ev->pid != f->pid)
		return false;
	if (f->has_comm) {
		size_t len = strnlen(ev->comm, TCPTAP_COMM_LEN);

		if (len != strnlen(f->comm, TCPTAP_COMM_LEN) || memcmp(ev->comm, f->comm, len) != 0)
			return false;
	}
	if (f->has_port && ev->sport != f->port && ev->dport != f->port)
		return false;
	if (f->family != 0 && ev->family != f->family)
		return false;
	if (f->has_netns && ev->netns != f->netns)
		return false;
	if (f->has_cgroup && ev->cgroup != f->cgroup)
		return false;
	return true;
}
