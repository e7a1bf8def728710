// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdlib.h>

#include "cookie_set.h"

#define COOKIE_SET_INITIAL_CAPACITY 256

int cookie_set_add(struct cookie_set *set, uint64_t cookie)
{
	if (set->count == set->capacity) {
		size_t capacity = set->capacity ? set->capacity * 2 : COOKIE_SET_INITIAL_CAPACITY;
		uint64_t *items = realloc(set->items, capacity * sizeof(*items));

		if (!items)
			return -ENOMEM;
		set->items = items;
		set->capacity = capacity;
	}
	set->items[set->count++] = cookie;
	return 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

void cookie_set_sort(struct cookie_set *set)
{
	if (set->count > 1)
		qsort(set->items, set->count, sizeof(*set->items), compare_u64);
}

bool cookie_set_contains(const struct cookie_set *set, uint64_t cookie)
{
	size_t lo = 0, hi = set->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (set->items[mid] == cookie)
			return true;
		if (set->items[mid] < cookie)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

void cookie_set_clear(struct cookie_set *set)
{
	free(set->items);
	*set = (struct cookie_set){ 0 };
}
