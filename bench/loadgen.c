// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * TCP connection load generator for the tcptap benchmarks.
 *
 * Client threads loop connect -> (optional 1-byte exchange) -> close against
 * listeners served by accept threads in the same process, on loopback, for a
 * fixed time. The listeners use several ports so that the client port space is
 * multiplied: with TIME_WAIT reuse a 4-tuple becomes reusable only after about a
 * second, and one destination port allows fewer than 64,512 new connections a
 * second.
 *
 * The sysctls it needs are written at start and the previous values restored
 * at exit, also after SIGINT or SIGTERM. They are per network namespace, so run
 * it inside a namespace of its own (bench/run does) to leave the host alone.
 *
 * --hold N opens N connections instead, keeps them open for the duration and
 * then closes them, for measuring memory with many live connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_LISTENERS 64
#define MAX_HOLD 1000000

#define STRINGIFY_VALUE(x) #x
#define STRINGIFY(x) STRINGIFY_VALUE(x)
#define LISTEN_BACKLOG 4096
#define NSEC_PER_SEC 1000000000ULL
#define HOLD_FD_SLACK 64

struct sysctl_setting {
	const char *path;
	const char *value;
	char saved[128];
	bool changed;
};

static struct sysctl_setting sysctls[] = {
	{ .path = "/proc/sys/net/ipv4/ip_local_port_range", .value = "1024 65000" },
	/* Reuse TIME_WAIT ports for outgoing connections. Linux 5.14 and later
	 * default to 2, which does it on loopback only, but older kernels default
	 * to 0. */
	{ .path = "/proc/sys/net/ipv4/tcp_tw_reuse", .value = "1" },
	{ .path = "/proc/sys/net/core/somaxconn", .value = "4096" },
	{ .path = "/proc/sys/net/ipv4/tcp_max_syn_backlog", .value = "4096" },
};

struct options {
	unsigned int clients;
	unsigned int listeners;
	double duration_s;
	bool ipv6;
	bool exchange;
	double rate;		/* connections per second over all clients, 0 = unlimited */
	unsigned int hold;	/* > 0: hold this many connections open instead */
	bool quiet;
};

struct listener {
	int fd;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	pthread_t thread;
};

struct client_stats {
	uint64_t connections;
	uint64_t connect_errors;
	uint64_t exchange_errors;
	int last_errno;
} __attribute__((aligned(64)));

static struct options opt = {
	.clients = 4,
	.listeners = 4,
	.duration_s = 10,
};
static struct listener listeners[MAX_LISTENERS];
static struct client_stats stats[MAX_THREADS];
static atomic_bool stopping;
static atomic_uint_fast64_t accepted;
static atomic_uint_fast64_t accept_errors;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static int sysctl_read(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	int err = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)size, f))
		err = -EIO;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return err;
}

static int sysctl_write(const char *path, const char *value)
{
	FILE *f = fopen(path, "we");
	int err = 0;

	if (!f)
		return -errno;
	if (fputs(value, f) < 0)
		err = -errno;
	if (fclose(f) != 0 && !err)
		err = -errno;
	return err;
}

static void sysctls_restore(void)
{
	for (size_t i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++) {
		struct sysctl_setting *s = &sysctls[i];
		int err;

		if (!s->changed)
			continue;
		err = sysctl_write(s->path, s->saved);
		if (err < 0)
			fprintf(stderr, "loadgen: failed to restore %s to '%s': %s\n", s->path,
				s->saved, strerror(-err));
		s->changed = false;
	}
}

/* Apply every setting; on failure restore what was applied. */
static int sysctls_apply(void)
{
	for (size_t i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++) {
		struct sysctl_setting *s = &sysctls[i];
		int err;

		err = sysctl_read(s->path, s->saved, sizeof(s->saved));
		if (err < 0) {
			fprintf(stderr, "loadgen: failed to read %s: %s\n", s->path, strerror(-err));
			sysctls_restore();
			return err;
		}
		if (strcmp(s->saved, s->value) == 0)
			continue;
		err = sysctl_write(s->path, s->value);
		if (err < 0) {
			fprintf(stderr, "loadgen: failed to set %s to '%s': %s\n", s->path, s->value,
				strerror(-err));
			sysctls_restore();
			return err;
		}
		s->changed = true;
	}
	return 0;
}

static int listener_open(struct listener *l)
{
	int one = 1;

	memset(&l->addr, 0, sizeof(l->addr));
	if (opt.ipv6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&l->addr;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		l->addr_len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&l->addr;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		l->addr_len = sizeof(*a);
	}

	l->fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		return -errno;
	(void)setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Port 0 lets the kernel pick a free port from ip_local_port_range. */
	if (bind(l->fd, (struct sockaddr *)&l->addr, l->addr_len) < 0 ||
	    listen(l->fd, LISTEN_BACKLOG) < 0 ||
	    getsockname(l->fd, (struct sockaddr *)&l->addr, &l->addr_len) < 0) {
		int err = -errno;

		close(l->fd);
		l->fd = -1;
		return err;
	}
	return 0;
}

static void *accept_main(void *arg)
{
	struct listener *l = arg;
	char byte;

	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (atomic_load(&stopping) && errno == EINVAL)
				break;	/* shutdown() of the listener */
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			atomic_fetch_add(&accept_errors, 1);
			if (atomic_load(&stopping))
				break;
			continue;
		}
		atomic_fetch_add(&accepted, 1);
		if (opt.exchange && opt.hold == 0) {
			if (recv(fd, &byte, 1, 0) == 1)
				(void)send(fd, &byte, 1, MSG_NOSIGNAL);
		}
		if (opt.hold == 0)
			close(fd);
		/* --hold: the server end stays open until the process exits. */
	}
	return NULL;
}

/* One connection: connect, exchange a byte if asked, and close. Returns the
 * client socket when keep is set, 0 when closed, -errno on failure. */
static int client_connect_once(const struct listener *l, struct client_stats *st, bool keep)
{
	char byte = 'x';
	int fd;

	fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		st->connect_errors++;
		st->last_errno = errno;
		return -st->last_errno;
	}
	if (connect(fd, (const struct sockaddr *)&l->addr, l->addr_len) < 0) {
		st->connect_errors++;
		st->last_errno = errno;
		close(fd);
		return -st->last_errno;
	}
	if (opt.exchange && !keep) {
		if (send(fd, &byte, 1, MSG_NOSIGNAL) != 1 || recv(fd, &byte, 1, 0) != 1) {
			st->exchange_errors++;
			st->last_errno = errno;
		}
	}
	st->connections++;
	if (keep)
		return fd;
	close(fd);
	return 0;
}

static void *client_main(void *arg)
{
	size_t index = (size_t)arg;
	struct client_stats *st = &stats[index];
	uint64_t interval_ns = 0, next_ns = now_ns();
	unsigned int round = (unsigned int)index;

	if (opt.rate > 0)
		interval_ns = (uint64_t)((double)NSEC_PER_SEC * opt.clients / opt.rate);

	while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
		if (interval_ns) {
			uint64_t now = now_ns();

			if (now < next_ns) {
				struct timespec ts = {
					.tv_sec = (time_t)((next_ns - now) / NSEC_PER_SEC),
					.tv_nsec = (long)((next_ns - now) % NSEC_PER_SEC),
				};

				nanosleep(&ts, NULL);
				continue;
			}
			next_ns += interval_ns;
		}
		(void)client_connect_once(&listeners[round++ % opt.listeners], st, false);
	}
	return NULL;
}

static int raise_nofile(rlim_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur >= want)
		return 0;
	rl.rlim_cur = want;
	if (rl.rlim_max < want)
		rl.rlim_max = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	return 0;
}

/* Wait for the duration, or until SIGINT or SIGTERM. Returns the signal or 0. */
static int wait_duration(const sigset_t *mask, double seconds)
{
	struct timespec ts = {
		.tv_sec = (time_t)seconds,
		.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9),
	};
	int sig;

	for (;;) {
		sig = sigtimedwait(mask, NULL, &ts);
		if (sig > 0)
			return sig;
		if (errno == EAGAIN)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: loadgen [OPTIONS]\n"
		"Open and close TCP connections on loopback as fast as possible.\n\n"
		"  -c, --clients N     client threads (default 4)\n"
		"  -l, --listeners N   listening ports, one accept thread each (default 4)\n"
		"  -d, --duration S    seconds to run (default 10)\n"
		"  -6, --ipv6          use ::1 instead of 127.0.0.1\n"
		"  -x, --exchange      send one byte each way before closing\n"
		"  -r, --rate N        connections per second in total (default: unlimited)\n"
		"      --hold N        open N connections, hold them for the duration, close\n"
		"  -q, --quiet         print only the RESULT line\n"
		"  -h, --help          print this help\n\n"
		"Writes net.ipv4.ip_local_port_range, net.ipv4.tcp_tw_reuse, net.core.somaxconn\n"
		"and net.ipv4.tcp_max_syn_backlog of the current network namespace and restores\n"
		"them on exit. Prints a line 'RESULT conn_per_s=... connections=... errors=... cpu_s=...'.\n");
}

/* Parse a decimal integer from 1 to max. strtoul() alone would take a sign
 * and wrap "-1", and a cast would cut values above UINT_MAX. */
static bool parse_count(const char *text, unsigned long max, unsigned int *ret)
{
	unsigned long value;
	char *end;

	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	value = strtoul(text, &end, 10);
	if (errno || *end != '\0' || value < 1 || value > max)
		return false;
	*ret = (unsigned int)value;
	return true;
}

static int parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "clients", required_argument, NULL, 'c' },
		{ "listeners", required_argument, NULL, 'l' },
		{ "duration", required_argument, NULL, 'd' },
		{ "ipv6", no_argument, NULL, '6' },
		{ "exchange", no_argument, NULL, 'x' },
		{ "rate", required_argument, NULL, 'r' },
		{ "hold", required_argument, NULL, 'H' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, option_index;

	for (;;) {
		const char *range = NULL;
		bool valid = true;
		char *end;

		option_index = -1;
		c = getopt_long(argc, argv, "c:l:d:6xr:qh", longopts, &option_index);
		if (c == -1)
			break;
		if (c == '?')
			break;
		if (option_index < 0)
			for (option_index = 0; longopts[option_index].name &&
			     longopts[option_index].val != c; option_index++)
				;

		errno = 0;
		switch (c) {
		case 'c':
			valid = parse_count(optarg, MAX_THREADS, &opt.clients);
			range = "1 to " STRINGIFY(MAX_THREADS);
			break;
		case 'l':
			valid = parse_count(optarg, MAX_LISTENERS, &opt.listeners);
			range = "1 to " STRINGIFY(MAX_LISTENERS);
			break;
		case 'd':
			opt.duration_s = strtod(optarg, &end);
			valid = !errno && end != optarg && *end == '\0' &&
				opt.duration_s > 0 && opt.duration_s <= 3600;
			range = "more than 0 and at most 3600 seconds";
			break;
		case '6':
			opt.ipv6 = true;
			break;
		case 'x':
			opt.exchange = true;
			break;
		case 'r':
			opt.rate = strtod(optarg, &end);
			valid = !errno && end != optarg && *end == '\0' &&
				opt.rate > 0 && opt.rate <= 1e7;
			range = "more than 0 and at most 10000000";
			break;
		case 'H':
			valid = parse_count(optarg, MAX_HOLD, &opt.hold);
			range = "1 to " STRINGIFY(MAX_HOLD);
			break;
		case 'q':
			opt.quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			break;
		}
		if (!valid) {
			fprintf(stderr, "loadgen: invalid value '%s' for --%s: must be %s\n", optarg,
				longopts[option_index].name, range);
			return -EINVAL;
		}
	}
	if (c == '?') {
		usage(stderr);
		return -EINVAL;
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* --hold: open opt.hold connections, spread over the listeners. */
static int hold_connections(int *fds, struct client_stats *st)
{
	for (unsigned int i = 0; i < opt.hold; i++) {
		int fd = client_connect_once(&listeners[i % opt.listeners], st, true);

		if (fd < 0) {
			fprintf(stderr, "loadgen: failed to open connection %u of %u: %s\n", i + 1,
				opt.hold, strerror(-fd));
			return fd;
		}
		fds[i] = fd;
	}
	return 0;
}

static void print_result(uint64_t elapsed_ns)
{
	uint64_t connections = 0, connect_errors = 0, exchange_errors = 0;
	double seconds = (double)elapsed_ns / 1e9, cpu_s;
	struct rusage ru;
	int last_errno = 0;

	for (unsigned int i = 0; i < opt.clients; i++) {
		connections += stats[i].connections;
		connect_errors += stats[i].connect_errors;
		exchange_errors += stats[i].exchange_errors;
		if (stats[i].last_errno)
			last_errno = stats[i].last_errno;
	}
	if (!opt.quiet) {
		printf("%s%s, %u clients, %u listeners: %" PRIu64 " connections in %.2f s = "
		       "%.0f conn/s\n", opt.ipv6 ? "IPv6" : "IPv4",
		       opt.exchange ? " with 1-byte exchange" : "", opt.clients, opt.listeners,
		       connections, seconds, (double)connections / seconds);
		if (connect_errors || exchange_errors || atomic_load(&accept_errors))
			printf("errors: %" PRIu64 " connect, %" PRIu64 " exchange, %" PRIu64
			       " accept; last: %s\n", connect_errors, exchange_errors,
			       (uint64_t)atomic_load(&accept_errors), strerror(last_errno));
	}
	/* The process's own CPU time, which the driver subtracts from the
	 * machine's busy time to see how much other work disturbed the run. */
	getrusage(RUSAGE_SELF, &ru);
	cpu_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	printf("RESULT conn_per_s=%.0f connections=%" PRIu64 " accepted=%" PRIu64
	       " errors=%" PRIu64 " seconds=%.3f cpu_s=%.3f\n", (double)connections / seconds,
	       connections, (uint64_t)atomic_load(&accepted),
	       connect_errors + exchange_errors + (uint64_t)atomic_load(&accept_errors), seconds,
	       cpu_s);
}

int main(int argc, char **argv)
{
	pthread_t threads[MAX_THREADS];
	uint64_t start_ns, elapsed_ns;
	int *held = NULL;
	sigset_t mask;
	int err = 0, sig;

	if (parse_options(argc, argv) < 0)
		return 2;

	/* Signals go to the main thread's sigtimedwait() only. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	if (opt.hold) {
		/* Both ends of every connection live in this process. */
		err = raise_nofile(2 * (rlim_t)opt.hold + HOLD_FD_SLACK);
		if (err < 0) {
			fprintf(stderr, "loadgen: failed to raise RLIMIT_NOFILE to %u: %s (raising "
				"the hard limit needs CAP_SYS_RESOURCE; hold fewer connections "
				"per process)\n", 2 * opt.hold + HOLD_FD_SLACK, strerror(-err));
			return 1;
		}
		opt.clients = 1;
		held = calloc(opt.hold, sizeof(*held));
		if (!held)
			return 1;
	}

	if (sysctls_apply() < 0)
		return 1;

	for (unsigned int i = 0; i < opt.listeners; i++) {
		err = listener_open(&listeners[i]);
		if (err < 0) {
			fprintf(stderr, "loadgen: failed to open listener %u: %s\n", i, strerror(-err));
			goto out;
		}
		pthread_create(&listeners[i].thread, NULL, accept_main, &listeners[i]);
	}

	start_ns = now_ns();
	if (opt.hold) {
		err = hold_connections(held, &stats[0]);
		if (err == 0) {
			printf("HELD %u\n", opt.hold);
			fflush(stdout);
		}
		sig = err < 0 ? 0 : wait_duration(&mask, opt.duration_s);
	} else {
		for (size_t i = 0; i < opt.clients; i++)
			pthread_create(&threads[i], NULL, client_main, (void *)i);
		sig = wait_duration(&mask, opt.duration_s);
	}

	atomic_store(&stopping, true);
	if (!opt.hold)
		for (unsigned int i = 0; i < opt.clients; i++)
			pthread_join(threads[i], NULL);
	elapsed_ns = now_ns() - start_ns;
	if (opt.hold)
		for (unsigned int i = 0; i < opt.hold && held[i] > 0; i++)
			close(held[i]);

	/* Clients are done. Accept what still waits in the backlogs, so every
	 * connection a client completed also has its accept, then wake the
	 * accept threads with shutdown(). */
	for (unsigned int i = 0; i < opt.listeners; i++) {
		int fd;

		(void)fcntl(listeners[i].fd, F_SETFL, O_NONBLOCK);
		while ((fd = accept4(listeners[i].fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			atomic_fetch_add(&accepted, 1);
			if (opt.hold == 0)
				close(fd);
		}
		(void)shutdown(listeners[i].fd, SHUT_RDWR);
		pthread_join(listeners[i].thread, NULL);
		close(listeners[i].fd);
	}
	if (sig > 0 && !opt.quiet)
		printf("stopped by signal %d\n", sig);
	print_result(elapsed_ns);
	/* A failed --hold still prints its RESULT line, and exits with 1. */
	if (err > 0)
		err = 0;
out:
	sysctls_restore();
	free(held);
	return err < 0 ? 1 : 0;
}
