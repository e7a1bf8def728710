// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "json_encode.h"
#include "log.h"
#include "out_queue.h"
#include "request.h"
#include "server.h"

/*
 * A client connects, may send one request line, and then gets a prefix
 * followed by live records. The prefix is hello plus a snapshot of the
 * connection table, or hello plus the records it missed from the replay
 * history.
 *
 * Output goes through two byte queues. The front queue carries hello, the
 * prefix and one-off replies. The live queue carries the records published
 * after the prefix was taken, and is sent only once the prefix is out.
 *
 * The prefix is copied as records when the request is handled, so it matches
 * the stream position that hello and snapshot_end state. It is encoded into
 * the front queue in chunks of SERVER_PREFIX_CHUNK_BYTES as the socket drains.
 * So a snapshot larger than max_queue_bytes is delivered whole, and until it is
 * sent it costs sizeof(struct record) per entry instead of its encoded size.
 * Only the live queue counts against max_queue_bytes, because only it grows
 * with the rate of events.
 */

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL

/* Version of the wire protocol in hello. */
#define SERVER_PROTOCOL_VERSION 1

/* Connections accepted per wakeup of the listening socket. */
#define SERVER_ACCEPT_BATCH 64
/* Pause before accepting again after running out of file descriptors or memory. */
#define SERVER_ACCEPT_PAUSE_USEC (100 * USEC_PER_MSEC)
/* Time a disconnecting client gets to read the error or overflow record. */
#define SERVER_CLOSE_GRACE_USEC (1 * USEC_PER_SEC)
/* Input read and thrown away per wakeup once the request line is handled. */
#define SERVER_DISCARD_MAX_BYTES (64 * 1024)
/* The prefix is encoded into the front queue up to about this many bytes at a time. */
#define SERVER_PREFIX_CHUNK_BYTES (64 * 1024)
/*
 * Live records are sent at the end of the loop iteration that published them,
 * so a burst goes out in few sendmsg() calls. They are sent at once when this
 * many bytes wait, so that a burst larger than max_queue_bytes spills into the
 * socket buffer instead of overflowing a client that reads fast.
 */
#define SERVER_FLUSH_BATCH_BYTES (16 * 1024)
/* sendmsg() calls per flush before yielding to other event sources. */
#define SERVER_SEND_ROUNDS 8
/* Timer slack for the request wait and the close grace period. */
#define SERVER_TIMER_ACCURACY_USEC (1 * USEC_PER_MSEC)

enum client_state {
	CLIENT_AWAIT_REQUEST,
	CLIENT_STREAMING,	/* prefix, then live records (subscribe) or close (dump) */
	CLIENT_CLOSING,		/* send what is queued, then disconnect */
};

struct client {
	struct server *server;
	struct client *prev;
	struct client *next;
	unsigned int id;
	int fd;
	enum client_state state;
	enum request_command command;
	struct record_filter filter;

	sd_event_source *io;
	sd_event_source *timer;	/* request wait, then the close grace period */

	char *request;		/* REQUEST_MAX_BYTES + 1 bytes while awaiting the request */
	size_t request_len;

	/* Records still to be encoded into the front queue. */
	struct record *prefix;
	size_t prefix_count;
	size_t prefix_next;
	bool prefix_active;	/* until the prefix and its trailer are queued */
	bool prefix_is_snapshot;
	uint64_t snapshot_seq;
	uint64_t snapshot_count;

	struct out_queue front;
	struct out_queue live;
	uint64_t last_seq_sent;	/* seq of the newest line fully sent */

	bool read_eof;		/* the client shut down its sending side */
	bool blocked;		/* the socket buffer is full, wait for EPOLLOUT */
	bool flush_pending;	/* queued for the flush event source */
};

struct server {
	sd_event *loop;
	int listen_fd;
	struct server_config cfg;
	struct conn_table *table;
	struct history *history;

	sd_event_source *listen_source;
	sd_event_source *accept_pause;
	sd_event_source *flush_source;

	struct client *clients;
	unsigned int next_client_id;
	uint64_t last_seq;

	size_t flush_batch_bytes;	/* live bytes that trigger an immediate flush */

	struct server_stats stats;
	struct ratelimit overflow_ratelimit;
	struct ratelimit error_ratelimit;
};

static uint64_t server_now_ns(const struct server *s)
{
	uint64_t usec;

	if (sd_event_now(s->loop, CLOCK_MONOTONIC, &usec) < 0)
		return 0;
	return usec * 1000;
}

static void client_free(struct client *c)
{
	struct server *s;

	if (!c)
		return;

	s = c->server;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->stats.clients--;

	sd_event_source_disable_unref(c->io);
	sd_event_source_disable_unref(c->timer);
	if (c->fd >= 0)
		(void)close(c->fd);

	free(c->request);
	free(c->prefix);
	out_queue_clear(&c->front);
	out_queue_clear(&c->live);
	free(c);
}

static void client_update_events(struct client *c)
{
	uint32_t events = 0;
	int r;

	if (c->state != CLIENT_CLOSING && !c->read_eof)
		events |= EPOLLIN;
	if (c->blocked)
		events |= EPOLLOUT;

	r = sd_event_source_set_io_events(c->io, events);
	if (r < 0)
		log_debug("Failed to set poll events of client %u: %s", c->id, strerror(-r));
}

static void client_schedule_flush(struct client *c)
{
	int r;

	if (c->blocked || c->flush_pending)
		return;

	c->flush_pending = true;
	r = sd_event_source_set_enabled(c->server->flush_source, SD_EVENT_ONESHOT);
	if (r < 0)
		log_debug("Failed to schedule a flush for client %u: %s", c->id, strerror(-r));
}

static int client_on_close_grace(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct client *c = userdata;

	log_debug("Client %u did not read its last record within %llu ms, disconnecting", c->id,
		  (unsigned long long)(SERVER_CLOSE_GRACE_USEC / USEC_PER_MSEC));
	client_free(c);
	return 0;
}

/*
 * Stop queueing new output and disconnect once the queues are sent. With grace
 * set, a client that does not read within SERVER_CLOSE_GRACE_USEC is cut off.
 * Without it, a dump or stats client may read as slowly as it likes.
 */
static void client_begin_close(struct client *c, bool grace)
{
	int r;

	c->state = CLIENT_CLOSING;
	c->timer = sd_event_source_disable_unref(c->timer);
	if (grace) {
		r = sd_event_add_time_relative(c->server->loop, &c->timer, CLOCK_MONOTONIC,
					       SERVER_CLOSE_GRACE_USEC, SERVER_TIMER_ACCURACY_USEC,
					       client_on_close_grace, c);
		if (r < 0)
			log_debug("Failed to arm the close timer of client %u: %s", c->id,
				  strerror(-r));
	}
	client_update_events(c);
	client_schedule_flush(c);
}

/*
 * Read and drop what the client sent, at most SERVER_DISCARD_MAX_BYTES.
 * Returns 0, or -errno if the connection failed.
 */
static int client_discard_input(struct client *c)
{
	char buf[4096];
	size_t total = 0;

	while (total < SERVER_DISCARD_MAX_BYTES) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		if (n == 0) {
			c->read_eof = true;
			return 0;
		}
		total += (size_t)n;
	}
	return 0;
}

/*
 * Disconnect a client whose queues are sent. Unread input is drained first
 * because closing an AF_UNIX socket with data in its receive queue makes the
 * peer's next read fail with ECONNRESET instead of returning end of file.
 */
static void client_finish(struct client *c)
{
	(void)client_discard_input(c);
	(void)shutdown(c->fd, SHUT_RDWR);
	log_debug("Client %u: all output sent, disconnecting", c->id);
	client_free(c);
}

static void client_queue_failed(struct client *c, int error)
{
	log_debug("Failed to queue output for client %u: %s, disconnecting", c->id,
		  strerror(-error));
}

/* Queue a one-off line (hello, error, stats) in front of everything else. */
static int client_queue_front(struct client *c, char *line)
{
	int r;

	if (!line)
		return -ENOMEM;
	r = out_queue_append(&c->front, line, strlen(line), 0);
	free(line);
	return r;
}

struct prefix_copy {
	struct record *records;
	size_t count;
	size_t max;
	const struct record_filter *filter;
};

static void prefix_copy_visit(const struct record *r, void *userdata)
{
	struct prefix_copy *p = userdata;

	if (p->count < p->max && record_filter_match(p->filter, r))
		p->records[p->count++] = *r;
}

static void prefix_count_visit(const struct record *r, void *userdata)
{
	struct prefix_copy *p = userdata;

	if (record_filter_match(p->filter, r))
		p->max++;
}

/* Copy the table entries that pass the client's filter. */
static int client_copy_snapshot(struct client *c)
{
	struct server *s = c->server;
	struct prefix_copy p = { .filter = &c->filter };
	struct conn_table_stats st;

	conn_table_get_stats(s->table, &st);
	if (st.entries > 0) {
		p.records = malloc(st.entries * sizeof(*p.records));
		if (!p.records)
			return -ENOMEM;
		p.max = st.entries;
		conn_table_foreach(s->table, prefix_copy_visit, &p);
	}

	c->prefix = p.records;
	c->prefix_count = p.count;
	c->prefix_next = 0;
	c->prefix_is_snapshot = true;
	c->prefix_active = true;
	c->snapshot_seq = s->last_seq;
	c->snapshot_count = p.count;
	return 0;
}

/* Copy the history records after seq that pass the client's filter. */
static int client_copy_replay(struct client *c, uint64_t seq)
{
	struct server *s = c->server;
	struct prefix_copy p = { .filter = &c->filter };

	(void)history_foreach_after(s->history, seq, prefix_count_visit, &p);
	if (p.max > 0) {
		p.records = malloc(p.max * sizeof(*p.records));
		if (!p.records)
			return -ENOMEM;
		(void)history_foreach_after(s->history, seq, prefix_copy_visit, &p);
	}

	c->prefix = p.records;
	c->prefix_count = p.count;
	c->prefix_next = 0;
	c->prefix_is_snapshot = false;
	c->prefix_active = true;
	c->last_seq_sent = seq;
	return 0;
}

static void client_drop_prefix(struct client *c)
{
	free(c->prefix);
	c->prefix = NULL;
	c->prefix_count = c->prefix_next = 0;
	c->prefix_active = false;
}

static void server_log_encode_failure(struct server *s, const struct record *r, int error)
{
	uint64_t suppressed = 0;

	if (!ratelimit_allow(&s->error_ratelimit, server_now_ns(s), &suppressed))
		return;
	if (suppressed > 0)
		log_warning("Suppressed %" PRIu64 " messages about records that failed to encode",
			    suppressed);
	log_warning("Failed to encode record seq %" PRIu64 " (type %u): %s, not sent", r->seq,
		    (unsigned int)r->ev.type, strerror(-error));
}

/* Queue the snapshot_end line, or nothing for a replay. */
static int client_queue_prefix_trailer(struct client *c)
{
	char *line;
	int r;

	if (!c->prefix_is_snapshot)
		return 0;

	line = json_encode_snapshot_end(c->snapshot_seq, c->snapshot_count);
	if (!line)
		return -ENOMEM;
	r = out_queue_append(&c->front, line, strlen(line), c->snapshot_seq);
	free(line);
	return r;
}

/*
 * Encode the next chunk of the prefix into the front queue. After the last
 * record, queue the trailer, then either let the live queue follow (subscribe)
 * or start closing (dump).
 */
static int client_fill_prefix(struct client *c)
{
	char buf[JSON_RECORD_MAX_BYTES];
	int r;

	while (c->prefix_next < c->prefix_count &&
	       out_queue_unsent(&c->front) < SERVER_PREFIX_CHUNK_BYTES) {
		const struct record *rec = &c->prefix[c->prefix_next++];
		int n;

		if (c->prefix_is_snapshot)
			n = json_encode_snapshot(rec, buf, sizeof(buf));
		else
			n = json_encode_record(rec, buf, sizeof(buf));
		if (n < 0) {
			server_log_encode_failure(c->server, rec, n);
			continue;
		}

		r = out_queue_append(&c->front, buf, (size_t)n,
				     c->prefix_is_snapshot ? 0 : rec->seq);
		if (r < 0)
			return r;
	}
	if (c->prefix_next < c->prefix_count)
		return 0;

	r = client_queue_prefix_trailer(c);
	if (r < 0)
		return r;
	client_drop_prefix(c);

	if (c->command == REQUEST_DUMP)
		client_begin_close(c, false);
	return 0;
}

static bool client_has_output(const struct client *c)
{
	return out_queue_unsent(&c->front) > 0 || c->prefix_active ||
	       out_queue_unsent(&c->live) > 0;
}

/* Account n bytes sent: the front queue goes out before the live queue. */
static void client_consume(struct client *c, size_t n)
{
	size_t from_front = out_queue_unsent(&c->front);

	if (from_front > n)
		from_front = n;
	out_queue_consume(&c->front, from_front, &c->last_seq_sent);
	out_queue_consume(&c->live, n - from_front, &c->last_seq_sent);
}

/*
 * Send as much queued output as the socket takes. Returns 0 while the client
 * stays, 1 when it is closing and everything is sent, or -errno when the
 * connection failed (EPIPE, ECONNRESET) or memory ran out.
 */
static int client_flush(struct client *c)
{
	for (unsigned int round = 0; round < SERVER_SEND_ROUNDS; round++) {
		struct iovec iov[2];
		struct msghdr msg = { .msg_iov = iov };
		size_t total = 0;
		ssize_t n;
		int r;

		if (out_queue_unsent(&c->front) == 0 && c->prefix_active) {
			r = client_fill_prefix(c);
			if (r < 0)
				return r;
		}

		if (out_queue_unsent(&c->front) > 0) {
			iov[msg.msg_iovlen++] = (struct iovec){
				.iov_base = (void *)out_queue_unsent_data(&c->front),
				.iov_len = out_queue_unsent(&c->front),
			};
			total += out_queue_unsent(&c->front);
		}
		if (!c->prefix_active && out_queue_unsent(&c->live) > 0) {
			iov[msg.msg_iovlen++] = (struct iovec){
				.iov_base = (void *)out_queue_unsent_data(&c->live),
				.iov_len = out_queue_unsent(&c->live),
			};
			total += out_queue_unsent(&c->live);
		}
		if (total == 0)
			break;

		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				c->blocked = true;
				break;
			}
			return -errno;
		}

		client_consume(c, (size_t)n);
		if ((size_t)n < total) {
			c->blocked = true;
			break;
		}
	}

	if (client_has_output(c)) {
		if (!c->blocked)
			client_schedule_flush(c);
		return 0;
	}
	return c->state == CLIENT_CLOSING ? 1 : 0;
}

/* Flush, then disconnect the client if it is done or its connection failed. */
static void client_flush_or_free(struct client *c)
{
	int r;

	r = client_flush(c);
	if (r < 0) {
		log_debug("Failed to send to client %u: %s, disconnecting", c->id, strerror(-r));
		client_free(c);
	} else if (r > 0) {
		client_finish(c);
	} else {
		client_update_events(c);
	}
}

/* Send an error record and disconnect. */
static void client_reject(struct client *c, const char *code, const char *message)
{
	int r;

	log_debug("Client %u: rejecting request (%s): %s", c->id, code, message);
	r = client_queue_front(c, json_encode_error(code, message));
	if (r < 0) {
		client_queue_failed(c, r);
		client_free(c);
		return;
	}
	client_begin_close(c, true);
}

/*
 * Encode hello. position is the seq the client's stream continues after: the
 * snapshot's seq, or resume_from when a resume was accepted.
 */
static char *server_encode_hello(const struct server *s, uint64_t position, int resumed,
				 const char *resume_error)
{
	struct hello_info h = {
		.protocol = SERVER_PROTOCOL_VERSION,
		.version = s->cfg.version,
		.backend = s->cfg.backend,
		.ncpus = s->cfg.ncpus,
		.boot_id = s->cfg.boot_id,
		.run_id = s->cfg.run_id,
		.snapshot_seq = position,
		.resumed = resumed,
		.resume_error = resume_error,
	};

	return json_encode_hello(&h);
}

/*
 * Decide whether a resume from seq can be served from the history. Returns
 * NULL if so, otherwise the reason, formatted into buf.
 */
static const char *server_check_resume(const struct server *s, const struct client_request *req,
				       char *buf, size_t size)
{
	if (strcmp(req->run_id, s->cfg.run_id) != 0) {
		snprintf(buf, size, "run_id does not match this daemon run (the daemon restarted, "
			 "or the run_id is wrong)");
		return buf;
	}
	if (req->resume_from > s->last_seq) {
		snprintf(buf, size, "seq %" PRIu64 " was never published, the newest is %" PRIu64,
			 req->resume_from, s->last_seq);
		return buf;
	}
	if (!history_covers(s->history, req->resume_from)) {
		snprintf(buf, size,
			 "seq %" PRIu64 " is no longer in the replay history, which starts at seq %"
			 PRIu64, req->resume_from, history_oldest_seq(s->history));
		return buf;
	}
	return NULL;
}

/* Queue hello and set up the prefix for subscribe and dump. */
static int client_start_stream(struct client *c, const struct client_request *req)
{
	struct server *s = c->server;
	const char *resume_error = NULL;
	char reason[256];
	uint64_t position;
	int resumed = -1;
	int r;

	if (req->has_resume) {
		resume_error = server_check_resume(s, req, reason, sizeof(reason));
		resumed = resume_error ? 0 : 1;
	}

	position = resumed == 1 ? req->resume_from : s->last_seq;
	r = client_queue_front(c, server_encode_hello(s, position, resumed, resume_error));
	if (r < 0)
		return r;

	if (resumed == 1) {
		r = client_copy_replay(c, req->resume_from);
		log_debug("Client %u resumed after seq %" PRIu64 ", replaying %zu records", c->id,
			  req->resume_from, c->prefix_count);
	} else {
		r = client_copy_snapshot(c);
		log_debug("Client %u: %s with a snapshot of %zu connections at seq %" PRIu64 "%s%s",
			  c->id, req->command == REQUEST_DUMP ? "dump" : "subscribed",
			  c->prefix_count, c->snapshot_seq,
			  resume_error ? ", resume rejected: " : "",
			  resume_error ? resume_error : "");
	}
	if (r < 0)
		return r;

	c->state = CLIENT_STREAMING;
	return 0;
}

static int client_send_stats(struct client *c)
{
	struct server *s = c->server;
	int r;

	r = client_queue_front(c, server_encode_hello(s, s->last_seq, -1, NULL));
	if (r < 0)
		return r;
	r = client_queue_front(c, s->cfg.stats_json(s->cfg.userdata));
	if (r < 0)
		return r;

	log_debug("Client %u: sent stats", c->id);
	client_begin_close(c, false);
	return 0;
}

/* Act on a complete request line (without its '\n'). */
static void client_handle_request(struct client *c, const char *line, size_t len)
{
	struct client_request req;
	char reason[256] = "";
	int r;

	c->timer = sd_event_source_disable_unref(c->timer);

	r = request_parse(line, len, &req, reason, sizeof(reason));
	free(c->request);
	c->request = NULL;
	if (r == -EINVAL) {
		c->server->stats.bad_requests++;
		client_reject(c, "invalid_request", reason);
		return;
	}
	if (r < 0) {
		client_queue_failed(c, r);
		client_free(c);
		return;
	}

	c->command = req.command;
	c->filter = req.filter;
	if (req.command == REQUEST_STATS)
		r = client_send_stats(c);
	else
		r = client_start_stream(c, &req);
	if (r < 0) {
		client_queue_failed(c, r);
		client_free(c);
		return;
	}

	client_update_events(c);
	client_schedule_flush(c);
}

static int client_on_request_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct client *c = userdata;

	/* A request line that started but did not end in time is not guessed at. */
	if (c->request_len > 0) {
		char reason[128];

		c->server->stats.bad_requests++;
		snprintf(reason, sizeof(reason),
			 "request line not terminated by a newline within %" PRIu64 " ms",
			 c->server->cfg.request_wait_ms);
		client_reject(c, "invalid_request", reason);
		return 0;
	}

	log_debug("Client %u sent no request within %" PRIu64 " ms, subscribing it to everything",
		  c->id, c->server->cfg.request_wait_ms);
	client_handle_request(c, "", 0);
	return 0;
}

/*
 * Read the request line. A line longer than REQUEST_MAX_BYTES is rejected as
 * soon as the buffer is full, without reading the rest of it. Bytes after the
 * '\n' are ignored. End of file ends the line too, so a client that shuts
 * down its sending side right after the request needs no newline.
 */
static int client_read_request(struct client *c)
{
	size_t room = REQUEST_MAX_BYTES + 1 - c->request_len;
	const char *nl;
	ssize_t n;

	n = recv(c->fd, c->request + c->request_len, room, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		return -errno;
	}
	if (n == 0) {
		c->read_eof = true;
		client_handle_request(c, c->request, c->request_len);
		return 0;
	}

	nl = memchr(c->request + c->request_len, '\n', (size_t)n);
	c->request_len += (size_t)n;
	if (nl) {
		client_handle_request(c, c->request, (size_t)(nl - c->request));
		return 0;
	}

	if (c->request_len > REQUEST_MAX_BYTES) {
		char reason[128];

		c->server->stats.bad_requests++;
		snprintf(reason, sizeof(reason), "request line is longer than %d bytes",
			 REQUEST_MAX_BYTES);
		client_reject(c, "request_too_long", reason);
	}
	return 0;
}

static int client_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct client *c = userdata;
	int r;

	if (revents & (EPOLLHUP | EPOLLERR)) {
		log_debug("Client %u hung up", c->id);
		client_free(c);
		return 0;
	}

	if (revents & EPOLLIN) {
		if (c->state == CLIENT_AWAIT_REQUEST) {
			/* May free c or hand it to the flush source, never both. */
			r = client_read_request(c);
			if (r < 0) {
				log_debug("Failed to read the request of client %u: %s", c->id,
					  strerror(-r));
				client_free(c);
			}
			return 0;
		}

		r = client_discard_input(c);
		if (r < 0) {
			log_debug("Failed to read from client %u: %s, disconnecting", c->id,
				  strerror(-r));
			client_free(c);
			return 0;
		}
		if (c->read_eof)
			log_debug("Client %u shut down its sending side", c->id);
	}

	if (revents & EPOLLOUT)
		c->blocked = false;

	if (c->blocked)
		client_update_events(c);
	else
		client_flush_or_free(c);
	return 0;
}

/*
 * Give up on a client that fell behind by more than max_queue_bytes: replace
 * its unsent output by an overflow record, keeping only the rest of a line
 * partly sent, and disconnect once that is sent or the grace period ends.
 */
static void client_overflow(struct client *c, size_t incoming)
{
	struct server *s = c->server;
	size_t behind = out_queue_unsent(&c->live) + incoming;
	uint64_t last_seq = c->last_seq_sent;
	uint64_t partial_seq;
	uint64_t suppressed = 0;
	char *line;
	int r;

	if (out_queue_mid_line(&c->front)) {
		partial_seq = out_queue_keep_partial_line(&c->front);
		out_queue_clear(&c->live);
	} else {
		(void)out_queue_keep_partial_line(&c->front);
		partial_seq = out_queue_keep_partial_line(&c->live);
	}
	/* The rest of a partly sent line goes out before the overflow record. */
	if (partial_seq != 0)
		last_seq = partial_seq;
	client_drop_prefix(c);

	s->stats.overflows++;
	if (ratelimit_allow(&s->overflow_ratelimit, server_now_ns(s), &suppressed)) {
		if (suppressed > 0)
			log_warning("Suppressed %" PRIu64 " messages about clients falling behind",
				    suppressed);
		log_warning("Client %u fell behind by %zu bytes, disconnecting", c->id, behind);
	}

	line = json_encode_overflow(behind, s->cfg.max_queue_bytes, last_seq, s->last_seq);
	if (!line) {
		client_queue_failed(c, -ENOMEM);
		client_free(c);
		return;
	}
	r = out_queue_append(&c->live, line, strlen(line), 0);
	free(line);
	if (r < 0) {
		client_queue_failed(c, r);
		client_free(c);
		return;
	}
	client_begin_close(c, true);
}

/* Queue one encoded live record for a subscriber, or overflow it. May free c. */
static void client_queue_live(struct client *c, const char *line, size_t n, uint64_t seq)
{
	int r;

	if (out_queue_unsent(&c->live) + n > c->server->cfg.max_queue_bytes) {
		client_overflow(c, n);
		return;
	}

	r = out_queue_append(&c->live, line, n, seq);
	if (r < 0) {
		client_queue_failed(c, r);
		client_free(c);
		return;
	}

	if (!c->blocked && !c->prefix_active &&
	    out_queue_unsent(&c->live) >= c->server->flush_batch_bytes)
		client_flush_or_free(c);
	else
		client_schedule_flush(c);
}

void server_publish(struct server *s, const struct record *r)
{
	char buf[JSON_RECORD_MAX_BYTES];
	struct client *c, *next;
	int n = 0;

	s->last_seq = r->seq;

	/* Encoded once, for the first subscriber that takes the record, and
	 * not at all when none does: encoding is most of what a record costs. */
	for (c = s->clients; c; c = next) {
		next = c->next;
		if (c->state != CLIENT_STREAMING || c->command != REQUEST_SUBSCRIBE)
			continue;
		if (!record_filter_match(&c->filter, r))
			continue;
		if (n == 0) {
			n = json_encode_record(r, buf, sizeof(buf));
			if (n < 0) {
				server_log_encode_failure(s, r, n);
				return;
			}
		}
		client_queue_live(c, buf, (size_t)n, r->seq);
	}
}

/* Flush every client that got output since the last iteration of the loop. */
static int server_on_flush(sd_event_source *source, void *userdata)
{
	struct server *s = userdata;
	struct client *c, *next;

	for (c = s->clients; c; c = next) {
		next = c->next;
		if (!c->flush_pending)
			continue;
		c->flush_pending = false;
		client_flush_or_free(c);
	}
	return 0;
}

static int client_new(struct server *s, int fd, unsigned int id)
{
	struct client *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->server = s;
	c->id = id;
	c->fd = fd;
	c->state = CLIENT_AWAIT_REQUEST;

	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->stats.clients++;

	c->request = malloc(REQUEST_MAX_BYTES + 1);
	if (!c->request) {
		r = -ENOMEM;
		goto fail;
	}

	r = sd_event_add_io(s->loop, &c->io, fd, EPOLLIN, client_on_io, c);
	if (r < 0)
		goto fail;

	r = sd_event_add_time_relative(s->loop, &c->timer, CLOCK_MONOTONIC,
				       s->cfg.request_wait_ms * USEC_PER_MSEC,
				       SERVER_TIMER_ACCURACY_USEC, client_on_request_timeout, c);
	if (r < 0)
		goto fail;

	log_debug("Client %u connected", id);
	return 0;

fail:
	/* The caller closes fd. */
	c->fd = -1;
	client_free(c);
	return r;
}

/* Tell a connection over max_clients why it is closed. Best effort: the
 * socket is new, so the line fits its buffer unless the peer is gone. */
static void server_reject_connection(struct server *s, int fd, unsigned int id)
{
	char message[128];
	char *line;

	snprintf(message, sizeof(message), "the daemon serves at most %zu client%s",
		 s->cfg.max_clients, s->cfg.max_clients == 1 ? "" : "s");
	line = json_encode_error("too_many_clients", message);
	if (line) {
		(void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
		free(line);
	}
	s->stats.rejected++;
	log_debug("Client %u rejected: %s", id, message);
}

static int server_on_accept_resume(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct server *s = userdata;
	int r;

	r = sd_event_source_set_enabled(s->listen_source, SD_EVENT_ON);
	if (r < 0)
		log_error("Failed to resume accepting connections: %s", strerror(-r));
	return 0;
}

/* Stop polling the listening socket for a while: it stays readable while
 * accept() fails for lack of file descriptors or memory. */
static void server_pause_accept(struct server *s, int error)
{
	uint64_t suppressed = 0;
	int r;

	if (ratelimit_allow(&s->error_ratelimit, server_now_ns(s), &suppressed))
		log_warning("Failed to accept a connection: %s, pausing accept for %llu ms",
			    strerror(error),
			    (unsigned long long)(SERVER_ACCEPT_PAUSE_USEC / USEC_PER_MSEC));

	r = sd_event_source_set_enabled(s->listen_source, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_source_set_time_relative(s->accept_pause, SERVER_ACCEPT_PAUSE_USEC);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->accept_pause, SD_EVENT_ONESHOT);
	if (r < 0) {
		log_error("Failed to pause accepting connections: %s", strerror(-r));
		(void)sd_event_source_set_enabled(s->listen_source, SD_EVENT_ON);
	}
}

static void server_drain_and_close(int fd)
{
	char buf[4096];

	/* See client_finish() for why input is read before closing. */
	for (unsigned int i = 0; i < 16; i++)
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
	(void)close(fd);
}

static int server_on_listen(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct server *s = userdata;

	for (unsigned int i = 0; i < SERVER_ACCEPT_BATCH; i++) {
		unsigned int id;
		int cfd, r;

		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			server_pause_accept(s, errno);
			return 0;
		}

		s->stats.accepted++;
		id = ++s->next_client_id;
		if (s->stats.clients >= s->cfg.max_clients) {
			server_reject_connection(s, cfd, id);
			server_drain_and_close(cfd);
			continue;
		}

		r = client_new(s, cfd, id);
		if (r < 0) {
			log_warning("Failed to set up client %u: %s, closing it", id, strerror(-r));
			(void)close(cfd);
		}
	}
	return 0;
}

static int server_validate_config(const struct server_config *cfg)
{
	if (cfg->max_queue_bytes < JSON_RECORD_MAX_BYTES || cfg->max_clients == 0)
		return -EINVAL;
	if (cfg->request_wait_ms > UINT64_MAX / USEC_PER_MSEC)
		return -EINVAL;
	if (!cfg->version || !cfg->backend || !cfg->boot_id || !cfg->run_id || !cfg->stats_json)
		return -EINVAL;
	return 0;
}

int server_new(sd_event *loop, int listen_fd, const struct server_config *cfg,
	       struct conn_table *table, struct history *history, struct server **ret_server)
{
	struct server *s;
	int flags, r;

	if (!loop || listen_fd < 0 || !cfg || !table || !history)
		return -EINVAL;
	r = server_validate_config(cfg);
	if (r < 0)
		return r;

	/* Socket activation may pass a blocking socket, and accept() must not
	 * block when a pending connection was reset before we got to it. */
	flags = fcntl(listen_fd, F_GETFL);
	if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = sd_event_ref(loop);
	s->listen_fd = -1;
	s->cfg = *cfg;
	s->table = table;
	s->history = history;
	s->flush_batch_bytes = cfg->max_queue_bytes / 2 < SERVER_FLUSH_BATCH_BYTES ?
				       cfg->max_queue_bytes / 2 : SERVER_FLUSH_BATCH_BYTES;
	s->overflow_ratelimit = (struct ratelimit)RATELIMIT_INIT(10000, 5);
	s->error_ratelimit = (struct ratelimit)RATELIMIT_INIT(10000, 5);

	r = sd_event_add_io(loop, &s->listen_source, listen_fd, EPOLLIN, server_on_listen, s);
	if (r < 0)
		goto fail;
	r = sd_event_add_time_relative(loop, &s->accept_pause, CLOCK_MONOTONIC,
				       SERVER_ACCEPT_PAUSE_USEC, SERVER_TIMER_ACCURACY_USEC,
				       server_on_accept_resume, s);
	if (r < 0)
		goto fail;
	r = sd_event_source_set_enabled(s->accept_pause, SD_EVENT_OFF);
	if (r < 0)
		goto fail;
	r = sd_event_add_defer(loop, &s->flush_source, server_on_flush, s);
	if (r < 0)
		goto fail;
	r = sd_event_source_set_enabled(s->flush_source, SD_EVENT_OFF);
	if (r < 0)
		goto fail;

	s->listen_fd = listen_fd;
	*ret_server = s;
	return 0;

fail:
	server_free(s);
	return r;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Send queued output until nothing is left or deadline_ms passes. */
static void server_flush_until(struct server *s, uint64_t deadline_ms)
{
	for (;;) {
		struct pollfd fds[64];
		nfds_t n = 0;
		uint64_t now;
		struct client *next;

		for (struct client *c = s->clients; c; c = next) {
			next = c->next;
			c->blocked = false;
			if (client_flush(c) < 0) {
				client_free(c);
				continue;
			}
			if (client_has_output(c) && n < sizeof(fds) / sizeof(fds[0]))
				fds[n++] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
		}
		now = monotonic_ms();
		if (n == 0 || now >= deadline_ms)
			break;
		(void)poll(fds, n, (int)(deadline_ms - now));
	}
}

/* Drop what a client has queued except the rest of the line it is in the
 * middle of receiving. */
static void client_trim_to_partial_line(struct client *c)
{
	c->prefix_active = false;
	if (out_queue_unsent(&c->front) > 0) {
		(void)out_queue_keep_partial_line(&c->front);
		out_queue_clear(&c->live);
	} else {
		(void)out_queue_keep_partial_line(&c->live);
	}
}

void server_shutdown(struct server *s, uint64_t timeout_ms)
{
	uint64_t start = monotonic_ms();

	sd_event_source_set_enabled(s->listen_source, SD_EVENT_OFF);
	server_flush_until(s, start + timeout_ms);

	/* Clients that did not take everything in time still get the line
	 * they are in the middle of, so none of them reads a torn line. */
	for (struct client *c = s->clients; c; c = c->next)
		if (client_has_output(c))
			client_trim_to_partial_line(c);
	server_flush_until(s, monotonic_ms() + timeout_ms / 2);
}

void server_free(struct server *s)
{
	if (!s)
		return;

	while (s->clients)
		client_free(s->clients);

	sd_event_source_disable_unref(s->listen_source);
	sd_event_source_disable_unref(s->accept_pause);
	sd_event_source_disable_unref(s->flush_source);
	if (s->listen_fd >= 0)
		(void)close(s->listen_fd);
	sd_event_unref(s->loop);
	free(s);
}

void server_get_stats(const struct server *s, struct server_stats *ret_stats)
{
	struct server_stats st = s->stats;

	st.bytes_queued = 0;
	for (const struct client *c = s->clients; c; c = c->next)
		st.bytes_queued += out_queue_unsent(&c->front) + out_queue_unsent(&c->live);
	*ret_stats = st;
}
