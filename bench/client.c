// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Benchmark subscriber: reads tcptapd's stream, counts records by type and
 * measures the release latency of each live event record, that is
 * CLOCK_MONOTONIC at arrival minus its ts_ns. On SIGINT or SIGTERM, or at the
 * end of --duration, prints one line:
 *
 *   CLIENT records=N connect=N accept=N close=N connect_failed=N lost=N
 *          snapshot=N overflow=N netns_events=N p50_us=X p99_us=X max_us=X
 *
 * netns_events counts the event records of the namespace given by --netns,
 * so a benchmark can compare what its own connections produced with what it
 * expected, undisturbed by other traffic on the host. The latencies cover all
 * event records.
 *
 * The reader looks for keys by text, relying on the key order that
 * docs/protocol.md documents, so that it costs much less than the daemon
 * that writes the stream.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET_PATH "/run/tcptap/tcptapd.sock"
#define READ_BUFFER_BYTES (256 * 1024)
#define MAX_LINE_BYTES 4096
/* Latency histogram: 1 µs buckets up to 1 s, then one overflow bucket. */
#define HISTOGRAM_BUCKETS 1000000
#define NSEC_PER_USEC 1000ULL
#define POLL_TIMEOUT_MS 100

enum counted_type {
	COUNT_CONNECT,
	COUNT_ACCEPT,
	COUNT_CLOSE,
	COUNT_CONNECT_FAILED,
	COUNT_LOST,
	COUNT_SNAPSHOT,
	COUNT_OVERFLOW,
	COUNT_OTHER,
	COUNT_MAX,
};

static const char *const type_names[COUNT_MAX] = {
	[COUNT_CONNECT] = "connect",
	[COUNT_ACCEPT] = "accept",
	[COUNT_CLOSE] = "close",
	[COUNT_CONNECT_FAILED] = "connect_failed",
	[COUNT_LOST] = "lost",
	[COUNT_SNAPSHOT] = "snapshot",
	[COUNT_OVERFLOW] = "overflow",
	[COUNT_OTHER] = "other",
};

struct reader {
	uint64_t counts[COUNT_MAX];
	uint64_t records;
	uint64_t netns_events;
	uint64_t netns;
	uint32_t *histogram;	/* HISTOGRAM_BUCKETS + 1 */
	uint64_t latencies;
	uint64_t max_latency_ns;
	bool has_netns;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Parse the unsigned integer after "key": in line; false if the key is absent. */
static bool find_u64(const char *line, const char *end, const char *key, uint64_t *ret_value)
{
	size_t key_len = strlen(key);
	const char *p = memmem(line, (size_t)(end - line), key, key_len);
	uint64_t v = 0;

	if (!p)
		return false;
	p += key_len;
	if (p >= end || *p < '0' || *p > '9')
		return false;
	while (p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	*ret_value = v;
	return true;
}

static enum counted_type classify(const char *line, const char *end)
{
	const char *p = memmem(line, (size_t)(end - line), "\"type\":\"", 8);

	if (!p)
		return COUNT_OTHER;
	p += 8;
	for (int t = 0; t < COUNT_OTHER; t++) {
		size_t n = strlen(type_names[t]);

		if ((size_t)(end - p) > n && memcmp(p, type_names[t], n) == 0 && p[n] == '"')
			return (enum counted_type)t;
	}
	return COUNT_OTHER;
}

static void reader_line(struct reader *r, const char *line, const char *end, uint64_t arrival_ns)
{
	enum counted_type t = classify(line, end);
	uint64_t ts_ns, netns;

	r->records++;
	r->counts[t]++;
	if (t > COUNT_CONNECT_FAILED)
		return;

	if (r->has_netns && find_u64(line, end, "\"netns\":", &netns) && netns == r->netns)
		r->netns_events++;
	if (!find_u64(line, end, "\"ts_ns\":", &ts_ns))
		return;
	/* Records were read before arrival_ns was taken, so this is never negative. */
	if (arrival_ns > ts_ns) {
		uint64_t latency = arrival_ns - ts_ns;
		uint64_t bucket = latency / NSEC_PER_USEC;

		r->histogram[bucket < HISTOGRAM_BUCKETS ? bucket : HISTOGRAM_BUCKETS]++;
		if (latency > r->max_latency_ns)
			r->max_latency_ns = latency;
	} else {
		r->histogram[0]++;
	}
	r->latencies++;
}

/* Latency in µs below which fraction q of the samples lie. */
static double reader_quantile_us(const struct reader *r, double q)
{
	uint64_t rank, seen = 0;

	if (r->latencies == 0)
		return 0;
	rank = (uint64_t)(q * (double)(r->latencies - 1)) + 1;
	for (size_t b = 0; b <= HISTOGRAM_BUCKETS; b++) {
		seen += r->histogram[b];
		if (seen >= rank)
			return b == HISTOGRAM_BUCKETS ? (double)r->max_latency_ns / 1e3 : (double)b;
	}
	return (double)r->max_latency_ns / 1e3;
}

static int connect_socket(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Read until EOF, a signal or the deadline. Returns 0 or -errno. */
static int reader_run(struct reader *r, int fd, uint64_t deadline_ns)
{
	static char buf[READ_BUFFER_BYTES + MAX_LINE_BYTES];
	size_t have = 0;

	while (!stop_signal && (deadline_ns == 0 || now_ns() < deadline_ns)) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t arrival_ns;
		char *line, *nl, *end;
		ssize_t n;

		if (poll(&pfd, 1, POLL_TIMEOUT_MS) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(fd, buf + have, READ_BUFFER_BYTES);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		arrival_ns = now_ns();

		have += (size_t)n;
		end = buf + have;
		for (line = buf; (nl = memchr(line, '\n', (size_t)(end - line))); line = nl + 1)
			reader_line(r, line, nl, arrival_ns);
		have = (size_t)(end - line);
		if (have > MAX_LINE_BYTES)
			return -EPROTO;
		memmove(buf, line, have);
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: bench-client [--socket PATH] [--netns INODE] [--duration S]\n"
		"Subscribe to tcptapd, count records and measure release latency until\n"
		"SIGINT, SIGTERM, the end of the stream or the duration (default: none).\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "netns", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct reader r = { 0 };
	const char *path = DEFAULT_SOCKET_PATH;
	struct sigaction sa = { .sa_handler = on_signal };
	uint64_t deadline_ns = 0;
	double duration;
	char *end;
	int c, fd, err;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			path = optarg;
			break;
		case 'n':
			errno = 0;
			r.netns = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end != '\0') {
				fprintf(stderr, "bench-client: invalid netns inode '%s'\n", optarg);
				return 2;
			}
			r.has_netns = true;
			break;
		case 'd':
			duration = strtod(optarg, &end);
			if (!(duration > 0) || *end != '\0') {
				fprintf(stderr, "bench-client: invalid duration '%s'\n", optarg);
				return 2;
			}
			deadline_ns = now_ns() + (uint64_t)(duration * 1e9);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	r.histogram = calloc(HISTOGRAM_BUCKETS + 1, sizeof(*r.histogram));
	if (!r.histogram)
		return 1;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	fd = connect_socket(path);
	if (fd < 0) {
		fprintf(stderr, "bench-client: failed to connect to %s: %s\n", path, strerror(-fd));
		return 1;
	}
	/* Subscribe to everything at once instead of waiting for the default. */
	if (write(fd, "{}\n", 3) != 3) {
		fprintf(stderr, "bench-client: failed to send the request: %s\n", strerror(errno));
		return 1;
	}

	err = reader_run(&r, fd, deadline_ns);
	if (err < 0)
		fprintf(stderr, "bench-client: failed to read the stream: %s\n", strerror(-err));

	printf("CLIENT records=%" PRIu64, r.records);
	for (int t = 0; t < COUNT_OTHER; t++)
		printf(" %s=%" PRIu64, type_names[t], r.counts[t]);
	printf(" netns_events=%" PRIu64 " p50_us=%.0f p99_us=%.0f max_us=%.0f\n", r.netns_events,
	       reader_quantile_us(&r, 0.50), reader_quantile_us(&r, 0.99),
	       (double)r.max_latency_ns / 1e3);
	close(fd);
	free(r.histogram);
	return err < 0 ? 1 : 0;
}
