/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_SERVER_H
#define TCPTAP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "conn_table.h"
#include "history.h"
#include "record.h"

/* The UNIX stream socket that serves newline-delimited JSON to clients. */
struct server;

struct server_config {
	size_t max_queue_bytes;		/* per client; past it the client overflows */
	size_t max_clients;		/* further connections get an error and are closed */
	uint64_t request_wait_ms;	/* how long to wait for a request line before subscribing */
	/* hello fields */
	const char *version;
	const char *backend;
	unsigned int ncpus;
	const char *boot_id;
	const char *run_id;
	/* Return a malloc'd "stats" line ending in '\n'; NULL on ENOMEM. */
	char *(*stats_json)(void *userdata);
	void *userdata;
};

struct server_stats {
	uint64_t clients;		/* connected now */
	uint64_t accepted;		/* connections accepted since start */
	uint64_t overflows;		/* clients disconnected for falling behind */
	uint64_t bad_requests;		/* clients sent an error record */
	uint64_t rejected;		/* connections refused over max_clients */
	uint64_t bytes_queued;		/* sum over clients now */
};

/*
 * listen_fd is a listening SOCK_STREAM socket. On success the server owns it
 * and sets it non-blocking; on failure the caller still owns it. cfg is copied,
 * but its strings, table and history must outlive the server.
 */
int server_new(sd_event *loop, int listen_fd, const struct server_config *cfg,
	       struct conn_table *table, struct history *history, struct server **ret_server);
/* Stop accepting and send what the clients have queued, waiting at most
 * timeout_ms for slow readers, so a clean stop does not cut a line in half
 * for a client that keeps reading. */
void server_shutdown(struct server *s, uint64_t timeout_ms);
void server_free(struct server *s);

/*
 * Fan a published record out to every subscribed client whose filter passes
 * it. The record is encoded once. Call it after the record was applied to the
 * table and appended to the history, so that a client arriving later finds it
 * in its snapshot or replay and never twice.
 */
void server_publish(struct server *s, const struct record *r);

void server_get_stats(const struct server *s, struct server_stats *ret_stats);

#endif /* TCPTAP_SERVER_H */
