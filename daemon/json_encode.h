/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_JSON_ENCODE_H
#define TCPTAP_JSON_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Bytes one encoded record line (with its '\n') can take at most. */
#define JSON_RECORD_MAX_BYTES 640

/* Encode a published record (connect, accept, close, connect_failed, lost) as
 * one JSON object followed by '\n', without a terminating NUL. Returns the
 * length written, -ENOSPC if size is too small, or -EINVAL for a type or
 * family that has no wire name. */
int json_encode_record(const struct record *r, char *buf, size_t size);

/* Encode a connection table entry as a "snapshot" line, like json_encode_record().
 * Returns -EINVAL if r->origin is RECORD_ORIGIN_NONE. */
int json_encode_snapshot(const struct record *r, char *buf, size_t size);

struct hello_info {
	unsigned int protocol;
	const char *version;
	const char *backend;
	unsigned int ncpus;
	const char *boot_id;
	const char *run_id;		/* random per daemon run; resume is valid only within one */
	uint64_t snapshot_seq;		/* the stream position the snapshot reflects */
	int resumed;			/* -1 not requested, 0 rejected, 1 accepted */
	const char *resume_error;	/* why a resume was rejected, or NULL */
};

/* The following return a malloc'd line ending in '\n', or NULL on ENOMEM. */
char *json_encode_hello(const struct hello_info *h);
char *json_encode_snapshot_end(uint64_t seq, uint64_t count);
char *json_encode_error(const char *code, const char *message);
char *json_encode_overflow(uint64_t queued_bytes, uint64_t limit_bytes, uint64_t last_seq_sent,
			   uint64_t newest_seq);

/* Names used on the wire; NULL for a value without one. An errno without a
 * name is encoded as "E<decimal value>". */
const char *json_type_name(unsigned int type);
const char *json_family_name(unsigned int family);
const char *json_origin_name(unsigned int origin);
const char *json_errno_name(int error);

#endif /* TCPTAP_JSON_ENCODE_H */
