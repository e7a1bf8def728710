// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "text_output.h"

static bool text_is_control(char c)
{
	return (unsigned char) c < 0x20 || c == 0x7f;
}

const char *text_sanitize(const char *s, char *buf, size_t size)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < size; i++)
		buf[i] = text_is_control(s[i]) ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

/* Print text padded with blanks to width, replacing control characters like text_sanitize(). */
static void text_print_cell(const char *text, int width, bool right_align)
{
	int len = strlen(text);
	int padding = width > len ? width - len : 0;

	if (right_align)
		printf("%*s", padding, "");
	for (const char *p = text; *p; p++)
		putchar(text_is_control(*p) ? '?' : *p);
	if (!right_align)
		printf("%*s", padding, "");
}

/* Text of a value that fits one cell: strings bare, null as "-", anything else as JSON. */
static const char *text_format_value(struct json_object *v)
{
	if (!v)
		return "-";
	if (json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
}

static bool json_is_nested(struct json_object *v)
{
	return json_object_is_type(v, json_type_array) || json_object_is_type(v, json_type_object);
}

static bool json_array_of_objects(struct json_object *v)
{
	size_t n;

	if (!json_object_is_type(v, json_type_array))
		return false;
	n = json_object_array_length(v);
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_object))
			return false;
	return true;
}

static bool json_array_of_scalars(struct json_object *v)
{
	size_t n;

	if (!json_object_is_type(v, json_type_array))
		return false;
	n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++)
		if (json_is_nested(json_object_array_get_idx(v, i)))
			return false;
	return true;
}

/* Columns of a table: the keys of all rows, in the order of their first appearance. */
struct text_columns {
	const char **keys;	/* owned by the rows' objects */
	int *widths;
	bool *numeric;		/* every value in the column is a number: align it right */
	size_t count;
};

static void text_columns_free(struct text_columns *columns)
{
	free(columns->keys);
	free(columns->widths);
	free(columns->numeric);
}

/* Return the column of key, adding one if key is new. The arrays have room for every key. */
static size_t text_columns_find(struct text_columns *columns, const char *key)
{
	size_t c;

	for (c = 0; c < columns->count; c++)
		if (strcmp(columns->keys[c], key) == 0)
			return c;

	columns->keys[c] = key;
	columns->widths[c] = strlen(key);
	columns->numeric[c] = true;
	columns->count++;
	return c;
}

static int text_columns_collect(struct json_object *rows, struct text_columns *ret_columns)
{
	struct text_columns columns = {};
	size_t n = json_object_array_length(rows), max = 1;

	/* There are at most as many columns as keys in all rows together. */
	for (size_t i = 0; i < n; i++)
		max += json_object_object_length(json_object_array_get_idx(rows, i));

	columns.keys = calloc(max, sizeof(*columns.keys));
	columns.widths = calloc(max, sizeof(*columns.widths));
	columns.numeric = calloc(max, sizeof(*columns.numeric));
	if (!columns.keys || !columns.widths || !columns.numeric) {
		text_columns_free(&columns);
		return -ENOMEM;
	}

	for (size_t i = 0; i < n; i++) {
		json_object_object_foreach(json_object_array_get_idx(rows, i), key, value) {
			size_t c = text_columns_find(&columns, key);
			int len = strlen(text_format_value(value));

			if (columns.widths[c] < len)
				columns.widths[c] = len;
			if (!json_object_is_type(value, json_type_int) &&
			    !json_object_is_type(value, json_type_double))
				columns.numeric[c] = false;
		}
	}

	*ret_columns = columns;
	return 0;
}

/* Print cell c of a table row: numbers right-aligned, text left-aligned, no trailing blanks. */
static void text_print_table_cell(const struct text_columns *columns, size_t c, const char *text)
{
	bool last = c + 1 == columns->count;
	int width = last && !columns->numeric[c] ? 0 : columns->widths[c];

	text_print_cell(text, width, columns->numeric[c]);
	printf(last ? "\n" : "  ");
}

/* Print an array of objects, such as per-CPU counters, as a table with one row per element. */
static int text_print_table(struct json_object *rows, int indent)
{
	size_t n = json_object_array_length(rows);
	struct text_columns columns;
	int r;

	r = text_columns_collect(rows, &columns);
	if (r < 0)
		return r;

	printf("%*s", indent, "");
	for (size_t c = 0; c < columns.count; c++)
		text_print_table_cell(&columns, c, columns.keys[c]);

	for (size_t i = 0; i < n; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);

		printf("%*s", indent, "");
		for (size_t c = 0; c < columns.count; c++) {
			struct json_object *value = NULL;

			json_object_object_get_ex(row, columns.keys[c], &value);
			text_print_table_cell(&columns, c, text_format_value(value));
		}
	}

	text_columns_free(&columns);
	return 0;
}

/* Print a value that fits the rest of the key's line: a scalar, or a list of scalars. */
static void text_print_inline(struct json_object *value)
{
	size_t n;

	if (!json_array_of_scalars(value)) {
		text_print_cell(json_object_is_type(value, json_type_object) ? "-" :
				text_format_value(value), 0, false);
		putchar('\n');
		return;
	}

	n = json_object_array_length(value);
	if (n == 0)
		putchar('-');
	for (size_t i = 0; i < n; i++) {
		text_print_cell(text_format_value(json_object_array_get_idx(value, i)), 0, false);
		if (i + 1 < n)
			printf(", ");
	}
	putchar('\n');
}

int text_print_object(struct json_object *obj, int indent, bool skip_type)
{
	int key_width = 0, r = 0;

	json_object_object_foreach(obj, name, unused) {
		(void) unused;
		if (key_width < (int) strlen(name))
			key_width = strlen(name);
	}

	json_object_object_foreach(obj, key, value) {
		if (skip_type && strcmp(key, "type") == 0)
			continue;

		printf("%*s", indent, "");
		text_print_cell(key, 0, false);
		putchar(':');

		if (json_object_is_type(value, json_type_object) &&
		    json_object_object_length(value) > 0) {
			putchar('\n');
			r = text_print_object(value, indent + 2, false);
		} else if (json_array_of_objects(value)) {
			putchar('\n');
			r = text_print_table(value, indent + 2);
		} else {
			/* Align the values of one object in a column after the longest key. */
			printf("%*s", key_width - (int) strlen(key) + 1, "");
			text_print_inline(value);
		}
		if (r < 0)
			return r;
	}
	return 0;
}
