// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Cost of encoding one record as tcptapd publishes it: json_encode_record()
 * on a typical IPv4 and a typical IPv6 connect record, in a loop, with the
 * sequence number and timestamp advancing as in a live stream.
 *
 * Prints the wall-clock nanoseconds per record. On a shared machine that
 * figure is noisy. Instruction counts are repeatable, so compare encoder
 * versions with callgrind, counting only the encoder:
 *
 *   valgrind --tool=callgrind --toggle-collect=json_encode_record \
 *       build/bench/encode-bench --family inet --iterations 100000
 *
 * and divide the total instruction count by the iterations plus one: each
 * family also encodes the sample line it prints.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_encode.h"

#define DEFAULT_ITERATIONS 2000000UL

/* A record like those a busy host publishes: 7-digit sequence numbers, a
 * monotonic timestamp about a day after boot, a cookie in the millions. */
static struct record make_record(uint8_t family, const char *saddr, const char *daddr)
{
	struct record r = { .seq = 3841207 };
	int af = family == TCPTAP_FAMILY_INET ? AF_INET : AF_INET6;

	r.ev = (struct tcptap_event) {
		.ts_ns = 91234567890123ULL,
		.cookie = 1083726,
		.cgroup = 11482,
		.netns = 4026531840u,
		.pid = 214733,
		.tid = 214736,
		.uid = 1000,
		.cpu = 1,
		.sport = 41562,
		.dport = 443,
		.type = TCPTAP_EV_CONNECT,
		.family = family,
	};
	if (inet_pton(af, saddr, r.ev.saddr_be) != 1 || inet_pton(af, daddr, r.ev.daddr_be) != 1) {
		fprintf(stderr, "invalid benchmark address %s or %s\n", saddr, daddr);
		exit(EXIT_FAILURE);
	}
	memcpy(r.ev.comm, "nginx: worker", 14);
	return r;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Encode records starting from r and return a checksum of the lines, which keeps the
 * output in use. Stores the elapsed time in *ret_elapsed_ns. */
static uint64_t encode_loop(struct record r, unsigned long iterations, uint64_t *ret_elapsed_ns)
{
	char buf[JSON_RECORD_MAX_BYTES];
	uint64_t checksum = 0, start = now_ns();

	for (unsigned long i = 0; i < iterations; i++) {
		int n = json_encode_record(&r, buf, sizeof(buf));

		if (n < 0) {
			fprintf(stderr, "json_encode_record() failed: %s\n", strerror(-n));
			exit(EXIT_FAILURE);
		}
		checksum += (uint64_t)n + (unsigned char)buf[n / 2];
		r.seq++;
		r.ev.ts_ns += 7919;
	}
	*ret_elapsed_ns = now_ns() - start;
	return checksum;
}

static void run(const char *name, const struct record *r, unsigned long iterations)
{
	char line[JSON_RECORD_MAX_BYTES];
	uint64_t elapsed_ns, checksum;
	int len;

	len = json_encode_record(r, line, sizeof(line));
	if (len < 0) {
		fprintf(stderr, "json_encode_record() failed: %s\n", strerror(-len));
		exit(EXIT_FAILURE);
	}

	checksum = encode_loop(*r, iterations, &elapsed_ns);
	printf("%-6s %lu records, %.1f ns/record, %d bytes/line (checksum %" PRIu64 ")\n", name,
	       iterations, (double)elapsed_ns / (double)iterations, len, checksum);
	printf("       %.*s", len, line);
}

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"Usage: %s [--family inet|inet6|both] [--iterations N]\n"
		"  -f, --family      record family to encode (default: both)\n"
		"  -n, --iterations  records to encode per family (default: %lu)\n"
		"  -h, --help        print this help\n",
		argv0, DEFAULT_ITERATIONS);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "family", required_argument, NULL, 'f' },
		{ "iterations", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned long iterations = DEFAULT_ITERATIONS;
	bool inet = true, inet6 = true;
	struct record r4, r6;
	char *end;
	int opt;

	while ((opt = getopt_long(argc, argv, "f:n:h", options, NULL)) != -1) {
		switch (opt) {
		case 'f':
			inet = strcmp(optarg, "inet") == 0 || strcmp(optarg, "both") == 0;
			inet6 = strcmp(optarg, "inet6") == 0 || strcmp(optarg, "both") == 0;
			if (!inet && !inet6) {
				fprintf(stderr, "encode-bench: invalid --family '%s': expected inet, inet6 or both\n",
					optarg);
				return EXIT_FAILURE;
			}
			break;
		case 'n':
			/* strtoul() would take "-1" and wrap it to ULONG_MAX. */
			errno = 0;
			iterations = strtoul(optarg, &end, 10);
			if (optarg[0] < '0' || optarg[0] > '9' || errno || *end || end == optarg ||
			    iterations == 0) {
				fprintf(stderr, "encode-bench: invalid --iterations '%s': expected a positive integer\n",
					optarg);
				return EXIT_FAILURE;
			}
			break;
		case 'h':
			usage(stdout, argv[0]);
			return EXIT_SUCCESS;
		default:
			usage(stderr, argv[0]);
			return EXIT_FAILURE;
		}
	}
	if (optind != argc) {
		usage(stderr, argv[0]);
		return EXIT_FAILURE;
	}

	r4 = make_record(TCPTAP_FAMILY_INET, "10.20.30.40", "192.168.100.7");
	r6 = make_record(TCPTAP_FAMILY_INET6, "2001:db8:1f:7::a", "2001:db8:4:2b::11");

	if (inet)
		run("inet", &r4, iterations);
	if (inet6)
		run("inet6", &r6, iterations);
	return EXIT_SUCCESS;
}
