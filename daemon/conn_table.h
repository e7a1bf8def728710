/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_CONN_TABLE_H
#define TCPTAP_CONN_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Live connections keyed by socket cookie, each stored as the record that
 * introduced it (connect, accept or start-up seed). */
struct conn_table;

enum conn_table_verdict {
	CONN_TABLE_PUBLISH = 0,		/* the record belongs in the stream */
	CONN_TABLE_DROP_DUPLICATE = 1,	/* introduction of a cookie already live */
	CONN_TABLE_DROP_ORPHAN = 2,	/* close of a cookie never introduced */
};

struct conn_table_stats {
	uint64_t entries;
	uint64_t max_entries;
	uint64_t full;			/* introductions not stored because the table was full */
	uint64_t duplicates;
	uint64_t orphans;
};

int conn_table_new(size_t max_entries, struct conn_table **ret_table);
void conn_table_free(struct conn_table *t);

/* Apply a released record: connect/accept insert, close removes. Returns an
 * enum conn_table_verdict. Other record types are always CONN_TABLE_PUBLISH. */
int conn_table_apply(struct conn_table *t, const struct record *r);

/* Insert a connection found by the start-up dump (origin SEEDED). Returns
 * -EEXIST if the cookie is live, -ENOSPC if the table is full. */
int conn_table_seed(struct conn_table *t, const struct record *r);

const struct record *conn_table_lookup(const struct conn_table *t, uint64_t cookie);

typedef void (*conn_table_visit_fn)(const struct record *r, void *userdata);
void conn_table_foreach(const struct conn_table *t, conn_table_visit_fn visit, void *userdata);

void conn_table_get_stats(const struct conn_table *t, struct conn_table_stats *ret_stats);

#endif /* TCPTAP_CONN_TABLE_H */
