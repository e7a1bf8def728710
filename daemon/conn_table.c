// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn_table.h"

/*
 * Layout: the records live densely in entries[0 .. count-1], so a visit walks
 * only live connections, and an open-addressing index of uint32 slots (entry
 * number + 1, 0 = empty) maps a cookie to its entry. The index uses linear
 * probing with backward-shift deletion, so it contains no tombstones and a
 * lookup stops at the first empty slot. Removal moves the last entry into the
 * hole and repoints its index slot.
 *
 * Both arrays grow by doubling up to max_entries; the index always has at
 * least twice as many slots as there are entries it can hold, so probe runs
 * stay short. Insertions and removals allocate only when an array doubles.
 */

#define CONN_TABLE_MIN_ENTRIES 256

struct conn_table {
	struct record *entries;
	size_t count;
	size_t capacity;	/* entries allocated */
	size_t max_entries;

	uint32_t *index;
	size_t index_mask;	/* index slots - 1, a power of two minus one */

	/* A connect or accept was published without being stored, so a close of
	 * an unknown cookie may belong to it and must be published too. */
	bool refused_published;

	uint64_t full;
	uint64_t duplicates;
	uint64_t orphans;
};

/* The 64-bit finalizer of splitmix64: cookies are sequential counters, and this
 * spreads neighbouring values over the whole index. */
static size_t conn_table_hash(uint64_t cookie)
{
	cookie ^= cookie >> 30;
	cookie *= 0xbf58476d1ce4e5b9ULL;
	cookie ^= cookie >> 27;
	cookie *= 0x94d049bb133111ebULL;
	cookie ^= cookie >> 31;
	return (size_t)cookie;
}

static size_t conn_table_index_slots(size_t capacity)
{
	size_t slots = 1;

	while (slots < capacity * 2)
		slots <<= 1;
	return slots;
}

/* Return the index slot holding cookie, or the empty slot where it would go. */
static size_t conn_table_find_slot(const struct conn_table *t, uint64_t cookie)
{
	size_t slot = conn_table_hash(cookie) & t->index_mask;

	while (t->index[slot] != 0 && t->entries[t->index[slot] - 1].ev.cookie != cookie)
		slot = (slot + 1) & t->index_mask;
	return slot;
}

static int conn_table_rebuild_index(struct conn_table *t, size_t slots)
{
	uint32_t *index;

	index = calloc(slots, sizeof(*index));
	if (!index)
		return -ENOMEM;

	free(t->index);
	t->index = index;
	t->index_mask = slots - 1;
	for (size_t i = 0; i < t->count; i++)
		t->index[conn_table_find_slot(t, t->entries[i].ev.cookie)] = (uint32_t)(i + 1);
	return 0;
}

static int conn_table_grow(struct conn_table *t)
{
	struct record *entries;
	size_t capacity;
	int r;

	capacity = t->capacity * 2;
	if (capacity > t->max_entries)
		capacity = t->max_entries;

	entries = reallocarray(t->entries, capacity, sizeof(*entries));
	if (!entries)
		return -ENOMEM;
	t->entries = entries;

	r = conn_table_rebuild_index(t, conn_table_index_slots(capacity));
	if (r < 0)
		return r;

	t->capacity = capacity;
	return 0;
}

int conn_table_new(size_t max_entries, struct conn_table **ret_table)
{
	struct conn_table *t;
	size_t capacity;

	/* Index slots store entry number + 1 in a uint32_t. */
	if (max_entries == 0 || max_entries >= UINT32_MAX / 4)
		return -EINVAL;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;

	capacity = max_entries < CONN_TABLE_MIN_ENTRIES ? max_entries : CONN_TABLE_MIN_ENTRIES;
	t->max_entries = max_entries;
	t->entries = calloc(capacity, sizeof(*t->entries));
	if (!t->entries || conn_table_rebuild_index(t, conn_table_index_slots(capacity)) < 0) {
		conn_table_free(t);
		return -ENOMEM;
	}
	t->capacity = capacity;

	*ret_table = t;
	return 0;
}

void conn_table_free(struct conn_table *t)
{
	if (!t)
		return;
	free(t->entries);
	free(t->index);
	free(t);
}

static const struct record *conn_table_slot_record(const struct conn_table *t, size_t slot)
{
	return t->index[slot] ? &t->entries[t->index[slot] - 1] : NULL;
}

const struct record *conn_table_lookup(const struct conn_table *t, uint64_t cookie)
{
	return conn_table_slot_record(t, conn_table_find_slot(t, cookie));
}

/*
 * Store r under its cookie with the given origin. Returns -EEXIST if the
 * cookie is live, -ENOSPC at max_entries, -ENOMEM if growing failed.
 */
static int conn_table_insert(struct conn_table *t, const struct record *r, uint8_t origin)
{
	size_t slot;
	int ret;

	slot = conn_table_find_slot(t, r->ev.cookie);
	if (t->index[slot] != 0)
		return -EEXIST;

	if (t->count == t->max_entries)
		return -ENOSPC;

	if (t->count == t->capacity) {
		ret = conn_table_grow(t);
		if (ret < 0)
			return ret;
		slot = conn_table_find_slot(t, r->ev.cookie);
	}

	t->entries[t->count] = *r;
	t->entries[t->count].origin = origin;
	t->count++;
	t->index[slot] = (uint32_t)t->count;
	return 0;
}

/* Empty index slot hole by shifting back the entries of its probe run that
 * would no longer be reachable across it. */
static void conn_table_index_delete(struct conn_table *t, size_t hole)
{
	size_t slot = hole;

	t->index[hole] = 0;
	for (;;) {
		size_t home;

		slot = (slot + 1) & t->index_mask;
		if (t->index[slot] == 0)
			return;

		home = conn_table_hash(t->entries[t->index[slot] - 1].ev.cookie) & t->index_mask;
		/* The entry may move into the hole unless its home lies
		 * cyclically in (hole, slot]. */
		if (((slot - home) & t->index_mask) >= ((slot - hole) & t->index_mask)) {
			t->index[hole] = t->index[slot];
			t->index[slot] = 0;
			hole = slot;
		}
	}
}

static void conn_table_remove_slot(struct conn_table *t, size_t slot)
{
	size_t victim = t->index[slot] - 1;
	size_t last = t->count - 1;

	conn_table_index_delete(t, slot);

	if (victim != last) {
		t->entries[victim] = t->entries[last];
		t->index[conn_table_find_slot(t, t->entries[victim].ev.cookie)] =
			(uint32_t)(victim + 1);
	}
	t->count--;
}

static int conn_table_introduce(struct conn_table *t, const struct record *r, uint8_t origin)
{
	int ret;

	ret = conn_table_insert(t, r, origin);
	if (ret == -EEXIST) {
		t->duplicates++;
		return CONN_TABLE_DROP_DUPLICATE;
	}
	if (ret < 0) {
		/* Full, or out of memory while growing. The introduction is
		 * still true and goes out, but the table cannot store it. */
		t->full++;
		t->refused_published = true;
	}
	return CONN_TABLE_PUBLISH;
}

static int conn_table_close(struct conn_table *t, const struct record *r)
{
	size_t slot;

	slot = conn_table_find_slot(t, r->ev.cookie);
	if (t->index[slot] != 0) {
		conn_table_remove_slot(t, slot);
		return CONN_TABLE_PUBLISH;
	}

	if (t->refused_published)
		return CONN_TABLE_PUBLISH;

	t->orphans++;
	return CONN_TABLE_DROP_ORPHAN;
}

int conn_table_apply(struct conn_table *t, const struct record *r)
{
	switch (r->ev.type) {
	case TCPTAP_EV_CONNECT:
		return conn_table_introduce(t, r, RECORD_ORIGIN_CONNECT);
	case TCPTAP_EV_ACCEPT:
		return conn_table_introduce(t, r, RECORD_ORIGIN_ACCEPT);
	case TCPTAP_EV_CLOSE:
		return conn_table_close(t, r);
	default:
		return CONN_TABLE_PUBLISH;
	}
}

int conn_table_seed(struct conn_table *t, const struct record *r)
{
	int ret;

	ret = conn_table_insert(t, r, RECORD_ORIGIN_SEEDED);
	/* A seed that did not fit was never shown to any client. Unlike a
	 * rejected connect or accept, it leaves unknown closes orphans, so its
	 * close is dropped. */
	if (ret == -ENOSPC || ret == -ENOMEM)
		t->full++;
	return ret;
}

void conn_table_foreach(const struct conn_table *t, conn_table_visit_fn visit, void *userdata)
{
	for (size_t i = 0; i < t->count; i++)
		visit(&t->entries[i], userdata);
}

void conn_table_get_stats(const struct conn_table *t, struct conn_table_stats *ret_stats)
{
	*ret_stats = (struct conn_table_stats){
		.entries = t->count,
		.max_entries = t->max_entries,
		.full = t->full,
		.duplicates = t->duplicates,
		.orphans = t->orphans,
	};
}
