/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_LINE_READER_H
#define TCPTAP_LINE_READER_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Maximum length of a line from the daemon, '\n' excluded. Event records take a few hundred
 * bytes, and the stats record grows with the number of CPUs. A longer line means that the peer
 * does not speak the protocol, and buffering it would let the peer grow this process unbounded.
 */
#define LINE_MAX_BYTES (1024 * 1024)

/*
 * Splits a byte stream into lines, however read() fragments it. Zero-initialize it, then set
 * fd and timeout_ms.
 */
struct line_reader {
	int fd;
	int timeout_ms;		/* per read; -1 waits forever */
	char *buf;
	size_t capacity;
	size_t start;		/* first byte not yet returned */
	size_t end;		/* one past the last byte read */
	size_t scanned;		/* bytes after start known to contain no '\n' */
};

/* Free the buffer. The caller owns fd and closes it. */
void line_reader_free(struct line_reader *reader);

/*
 * Read the next line into *ret_line and *ret_len, with its '\n' replaced by NUL. The line stays
 * valid until the next call. Returns 1 for a line and 0 at the end of the stream. Errors are
 * -EMSGSIZE for a line over LINE_MAX_BYTES, -EPROTO when the stream ends inside a line,
 * -ETIMEDOUT when no byte arrived for timeout_ms, -ENOMEM, and the errno of poll() or read().
 */
int line_reader_next(struct line_reader *reader, char **ret_line, size_t *ret_len);

/* True if a whole line is already buffered, so line_reader_next() will not block. */
bool line_reader_has_line(const struct line_reader *reader);

#endif /* TCPTAP_LINE_READER_H */
