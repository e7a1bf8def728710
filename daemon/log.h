/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_LOG_H
#define TCPTAP_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/*
 * Logging to stderr with sd-daemon "<N>" priority prefixes, so journald keeps
 * the level when tcptapd runs under systemd. Levels follow syslog: LOG_ERR for
 * a failure being propagated, LOG_WARNING for degraded operation, LOG_NOTICE
 * for lifecycle, LOG_INFO for state changes, LOG_DEBUG for per-event detail.
 */

void log_set_max_level(int level);
int log_get_max_level(void);
/* Parse "err", "warning", "notice", "info" or "debug". Returns -EINVAL otherwise. */
int log_level_from_string(const char *s);
/* Without a prefix, for tests and interactive use where stderr is a terminal. */
void log_set_prefix(bool prefix);

void log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_printf(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_printf(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_printf(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_printf(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_printf(LOG_DEBUG, __VA_ARGS__)

/*
 * Allows at most burst messages per interval; the first message after a
 * suppressed run reports how many were dropped through ret_suppressed.
 */
struct ratelimit {
	uint64_t interval_ns;
	unsigned int burst;
	uint64_t begin_ns;
	unsigned int count;
	uint64_t suppressed;
};

#define RATELIMIT_INIT(interval_ms, burst_n) \
	{ .interval_ns = (uint64_t)(interval_ms) * 1000000ULL, .burst = (burst_n) }

bool ratelimit_allow(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_suppressed);

#endif /* TCPTAP_LOG_H */
