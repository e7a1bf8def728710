// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

/*
 * libFuzzer target for the request parser: every input is one request line.
 * Beyond the sanitizers it checks the parser's contract: the result is 0 or
 * -EINVAL (-ENOMEM is tolerated), a failure leaves the request untouched and
 * sets a one-line message without control bytes, and a parsed filter can be
 * applied to records of every kind.
 */

static void check_message(const char *err, size_t size)
{
	size_t len = strnlen(err, size);

	if (len == 0 || len == size)
		abort();
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			abort();
}

static void apply_filter(const struct record_filter *f, const uint8_t *data, size_t size)
{
	static const uint8_t types[] = {
		TCPTAP_EV_CONNECT, TCPTAP_EV_ACCEPT, TCPTAP_EV_CLOSE, TCPTAP_EV_CONNECT_FAILED,
		RECORD_LOST,
	};
	struct record r = { .seq = 1 };

	/* Fill the event from the input too, so comm, ports and ids vary. */
	memcpy(&r.ev, data, size < sizeof(r.ev) ? size : sizeof(r.ev));
	for (size_t i = 0; i < sizeof(types); i++) {
		for (uint8_t origin = RECORD_ORIGIN_NONE; origin <= RECORD_ORIGIN_SEEDED; origin++) {
			r.ev.type = types[i];
			r.origin = origin;
			if (!record_filter_match(f, &r) && types[i] == RECORD_LOST)
				abort();	/* lost records pass every filter */
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client_request req, before;
	char err[256];
	int r;

	memset(&req, 0x5a, sizeof(req));
	before = req;
	err[0] = '\0';

	r = request_parse((const char *)data, size, &req, err, sizeof(err));
	if (r == 0) {
		if (req.command > REQUEST_STATS)
			abort();
		if (req.has_resume && req.command != REQUEST_SUBSCRIBE)
			abort();
		apply_filter(&req.filter, data, size);
	} else if (r == -EINVAL) {
		if (memcmp(&req, &before, sizeof(req)) != 0)
			abort();
		check_message(err, sizeof(err));
	} else if (r != -ENOMEM) {
		abort();
	}
	return 0;
}
