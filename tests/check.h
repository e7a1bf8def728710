/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_TESTS_CHECK_H
#define TCPTAP_TESTS_CHECK_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Assertions for the unit tests: a failed check prints where, what was
 * expected and what came out, then aborts. */

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define CHECK_EQ(expected, actual)                                                        \
	do {                                                                              \
		int64_t e_ = (int64_t)(expected), a_ = (int64_t)(actual);                 \
		if (e_ != a_) {                                                           \
			fprintf(stderr, "%s:%d: %s: expected %" PRId64 ", got %" PRId64 "\n", \
				__FILE__, __LINE__, #actual, e_, a_);                     \
			abort();                                                          \
		}                                                                         \
	} while (0)

#endif /* TCPTAP_TESTS_CHECK_H */
