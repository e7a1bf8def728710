// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * tcptap: the command-line client of tcptapd. It connects to the daemon's UNIX stream socket,
 * sends one JSON request line and prints the newline-delimited JSON records of the reply,
 * either unchanged (--json) or as text tables.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "line_reader.h"
#include "text_output.h"

#define DEFAULT_SOCKET_PATH "/run/tcptap/tcptapd.sock"

/* The "protocol" value of the daemon's hello record that this client understands. */
#define PROTOCOL_VERSION 1

/*
 * Maximum time in ms that tcptap waits for the next line from the daemon. It applies to dump
 * and stats replies and to a watch up to the end of its snapshot. After that, a live watch
 * stream may stay idle for any time.
 */
#define REPLY_TIMEOUT_MS 10000
#define JSON_OUTPUT_BUFFER_BYTES (64 * 1024)
#define LIVE_RECORD_PREFIX "{\"seq\":"
#define LIVE_RECORD_PREFIX_LEN (sizeof(LIVE_RECORD_PREFIX) - 1)

/* The kernel's TASK_COMM_LEN is 16 bytes including the terminating NUL. */
#define COMM_MAX_BYTES 15

/* Address column width: an IPv4 address fits 15 characters, an IPv6 address 39. */
#define ADDR_WIDTH_INET 15
#define ADDR_WIDTH_INET6 39

#define NSEC_PER_SEC INT64_C(1000000000)
#define NSEC_PER_MSEC INT64_C(1000000)

#define EXIT_USAGE 2

/* Returned by output steps when the reader of stdout went away, so tcptap stops with status 0. */
#define CLI_STOP 1

enum cli_command {
	CLI_WATCH,
	CLI_DUMP,
	CLI_STATS,
};

/* Event types a watch filter can select, in the order they are sent in a request. */
static const char *const event_type_names[] = {
	"connect",
	"accept",
	"close",
	"connect_failed",
};
#define EVENT_TYPE_COUNT (sizeof(event_type_names) / sizeof(event_type_names[0]))

struct cli_options {
	enum cli_command command;
	const char *socket_path;
	bool json;
	bool no_snapshot;
	unsigned int types;		/* bit i selects event_type_names[i]; 0 = all types */
	bool has_pid;
	uint32_t pid;
	const char *comm;		/* NULL = any */
	bool has_port;
	uint16_t port;
	const char *family;		/* "inet", "inet6" or NULL for both */
	bool has_netns;
	uint32_t netns;
	bool has_cgroup;
	uint64_t cgroup;
};

/* Errors go to stderr as one JSON object in --json mode, as one text line otherwise. */
static bool json_errors;

/* Print one error line on stderr and return error, a negative errno. */
static int cli_fail(int error, const char *code, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static int cli_fail(int error, const char *code, const char *format, ...)
{
	char *message = NULL;
	va_list ap;

	va_start(ap, format);
	if (vasprintf(&message, format, ap) < 0)
		message = NULL;
	va_end(ap);

	/* Rows already printed come first when stdout and stderr are the same file. */
	(void) fflush(stdout);

	if (json_errors) {
		struct json_object *obj = json_object_new_object();

		if (obj) {
			json_object_object_add(obj, "type", json_object_new_string("error"));
			json_object_object_add(obj, "code", json_object_new_string(code));
			json_object_object_add(obj, "message",
					       json_object_new_string(message ? message : format));
			fprintf(stderr, "%s\n", json_object_to_json_string_ext(obj,
					JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
			json_object_put(obj);
		}
	} else
		fprintf(stderr, "tcptap: %s\n", message ? message : format);

	free(message);
	return error;
}

static void cli_print_help(void)
{
	printf("Usage: tcptap COMMAND [OPTIONS]\n"
	       "\n"
	       "Show the TCP connections that tcptapd traces.\n"
	       "\n"
	       "Commands:\n"
	       "  watch    Print connection events as they happen, after the open connections\n"
	       "  dump     Print the daemon's table of open connections and exit\n"
	       "  stats    Print the daemon's counters and exit\n"
	       "\n"
	       "Options for every command:\n"
	       "  -h, --help             Show this help and exit\n"
	       "      --version          Show the version and exit\n"
	       "      --socket PATH      Connect to the daemon's socket at PATH\n"
	       "                         (default: " DEFAULT_SOCKET_PATH ")\n"
	       "      --json             Print the daemon's JSON lines unchanged; errors as JSON\n"
	       "\n"
	       "Options for watch:\n"
	       "  -p, --pid PID          Only events attributed to process PID\n"
	       "  -4, --ipv4             Only IPv4 connections\n"
	       "  -6, --ipv6             Only IPv6 connections\n"
	       "      --port PORT        Only connections with PORT as source or destination port\n"
	       "      --comm NAME        Only events of processes whose command name is NAME\n"
	       "                         (exact match, at most 15 bytes)\n"
	       "  -t, --type TYPE[,TYPE...]\n"
	       "                         Only events of these types: connect, accept, close,\n"
	       "                         connect_failed (repeatable)\n"
	       "      --netns INODE      Only connections in the network namespace with this inode\n"
	       "      --cgroup ID        Only events of processes in the cgroup v2 with this id\n"
	       "      --no-snapshot      Do not print the connections that were open at start\n"
	       "\n"
	       "Exit status: 0 on success, 1 on a failure, 2 on a usage error.\n"
	       "See tcptap(1) for the output columns.\n");
}

/* Print a usage error. Returns -EINVAL. */
static int cli_usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

static int cli_usage_error(const char *format, ...)
{
	char *message = NULL;
	va_list ap;
	int r;

	va_start(ap, format);
	r = vasprintf(&message, format, ap);
	va_end(ap);
	if (r < 0)
		return cli_fail(-EINVAL, "usage", "%s (see 'tcptap --help')", format);

	(void) cli_fail(-EINVAL, "usage", "%s (see 'tcptap --help')", message);
	free(message);
	return -EINVAL;
}

/* Parse a decimal integer from min to max. Signs, blanks and trailing characters are invalid. */
static int parse_uint64(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
	unsigned long long value;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;

	errno = 0;
	value = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	if (value < min || value > max)
		return -ERANGE;

	*ret_value = value;
	return 0;
}

static int parse_option_uint(const char *option, const char *arg, uint64_t min, uint64_t max,
			     uint64_t *ret_value)
{
	if (parse_uint64(arg, min, max, ret_value) < 0)
		return cli_usage_error("invalid %s '%s': expected an integer from %" PRIu64
				       " to %" PRIu64, option, arg, min, max);
	return 0;
}

/* Add the comma-separated event types in list to *types. */
static int parse_types(const char *list, unsigned int *types)
{
	const char *p = list;

	for (;;) {
		size_t len = strcspn(p, ",");
		size_t i;

		for (i = 0; i < EVENT_TYPE_COUNT; i++)
			if (strlen(event_type_names[i]) == len &&
			    strncmp(p, event_type_names[i], len) == 0)
				break;
		if (i == EVENT_TYPE_COUNT)
			return cli_usage_error("invalid --type '%s': expected a comma-separated list "
					       "of connect, accept, close, connect_failed", list);
		*types |= 1u << i;

		if (p[len] == '\0')
			return 0;
		p += len + 1;
	}
}

static int parse_socket_path(const char *path)
{
	struct sockaddr_un sa;

	if (path[0] == '\0')
		return cli_usage_error("invalid --socket: the path is empty");
	if (strlen(path) >= sizeof(sa.sun_path))
		return cli_usage_error("invalid --socket '%s': a socket path has at most %zu bytes",
				       path, sizeof(sa.sun_path) - 1);
	return 0;
}

enum {
	OPT_VERSION = 0x100,
	OPT_SOCKET,
	OPT_JSON,
	OPT_PORT,
	OPT_COMM,
	OPT_NETNS,
	OPT_CGROUP,
	OPT_NO_SNAPSHOT,
};

static const struct option cli_long_options[] = {
	{ "help",	 no_argument,	    NULL, 'h' },
	{ "version",	 no_argument,	    NULL, OPT_VERSION },
	{ "socket",	 required_argument, NULL, OPT_SOCKET },
	{ "json",	 no_argument,	    NULL, OPT_JSON },
	{ "pid",	 required_argument, NULL, 'p' },
	{ "ipv4",	 no_argument,	    NULL, '4' },
	{ "ipv6",	 no_argument,	    NULL, '6' },
	{ "port",	 required_argument, NULL, OPT_PORT },
	{ "comm",	 required_argument, NULL, OPT_COMM },
	{ "type",	 required_argument, NULL, 't' },
	{ "netns",	 required_argument, NULL, OPT_NETNS },
	{ "cgroup",	 required_argument, NULL, OPT_CGROUP },
	{ "no-snapshot", no_argument,	    NULL, OPT_NO_SNAPSHOT },
	{}
};

/* Parse one watch-only option into o. */
static int cli_parse_watch_option(int c, const char *arg, struct cli_options *o)
{
	uint64_t value;
	int r = 0;

	switch (c) {
	case 'p':
		r = parse_option_uint("--pid", arg, 1, INT32_MAX, &value);
		o->has_pid = r >= 0;
		o->pid = r >= 0 ? value : 0;
		break;
	case '4':
	case '6':
		if (o->family && strcmp(o->family, c == '4' ? "inet" : "inet6") != 0)
			return cli_usage_error("-4 and -6 cannot be combined (give neither to see "
					       "both families)");
		o->family = c == '4' ? "inet" : "inet6";
		break;
	case OPT_PORT:
		r = parse_option_uint("--port", arg, 1, UINT16_MAX, &value);
		o->has_port = r >= 0;
		o->port = r >= 0 ? value : 0;
		break;
	case OPT_COMM:
		if (arg[0] == '\0' || strlen(arg) > COMM_MAX_BYTES)
			return cli_usage_error("invalid --comm '%s': a command name has 1 to %d bytes",
					       arg, COMM_MAX_BYTES);
		o->comm = arg;
		break;
	case 't':
		r = parse_types(arg, &o->types);
		break;
	case OPT_NETNS:
		r = parse_option_uint("--netns", arg, 1, UINT32_MAX, &value);
		o->has_netns = r >= 0;
		o->netns = r >= 0 ? value : 0;
		break;
	case OPT_CGROUP:
		r = parse_option_uint("--cgroup", arg, 1, UINT64_MAX, &value);
		o->has_cgroup = r >= 0;
		o->cgroup = r >= 0 ? value : 0;
		break;
	case OPT_NO_SNAPSHOT:
		o->no_snapshot = true;
		break;
	default:
		/* getopt_long() returns only the options of cli_long_options. */
		assert(false);
	}
	return r;
}

/* Report the option that getopt_long() rejected with '?'. */
static int cli_unknown_option(char **argv)
{
	const char *arg = argv[optind - 1];

	/* optopt is 0 for an unknown long option and the option's value for "--json=x". */
	if (optopt == 0)
		return cli_usage_error("unknown option '%s'", arg);
	if (strncmp(arg, "--", 2) == 0 && strchr(arg, '='))
		return cli_usage_error("option '%.*s' takes no argument", (int) strcspn(arg, "="),
				       arg);
	return cli_usage_error("unknown option '-%c'", optopt);
}

/* Name of the option that getopt_long() just returned, for messages. */
static const char *cli_option_name(int c, int long_index, char *buf, size_t size)
{
	if (long_index >= 0)
		snprintf(buf, size, "--%s", cli_long_options[long_index].name);
	else
		snprintf(buf, size, "-%c", c);
	return buf;
}

static int cli_parse_command(const char *name, enum cli_command *ret_command)
{
	if (strcmp(name, "watch") == 0)
		*ret_command = CLI_WATCH;
	else if (strcmp(name, "dump") == 0)
		*ret_command = CLI_DUMP;
	else if (strcmp(name, "stats") == 0)
		*ret_command = CLI_STATS;
	else
		return cli_usage_error("unknown command '%s': expected watch, dump or stats", name);
	return 0;
}

/*
 * Parse the command line. Options may come before or after the command. Returns 0 to run the
 * command, 1 when --help or --version was handled, -EINVAL after a usage error.
 */
static int cli_parse_args(int argc, char **argv, struct cli_options *ret_options)
{
	struct cli_options o = { .socket_path = DEFAULT_SOCKET_PATH };
	char watch_option[32] = "";
	const char *command = NULL;
	int c, long_index, r;

	/* Know the error format before the first usage error, which may precede --json. */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			json_errors = true;

	opterr = 0;
	for (;;) {
		long_index = -1;
		c = getopt_long(argc, argv, ":hp:46t:", cli_long_options, &long_index);
		if (c < 0)
			break;

		switch (c) {
		case 'h':
			cli_print_help();
			return 1;
		case OPT_VERSION:
			printf("tcptap %s\n", TCPTAP_VERSION);
			return 1;
		case OPT_SOCKET:
			r = parse_socket_path(optarg);
			if (r < 0)
				return r;
			o.socket_path = optarg;
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case ':':
			return cli_usage_error("option '%s' requires an argument", argv[optind - 1]);
		case '?':
			return cli_unknown_option(argv);
		default:
			if (watch_option[0] == '\0')
				cli_option_name(c, long_index, watch_option, sizeof(watch_option));
			r = cli_parse_watch_option(c, optarg, &o);
			if (r < 0)
				return r;
		}
	}

	if (optind >= argc)
		return cli_usage_error("missing command: expected watch, dump or stats");
	command = argv[optind];
	if (optind + 1 < argc)
		return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);

	r = cli_parse_command(command, &o.command);
	if (r < 0)
		return r;
	if (o.command != CLI_WATCH && watch_option[0] != '\0')
		return cli_usage_error("option '%s' applies to 'watch' only", watch_option);

	*ret_options = o;
	return 0;
}

/* Build the request line, '\n' included. Returns -ENOMEM on failure. */
static int request_build(const struct cli_options *o, char **ret_line)
{
	static const char *const command_names[] = {
		[CLI_WATCH] = "subscribe",
		[CLI_DUMP] = "dump",
		[CLI_STATS] = "stats",
	};
	struct json_object *request, *filter;
	char *line;
	int r = -ENOMEM;

	request = json_object_new_object();
	filter = json_object_new_object();
	if (!request || !filter)
		goto finish;

	json_object_object_add(request, "command", json_object_new_string(command_names[o->command]));

	if (o->types != 0) {
		struct json_object *types = json_object_new_array();

		for (size_t i = 0; types && i < EVENT_TYPE_COUNT; i++)
			if (o->types & (1u << i))
				json_object_array_add(types, json_object_new_string(event_type_names[i]));
		json_object_object_add(filter, "types", types);
	}
	if (o->has_pid)
		json_object_object_add(filter, "pid", json_object_new_int64(o->pid));
	if (o->comm)
		json_object_object_add(filter, "comm", json_object_new_string(o->comm));
	if (o->has_port)
		json_object_object_add(filter, "port", json_object_new_int64(o->port));
	if (o->family)
		json_object_object_add(filter, "family", json_object_new_string(o->family));
	if (o->has_netns)
		json_object_object_add(filter, "netns", json_object_new_int64(o->netns));
	if (o->has_cgroup)
		json_object_object_add(filter, "cgroup", json_object_new_uint64(o->cgroup));

	if (json_object_object_length(filter) > 0) {
		json_object_object_add(request, "filter", filter);
		filter = NULL;
	}

	if (asprintf(&line, "%s\n", json_object_to_json_string_ext(request,
			JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
		goto finish;

	*ret_line = line;
	r = 0;
finish:
	json_object_put(filter);
	json_object_put(request);
	return r;
}

static int daemon_connect(const char *path, int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	/* cli_parse_args() checked that the path fits sun_path with its NUL. */
	memcpy(sa.sun_path, path, strlen(path));

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		return cli_fail(r, "connect_failed", "failed to create a UNIX socket: %s",
				strerror(-r));
	}

	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
		r = -errno;
		(void) close(fd);

		switch (r) {
		case -ENOENT:
		case -ECONNREFUSED:
			return cli_fail(r, "not_running", "cannot connect to %s: daemon not running "
					"(start it with 'systemctl start tcptapd')", path);
		case -EACCES:
		case -EPERM:
			return cli_fail(r, "permission_denied", "cannot connect to %s: permission "
					"denied (only root and members of group 'tcptap' may connect, "
					"so add your user to that group and log in again)", path);
		default:
			return cli_fail(r, "connect_failed", "cannot connect to %s: %s", path,
					strerror(-r));
		}
	}

	*ret_fd = fd;
	return 0;
}

static int daemon_send_request(int fd, const char *line)
{
	size_t len = strlen(line), sent = 0;

	while (sent < len) {
		ssize_t n = send(fd, line + sent, len - sent, MSG_NOSIGNAL);

		if (n < 0) {
			int r = -errno;

			if (r == -EINTR)
				continue;
			/*
			 * The daemon closed the connection before reading the request, for
			 * example because it has too many clients. The error record it sent
			 * first is still readable, so let the reader report the reason.
			 */
			if (r == -EPIPE || r == -ECONNRESET)
				return 0;
			return cli_fail(r, "io_error", "failed to send the request to the daemon: %s",
					strerror(-r));
		}
		sent += n;
	}
	return 0;
}

/* One connection to the daemon and the state of printing its reply. */
struct session {
	const struct cli_options *options;
	struct line_reader reader;
	struct json_tokener *tokener;
	uint64_t line_number;		/* of the last line read, from 1 */
	char *line;			/* the last line read, without '\n' */
	size_t line_len;
	int64_t realtime_offset_ns;	/* CLOCK_REALTIME - CLOCK_MONOTONIC at start */
	int addr_width;			/* width of the SADDR and DADDR columns */
};

static int session_protocol_error(struct session *s, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static int session_protocol_error(struct session *s, const char *format, ...)
{
	char *detail = NULL;
	va_list ap;
	int r;

	va_start(ap, format);
	r = vasprintf(&detail, format, ap);
	va_end(ap);

	(void) cli_fail(-EPROTO, "protocol_error", "protocol error in line %" PRIu64 " from the "
			"daemon: %s (are tcptap %s and tcptapd the same version?)", s->line_number,
			r < 0 ? format : detail, TCPTAP_VERSION);
	free(detail);
	return -EPROTO;
}



/* Turn line_reader_next()'s result r <= 0 into this file's conventions. */
static int session_line_result(struct session *s, int r)
{
	if (r == 0)
		return 0;
	s->line_number++;
	if (r == -EMSGSIZE)
		return session_protocol_error(s, "the line is longer than %d bytes", LINE_MAX_BYTES);
	if (r == -EPROTO)
		return session_protocol_error(s, "the connection closed in the middle of the line");
	if (r == -ETIMEDOUT)
		return cli_fail(r, "timeout", "timed out after %d s waiting for the daemon at %s",
				REPLY_TIMEOUT_MS / 1000, s->options->socket_path);
	return cli_fail(r, "io_error", "failed to read from the daemon: %s", strerror(-r));
}

/* Parse the line just read. Returns 1 with the record and its type, or a negative errno. */
static int session_parse_line(struct session *s, struct json_object **ret_record,
			      const char **ret_type)
{
	enum json_tokener_error error;
	struct json_object *record, *type;

	s->line_number++;
	/* The tokener is strict, so data after the object other than blanks is an error too. */
	json_tokener_reset(s->tokener);
	record = json_tokener_parse_ex(s->tokener, s->line, s->line_len);
	error = json_tokener_get_error(s->tokener);
	if (!record && error == json_tokener_success)
		return session_protocol_error(s, "expected a JSON object, got null");
	if (error == json_tokener_continue)
		return session_protocol_error(s, "the JSON value is incomplete");
	if (error != json_tokener_success)
		return session_protocol_error(s, "invalid JSON: %s", json_tokener_error_desc(error));

	if (!json_object_is_type(record, json_type_object)) {
		json_object_put(record);
		return session_protocol_error(s, "expected a JSON object");
	}
	if (!json_object_object_get_ex(record, "type", &type) ||
	    !json_object_is_type(type, json_type_string)) {
		json_object_put(record);
		return session_protocol_error(s, "the record has no string 'type'");
	}

	*ret_record = record;
	*ret_type = json_object_get_string(type);
	return 1;
}

/*
 * Read and parse the next line. Returns 1 with the record in *ret_record (a new reference)
 * and its "type" in *ret_type, 0 at the end of the stream, or a negative errno after printing
 * the error.
 */
static int session_next_record(struct session *s, struct json_object **ret_record,
			       const char **ret_type)
{
	int r;

	r = line_reader_next(&s->reader, &s->line, &s->line_len);
	if (r <= 0)
		return session_line_result(s, r);
	return session_parse_line(s, ret_record, ret_type);
}

/* Returns 0, CLI_STOP when stdout is a closed pipe, or a negative errno after printing it. */
static int output_check(void)
{
	int r;

	if (!ferror(stdout))
		return 0;

	r = errno;
	if (r == EPIPE)
		return CLI_STOP;
	return cli_fail(-r, "io_error", "failed to write to standard output: %s", strerror(r));
}

/* Copy the last line read to stdout, unchanged, for --json. */
static int session_pass_line(struct session *s)
{
	(void) fwrite(s->line, 1, s->line_len, stdout);
	(void) fputc('\n', stdout);
	if (!line_reader_has_line(&s->reader))
		(void) fflush(stdout);
	return output_check();
}

/* Look up an integer field from min to max. */
static int json_get_int(struct json_object *obj, const char *key, int64_t min, int64_t max,
			int64_t *ret_value)
{
	struct json_object *v;
	int64_t value;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int))
		return -EINVAL;
	value = json_object_get_int64(v);
	if (value < min || value > max)
		return -ERANGE;
	*ret_value = value;
	return 0;
}

static const char *json_get_string(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The fields of an event or snapshot record that the text tables show. */
struct conn_row {
	int64_t ts_ns;
	int64_t pid;
	char comm[64];
	char ip;			/* '4' or '6' */
	char saddr[INET6_ADDRSTRLEN];
	int64_t sport;
	char daddr[INET6_ADDRSTRLEN];
	int64_t dport;
	uint64_t cookie;
};

static int conn_row_parse_addr(struct session *s, struct json_object *record, const char *key,
			       int family, char *buf)
{
	const char *addr = json_get_string(record, key);
	unsigned char binary[sizeof(struct in6_addr)];

	if (!addr || inet_pton(family, addr, binary) != 1)
		return session_protocol_error(s, "field '%s' is missing or not an IPv%c address",
					      key, family == AF_INET ? '4' : '6');
	/* inet_pton() accepted it, so it fits INET6_ADDRSTRLEN. */
	snprintf(buf, INET6_ADDRSTRLEN, "%s", addr);
	return 0;
}

/* Check and extract the fields that every event and snapshot record carries. */
static int conn_row_parse(struct session *s, struct json_object *record, struct conn_row *ret_row)
{
	static const struct {
		const char *key;
		int64_t max;
	} int_fields[] = {
		{ "ts_ns", INT64_MAX },
		{ "pid", UINT32_MAX },
		{ "sport", UINT16_MAX },
		{ "dport", UINT16_MAX },
		{ "cookie", INT64_MAX },
	};
	int64_t values[sizeof(int_fields) / sizeof(int_fields[0])];
	struct conn_row row = {};
	const char *comm, *family;
	struct json_object *cookie;
	int af, r;

	for (size_t i = 0; i < sizeof(int_fields) / sizeof(int_fields[0]); i++)
		if (json_get_int(record, int_fields[i].key, 0, int_fields[i].max, &values[i]) < 0)
			return session_protocol_error(s, "field '%s' is missing or not an integer "
						      "from 0 to %" PRId64, int_fields[i].key,
						      int_fields[i].max);

	comm = json_get_string(record, "comm");
	if (!comm)
		return session_protocol_error(s, "field 'comm' is missing or not a string");

	family = json_get_string(record, "family");
	if (family && strcmp(family, "inet") == 0) {
		af = AF_INET;
		row.ip = '4';
	} else if (family && strcmp(family, "inet6") == 0) {
		af = AF_INET6;
		row.ip = '6';
	} else
		return session_protocol_error(s, "field 'family' is missing or not inet or inet6");

	r = conn_row_parse_addr(s, record, "saddr", af, row.saddr);
	if (r < 0)
		return r;
	r = conn_row_parse_addr(s, record, "daddr", af, row.daddr);
	if (r < 0)
		return r;

	row.ts_ns = values[0];
	row.pid = values[1];
	row.sport = values[2];
	row.dport = values[3];
	/* json_object_get_int64() clamps values above INT64_MAX, which a cookie may reach. */
	json_object_object_get_ex(record, "cookie", &cookie);
	row.cookie = json_object_get_uint64(cookie);
	text_sanitize(comm, row.comm, sizeof(row.comm));

	*ret_row = row;
	return 0;
}

/* Format a CLOCK_MONOTONIC timestamp as local wall-clock time HH:MM:SS.mmm. */
static const char *format_wall_time(const struct session *s, int64_t ts_ns, char *buf,
				    size_t size)
{
	int64_t wall_ns = ts_ns + s->realtime_offset_ns;
	time_t seconds = wall_ns / NSEC_PER_SEC;
	struct tm tm;

	if (wall_ns < 0 || !localtime_r(&seconds, &tm)) {
		snprintf(buf, size, "??:??:??.???");
		return buf;
	}
	snprintf(buf, size, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int) (wall_ns % NSEC_PER_SEC / NSEC_PER_MSEC));
	return buf;
}

static int64_t clock_realtime_offset_ns(void)
{
	struct timespec monotonic, realtime;

	(void) clock_gettime(CLOCK_MONOTONIC, &monotonic);
	(void) clock_gettime(CLOCK_REALTIME, &realtime);
	return (realtime.tv_sec - monotonic.tv_sec) * NSEC_PER_SEC +
	       (realtime.tv_nsec - monotonic.tv_nsec);
}

static void watch_print_header(const struct session *s)
{
	printf("%-12s %-14s %7s %-15s %-2s %-*s %5s %-*s %5s\n", "TIME", "TYPE", "PID", "COMM",
	       "IP", s->addr_width, "SADDR", "SPORT", s->addr_width, "DADDR", "DPORT");
}

/*
 * Print one watch row. After DPORT come the errno name of a connect_failed record and "late"
 * for a record the daemon released behind newer ones.
 */
static int watch_print_row(struct session *s, struct json_object *record, const char *label)
{
	char time_buf[32], error_buf[64];
	struct conn_row row;
	struct json_object *late;
	const char *error;
	int r;

	r = conn_row_parse(s, record, &row);
	if (r < 0)
		return r;

	error = strcmp(label, "connect_failed") == 0 ? json_get_string(record, "error") : NULL;
	if (strcmp(label, "connect_failed") == 0 && !error)
		return session_protocol_error(s, "connect_failed record without string 'error'");

	printf("%-12s %-14s %7" PRId64 " %-15s %-2c %-*s %5" PRId64 " %-*s %5" PRId64,
	       format_wall_time(s, row.ts_ns, time_buf, sizeof(time_buf)), label, row.pid,
	       row.comm, row.ip, s->addr_width, row.saddr, row.sport, s->addr_width, row.daddr,
	       row.dport);

	if (error)
		printf(" %s", text_sanitize(error, error_buf, sizeof(error_buf)));
	if (json_object_object_get_ex(record, "late", &late) && json_object_get_boolean(late))
		printf(" late");
	putchar('\n');

	return output_check();
}

static void dump_print_header(const struct session *s)
{
	printf("%-8s %7s %-15s %-2s %-*s %5s %-*s %5s %s\n", "ORIGIN", "PID", "COMM", "IP",
	       s->addr_width, "SADDR", "SPORT", s->addr_width, "DADDR", "DPORT", "COOKIE");
}

static int dump_print_row(struct session *s, struct json_object *record)
{
	const char *origin = json_get_string(record, "origin");
	char origin_buf[32];
	struct conn_row row;
	int r;

	if (!origin)
		return session_protocol_error(s, "snapshot record without string 'origin'");

	r = conn_row_parse(s, record, &row);
	if (r < 0)
		return r;

	printf("%-8s %7" PRId64 " %-15s %-2c %-*s %5" PRId64 " %-*s %5" PRId64 " %" PRIu64 "\n",
	       text_sanitize(origin, origin_buf, sizeof(origin_buf)), row.pid, row.comm, row.ip,
	       s->addr_width, row.saddr, row.sport, s->addr_width, row.daddr, row.dport,
	       row.cookie);

	return output_check();
}

/* Print an error record of the daemon. Returns -EREMOTEIO. */
static int session_report_error_record(struct json_object *record)
{
	const char *code = json_get_string(record, "code");
	const char *message = json_get_string(record, "message");

	if (json_errors)
		return cli_fail(-EREMOTEIO, code ? code : "daemon_error", "%s",
				message ? message : "the daemon reported an error");
	return cli_fail(-EREMOTEIO, "daemon_error", "the daemon reported an error (%s): %s",
			code ? code : "no code", message ? message : "no message");
}

/* Print an overflow record: the daemon dropped this client. Returns -ENOBUFS. */
static int session_report_overflow(struct json_object *record)
{
	int64_t queued = -1, limit = -1;

	(void) json_get_int(record, "queued_bytes", 0, INT64_MAX, &queued);
	(void) json_get_int(record, "limit_bytes", 0, INT64_MAX, &limit);

	if (queued >= 0 && limit >= 0)
		return cli_fail(-ENOBUFS, "overflow", "the daemon disconnected this client because "
				"it fell behind (%" PRId64 " bytes queued, limit %" PRId64 "). Read "
				"the output faster or filter the events.", queued, limit);
	return cli_fail(-ENOBUFS, "overflow", "the daemon disconnected this client because it "
			"fell behind. Read the output faster or filter the events.");
}

/*
 * Handle the records that end a reply with an error wherever they come. Returns 0 if record
 * is not one of them, else the negative errno of the reported error.
 */
static int session_check_fatal(struct session *s, struct json_object *record, const char *type)
{
	bool is_error = strcmp(type, "error") == 0, is_overflow = strcmp(type, "overflow") == 0;
	int r;

	if (!is_error && !is_overflow)
		return 0;

	/*
	 * In --json mode the record goes to stdout like every other line. The error is reported
	 * on stderr even when stdout is a closed pipe, because it ends the run with a failure.
	 */
	if (s->options->json) {
		r = session_pass_line(s);
		if (r < 0)
			return r;
	}
	return is_error ? session_report_error_record(record) : session_report_overflow(record);
}

/* Read the hello record and check that the daemon speaks this client's protocol. */
static int session_read_hello(struct session *s, struct json_object **ret_hello)
{
	struct json_object *hello = NULL;
	const char *type;
	int64_t protocol;
	int r;

	r = session_next_record(s, &hello, &type);
	if (r == 0)
		return cli_fail(-ECONNRESET, "disconnected",
				"the daemon closed the connection before sending hello");
	if (r < 0)
		return r;

	r = session_check_fatal(s, hello, type);
	if (r < 0)
		goto fail;
	if (strcmp(type, "hello") != 0) {
		r = session_protocol_error(s, "expected a hello record, got '%s'", type);
		goto fail;
	}
	if (json_get_int(hello, "protocol", 0, INT64_MAX, &protocol) < 0) {
		r = session_protocol_error(s, "hello has no integer 'protocol'");
		goto fail;
	}
	if (protocol != PROTOCOL_VERSION) {
		r = cli_fail(-EPROTONOSUPPORT, "protocol_error", "the daemon speaks protocol %"
			     PRId64 " but tcptap %s speaks protocol %d, so install matching versions "
			     "of tcptap and tcptapd", protocol, TCPTAP_VERSION, PROTOCOL_VERSION);
		goto fail;
	}

	if (s->options->json) {
		r = session_pass_line(s);
		if (r != 0)
			goto fail;
	}

	*ret_hello = hello;
	return 0;
fail:
	json_object_put(hello);
	return r;
}

/* Check a snapshot_end record against the number of snapshot records that arrived. */
static int session_check_snapshot_end(struct session *s, struct json_object *record,
				      uint64_t received)
{
	int64_t count;

	if (json_get_int(record, "count", 0, INT64_MAX, &count) < 0)
		return session_protocol_error(s, "snapshot_end has no integer 'count'");
	if ((uint64_t) count != received)
		return session_protocol_error(s, "snapshot_end counts %" PRId64 " records but %"
					      PRIu64 " arrived", count, received);
	if (s->options->json)
		return session_pass_line(s);
	return 0;
}

typedef int (*snapshot_print_t)(struct session *s, struct json_object *record);

/*
 * Read snapshot records up to snapshot_end and print each with print, or hide them if print
 * is NULL. Returns 0 after snapshot_end, CLI_STOP, or a negative errno.
 */
static int session_read_snapshot(struct session *s, snapshot_print_t print)
{
	uint64_t received = 0;
	bool end = false;

	while (!end) {
		struct json_object *record;
		const char *type;
		int r;

		r = session_next_record(s, &record, &type);
		if (r == 0)
			return cli_fail(-ECONNRESET, "disconnected", "the daemon closed the connection "
					"before the end of the snapshot");
		if (r < 0)
			return r;

		r = session_check_fatal(s, record, type);
		if (r == 0 && strcmp(type, "snapshot") == 0) {
			received++;
			r = print ? print(s, record) : 0;
		} else if (r == 0 && strcmp(type, "snapshot_end") == 0) {
			r = session_check_snapshot_end(s, record, received);
			end = true;
		} else if (r == 0)
			r = session_protocol_error(s, "expected a snapshot or snapshot_end record, "
						   "got '%s'", type);

		json_object_put(record);
		if (r != 0)
			return r;
	}
	return 0;
}

static int watch_print_snapshot(struct session *s, struct json_object *record)
{
	if (s->options->json)
		return session_pass_line(s);
	return watch_print_row(s, record, "snapshot");
}

static int dump_print_snapshot(struct session *s, struct json_object *record)
{
	if (s->options->json)
		return session_pass_line(s);
	return dump_print_row(s, record);
}

/* Report a lost record on stderr in text mode: the kernel dropped events of one CPU. */
static int watch_report_lost(struct session *s, struct json_object *record)
{
	int64_t cpu, count, ts_ns;
	char time_buf[32];

	if (json_get_int(record, "count", 0, INT64_MAX, &count) < 0)
		return session_protocol_error(s, "lost record without integer 'count'");
	if (json_get_int(record, "cpu", 0, INT64_MAX, &cpu) < 0) {
		/* "reason": "nested": the kernel skipped program runs on an
		 * unknown CPU. */
		(void) fflush(stdout);
		fprintf(stderr, "tcptap: %" PRId64 " events lost: the kernel skipped tracing "
			"programs that would have run nested on a busy CPU\n", count);
		return 0;
	}

	if (json_get_int(record, "ts_ns", 0, INT64_MAX, &ts_ns) < 0)
		snprintf(time_buf, sizeof(time_buf), "an unknown time");
	else
		format_wall_time(s, ts_ns, time_buf, sizeof(time_buf));

	(void) fflush(stdout);
	fprintf(stderr, "tcptap: %" PRId64 " events lost on cpu %" PRId64 " at %s: the kernel's "
		"perf buffer for that CPU was full (tcptapd --perf-pages sets its size)\n", count,
		cpu, time_buf);
	return 0;
}

/* Print one live record. Returns 0 to go on, CLI_STOP, or a negative errno. */
static int watch_handle_live(struct session *s, struct json_object *record, const char *type)
{
	static const char *const unexpected[] = { "hello", "snapshot", "snapshot_end", "stats" };
	int r;

	r = session_check_fatal(s, record, type);
	if (r < 0)
		return r;

	for (size_t i = 0; i < sizeof(unexpected) / sizeof(unexpected[0]); i++)
		if (strcmp(type, unexpected[i]) == 0)
			return session_protocol_error(s, "unexpected '%s' record in the live stream",
						      type);

	if (s->options->json)
		return session_pass_line(s);

	for (size_t i = 0; i < EVENT_TYPE_COUNT; i++)
		if (strcmp(type, event_type_names[i]) == 0)
			return watch_print_row(s, record, event_type_names[i]);
	if (strcmp(type, "lost") == 0)
		return watch_report_lost(s, record);

	/* Record types newer than this client carry nothing the text table can show. */
	return 0;
}

static int cli_watch(struct session *s)
{
	struct json_object *hello = NULL;
	int r;

	r = session_read_hello(s, &hello);
	if (r != 0)
		return r;

	if (!s->options->json) {
		const char *clock = json_get_string(hello, "clock");

		/* The TIME column converts CLOCK_MONOTONIC timestamps and no other clock. */
		if (!clock || strcmp(clock, "CLOCK_MONOTONIC") != 0) {
			r = session_protocol_error(s, "hello names clock '%s', expected "
						   "CLOCK_MONOTONIC", clock ? clock : "");
			json_object_put(hello);
			return r;
		}
		watch_print_header(s);
	}
	json_object_put(hello);

	r = output_check();
	if (r != 0)
		return r;

	r = session_read_snapshot(s, s->options->no_snapshot ? NULL : watch_print_snapshot);
	if (r != 0)
		return r;

	/* Records of a subscription may be minutes apart. */
	s->reader.timeout_ms = -1;

	for (;;) {
		struct json_object *record;
		const char *type;

		r = line_reader_next(&s->reader, &s->line, &s->line_len);
		if (r <= 0)
			r = session_line_result(s, r);
		if (r == 0)
			return cli_fail(-ECONNRESET, "disconnected", "the daemon closed the "
					"connection (it stopped or restarted)");
		if (r < 0)
			return r;

		/* Event and lost records, most of the stream, are the only lines that start
		 * with "seq"; --json passes them on unparsed, because parsing each one made
		 * this client fall behind the daemon at full load. */
		if (s->options->json && s->line_len >= LIVE_RECORD_PREFIX_LEN &&
		    memcmp(s->line, LIVE_RECORD_PREFIX, LIVE_RECORD_PREFIX_LEN) == 0) {
			s->line_number++;
			r = session_pass_line(s);
			if (r != 0)
				return r;
			continue;
		}

		r = session_parse_line(s, &record, &type);
		if (r < 0)
			return r;

		r = watch_handle_live(s, record, type);
		json_object_put(record);
		if (r != 0)
			return r;
	}
}

static int cli_dump(struct session *s)
{
	struct json_object *hello = NULL;
	int r;

	r = session_read_hello(s, &hello);
	if (r != 0)
		return r;
	json_object_put(hello);

	if (!s->options->json) {
		dump_print_header(s);
		r = output_check();
		if (r != 0)
			return r;
	}

	return session_read_snapshot(s, dump_print_snapshot);
}

static int cli_stats(struct session *s)
{
	struct json_object *hello = NULL, *stats = NULL;
	const char *type;
	int r;

	r = session_read_hello(s, &hello);
	if (r != 0)
		return r;

	r = session_next_record(s, &stats, &type);
	if (r == 0)
		r = cli_fail(-ECONNRESET, "disconnected",
			     "the daemon closed the connection before sending the stats");
	if (r < 0)
		goto finish;

	r = session_check_fatal(s, stats, type);
	if (r < 0)
		goto finish;
	if (strcmp(type, "stats") != 0) {
		r = session_protocol_error(s, "expected a stats record, got '%s'", type);
		goto finish;
	}

	if (s->options->json) {
		r = session_pass_line(s);
		goto finish;
	}

	printf("daemon:\n");
	r = text_print_object(hello, 2, true);
	if (r == 0)
		r = text_print_object(stats, 0, true);
	if (r < 0) {
		r = cli_fail(r, "io_error", "failed to format the stats: %s", strerror(-r));
		goto finish;
	}
	r = output_check();
finish:
	json_object_put(stats);
	json_object_put(hello);
	return r;
}

static int cli_run(const struct cli_options *o)
{
	struct session s = {
		.options = o,
		.reader = { .fd = -1, .timeout_ms = REPLY_TIMEOUT_MS },
		.addr_width = o->family && strcmp(o->family, "inet6") == 0 ?
			      ADDR_WIDTH_INET6 : ADDR_WIDTH_INET,
	};
	char *request = NULL;
	int r;

	/* With SIGPIPE ignored, a write to a closed pipe fails with EPIPE and ends the run. */
	(void) signal(SIGPIPE, SIG_IGN);
	/* Text rows are flushed as they are printed, so pipes and `| head` see them at once.
	 * --json output is flushed whenever no further line is waiting (session_pass_line()):
	 * the same for a reader, without a write() per record at full load. */
	if (o->json)
		(void) setvbuf(stdout, NULL, _IOFBF, JSON_OUTPUT_BUFFER_BYTES);
	else
		(void) setvbuf(stdout, NULL, _IOLBF, 0);

	s.realtime_offset_ns = clock_realtime_offset_ns();

	s.tokener = json_tokener_new();
	if (!s.tokener || request_build(o, &request) < 0) {
		r = cli_fail(-ENOMEM, "io_error", "failed to build the request: out of memory");
		goto finish;
	}
	json_tokener_set_flags(s.tokener, JSON_TOKENER_STRICT);

	r = daemon_connect(o->socket_path, &s.reader.fd);
	if (r < 0)
		goto finish;

	r = daemon_send_request(s.reader.fd, request);
	if (r < 0)
		goto finish;

	if (o->command == CLI_WATCH)
		r = cli_watch(&s);
	else if (o->command == CLI_DUMP)
		r = cli_dump(&s);
	else
		r = cli_stats(&s);

	if (r >= 0 && fflush(stdout) != 0 && errno != EPIPE) {
		int error = errno;

		r = cli_fail(-error, "io_error", "failed to write to standard output: %s",
			     strerror(error));
	}
finish:
	if (s.reader.fd >= 0)
		(void) close(s.reader.fd);
	line_reader_free(&s.reader);
	if (s.tokener)
		json_tokener_free(s.tokener);
	free(request);
	return r;
}

int main(int argc, char **argv)
{
	struct cli_options options;
	int r;

	r = cli_parse_args(argc, argv, &options);
	if (r < 0)
		return EXIT_USAGE;
	if (r > 0)
		return EXIT_SUCCESS;

	return cli_run(&options) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
