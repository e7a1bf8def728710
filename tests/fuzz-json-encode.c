// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_encode.h"

/*
 * libFuzzer target for the record encoder: the input is a raw struct
 * tcptap_event (as a hostile or buggy BPF side could produce) plus the
 * record fields. Every line the encoder accepts must be one strict,
 * valid-UTF-8 JSON object ending in '\n', within JSON_RECORD_MAX_BYTES.
 * A buffer of exactly the line's length must get the same line, and one a
 * byte shorter -ENOSPC. The buffers are heap blocks of exactly their size,
 * so AddressSanitizer reports any write past them.
 */

static void check_line(const char *buf, int len)
{
	struct json_tokener *tok;
	struct json_object *obj;

	if (len <= 0 || len > JSON_RECORD_MAX_BYTES || buf[len - 1] != '\n')
		abort();
	if (memchr(buf, '\n', (size_t)len - 1) || memchr(buf, '\0', (size_t)len))
		abort();

	tok = json_tokener_new();
	if (!tok)
		return;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, buf, len - 1);
	if (!obj || json_tokener_get_parse_end(tok) != (size_t)len - 1 ||
	    !json_object_is_type(obj, json_type_object))
		abort();
	json_object_put(obj);
	json_tokener_free(tok);
}

/* Encode r into a JSON_RECORD_MAX_BYTES buffer, then into buffers of the line's
 * length and one byte less, which take the encoder's path for small buffers. */
static void check_encoder(int (*encode)(const struct record *r, char *buf, size_t size),
			  const struct record *r)
{
	char *buf = malloc(JSON_RECORD_MAX_BYTES), *exact, *short_buf;
	int len;

	if (!buf)
		return;
	len = encode(r, buf, JSON_RECORD_MAX_BYTES);
	if (len == -EINVAL) {
		free(buf);
		return;
	}
	check_line(buf, len);

	exact = malloc((size_t)len);
	short_buf = malloc((size_t)len - 1);
	if (exact && short_buf) {
		if (encode(r, exact, (size_t)len) != len || memcmp(exact, buf, (size_t)len) != 0)
			abort();
		if (encode(r, short_buf, (size_t)len - 1) != -ENOSPC)
			abort();
	}
	free(short_buf);
	free(exact);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct record r = { 0 };

	if (size < sizeof(r.ev) + 10)
		return 0;
	memcpy(&r.ev, data, sizeof(r.ev));
	memcpy(&r.seq, data + sizeof(r.ev), sizeof(r.seq));
	r.late = data[sizeof(r.ev) + 8] & 1;
	r.origin = data[sizeof(r.ev) + 9] & 3;
	/* Steer half the inputs to publishable types so the full path runs. */
	if (r.ev.type & 0x80)
		r.ev.type = (uint8_t)(TCPTAP_EV_CONNECT + (r.ev.type & 3));
	if (r.ev.family & 0x80)
		r.ev.family = (r.ev.family & 1) ? TCPTAP_FAMILY_INET6 : TCPTAP_FAMILY_INET;

	check_encoder(json_encode_record, &r);
	check_encoder(json_encode_snapshot, &r);
	return 0;
}
