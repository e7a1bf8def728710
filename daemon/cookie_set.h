/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_COOKIE_SET_H
#define TCPTAP_COOKIE_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable array of socket cookies, searched after cookie_set_sort(). */
struct cookie_set {
	uint64_t *items;
	size_t count;
	size_t capacity;
};

/* Returns -ENOMEM if the set could not grow; the set is unchanged then. */
int cookie_set_add(struct cookie_set *set, uint64_t cookie);
void cookie_set_sort(struct cookie_set *set);
/* Valid only after cookie_set_sort() and before the next cookie_set_add(). */
bool cookie_set_contains(const struct cookie_set *set, uint64_t cookie);
void cookie_set_clear(struct cookie_set *set);

#endif /* TCPTAP_COOKIE_SET_H */
