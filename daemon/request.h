/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_REQUEST_H
#define TCPTAP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Longest request line a client may send, '\n' excluded. */
#define REQUEST_MAX_BYTES 4096

enum request_command {
	REQUEST_SUBSCRIBE = 0,	/* hello, snapshot, snapshot_end, live records */
	REQUEST_DUMP = 1,	/* hello, snapshot, snapshot_end, then close */
	REQUEST_STATS = 2,	/* hello, one stats record, then close */
};

struct record_filter {
	uint32_t types;		/* bit (1 << type) per accepted event type; 0 = all */
	bool has_pid;
	uint32_t pid;
	bool has_comm;
	char comm[TCPTAP_COMM_LEN];
	bool has_port;
	uint16_t port;		/* matches sport or dport */
	uint8_t family;		/* TCPTAP_FAMILY_*; 0 = both */
	bool has_netns;
	uint32_t netns;
	bool has_cgroup;
	uint64_t cgroup;
};

struct client_request {
	enum request_command command;
	struct record_filter filter;
	bool has_resume;
	uint64_t resume_from;	/* the last seq the client received */
	char run_id[64];	/* run_id of the hello that seq came from; "" if absent */
};

/* Parse one request line (without '\n'); a blank line yields the defaults
 * (subscribe, no filter). On failure returns -EINVAL and puts a one-line
 * reason naming the offending field into errbuf, or returns -ENOMEM. */
int request_parse(const char *line, size_t len, struct client_request *ret_request,
		  char *errbuf, size_t errbuf_size);

/* True if r passes f. RECORD_LOST records always pass. A table entry
 * (r->origin set) is matched by its origin for the types condition: connect
 * and accept count as those types, seeded as either. Live records must carry
 * RECORD_ORIGIN_NONE so their ev.type is used. */
bool record_filter_match(const struct record_filter *f, const struct record *r);

#endif /* TCPTAP_REQUEST_H */
