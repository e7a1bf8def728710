// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "line_reader.h"

#define LINE_BUFFER_INITIAL_BYTES (64 * 1024)

void line_reader_free(struct line_reader *reader)
{
	free(reader->buf);
	reader->buf = NULL;
}

/* Make room for at least one more byte after end. */
static int line_reader_make_room(struct line_reader *reader)
{
	size_t capacity;
	char *buf;

	if (reader->start > 0) {
		memmove(reader->buf, reader->buf + reader->start, reader->end - reader->start);
		reader->end -= reader->start;
		reader->start = 0;
	}
	if (reader->end < reader->capacity)
		return 0;

	/* A full line of LINE_MAX_BYTES plus its '\n' must fit. */
	capacity = reader->capacity ? reader->capacity * 2 : LINE_BUFFER_INITIAL_BYTES;
	if (capacity > LINE_MAX_BYTES + 1)
		capacity = LINE_MAX_BYTES + 1;

	buf = realloc(reader->buf, capacity);
	if (!buf)
		return -ENOMEM;
	reader->buf = buf;
	reader->capacity = capacity;
	return 0;
}

/* Wait until the socket is readable or reader->timeout_ms passed. */
static int line_reader_wait(struct line_reader *reader)
{
	struct pollfd pfd = { .fd = reader->fd, .events = POLLIN };
	int n;

	if (reader->timeout_ms < 0)
		return 0;

	do
		n = poll(&pfd, 1, reader->timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return 0;
}

int line_reader_next(struct line_reader *reader, char **ret_line, size_t *ret_len)
{
	for (;;) {
		size_t pending = reader->end - reader->start;
		char *begin = reader->buf + reader->start;
		char *newline = NULL;
		ssize_t n;
		int r;

		if (pending > reader->scanned)
			newline = memchr(begin + reader->scanned, '\n', pending - reader->scanned);
		if (newline) {
			*newline = '\0';
			*ret_line = begin;
			*ret_len = newline - begin;
			reader->start += newline - begin + 1;
			reader->scanned = 0;
			return 1;
		}

		reader->scanned = pending;
		if (pending > LINE_MAX_BYTES)
			return -EMSGSIZE;

		r = line_reader_make_room(reader);
		if (r < 0)
			return r;

		r = line_reader_wait(reader);
		if (r < 0)
			return r;

		n = read(reader->fd, reader->buf + reader->end, reader->capacity - reader->end);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return pending > 0 ? -EPROTO : 0;
		reader->end += n;
	}
}

bool line_reader_has_line(const struct line_reader *reader)
{
	return reader->end > reader->start &&
	       memchr(reader->buf + reader->start, '\n', reader->end - reader->start) != NULL;
}
