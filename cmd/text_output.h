/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_TEXT_OUTPUT_H
#define TCPTAP_TEXT_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

/*
 * Copy s into buf, replacing control characters by '?', so that a process name cannot move
 * the cursor or change the terminal's state. Truncates to size - 1 bytes. Returns buf.
 */
const char *text_sanitize(const char *s, char *buf, size_t size);

/*
 * Print an object to stdout as "key: value" lines, with nested objects indented below their
 * key and arrays of objects as tables with one row per element. skip_type leaves out the
 * object's own "type" key. Returns 0 or -ENOMEM.
 */
int text_print_object(struct json_object *obj, int indent, bool skip_type);

#endif /* TCPTAP_TEXT_OUTPUT_H */
