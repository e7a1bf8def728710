/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_HISTORY_H
#define TCPTAP_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Bounded replay history of published records, for clients that resume. */
struct history;

int history_new(size_t max_records, struct history **ret_history);
void history_free(struct history *h);

/* Append a published record; r->seq must be larger than every seq before. */
void history_append(struct history *h, const struct record *r);

/* True if every record after seq is still held (seq may equal the newest). */
bool history_covers(const struct history *h, uint64_t seq);

typedef void (*history_visit_fn)(const struct record *r, void *userdata);
/* Visit the held records with seq > after, oldest first. Returns how many. */
size_t history_foreach_after(const struct history *h, uint64_t after, history_visit_fn visit,
			     void *userdata);

uint64_t history_oldest_seq(const struct history *h);	/* 0 if empty */
uint64_t history_newest_seq(const struct history *h);	/* 0 if empty */

#endif /* TCPTAP_HISTORY_H */
