// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static int max_level = LOG_NOTICE;
static bool use_prefix = true;

void log_set_max_level(int level)
{
	max_level = level;
}

int log_get_max_level(void)
{
	return max_level;
}

void log_set_prefix(bool prefix)
{
	use_prefix = prefix;
}

int log_level_from_string(const char *s)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
		{ "err", LOG_ERR },	  { "error", LOG_ERR }, { "warning", LOG_WARNING },
		{ "notice", LOG_NOTICE }, { "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i].name) == 0)
			return levels[i].level;
	return -EINVAL;
}

void log_printf(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int saved_errno = errno;

	if (level > max_level)
		return;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	/* One fprintf per line so concurrent writers do not interleave. */
	if (use_prefix)
		fprintf(stderr, "<%d>%s\n", level, line);
	else
		fprintf(stderr, "%s\n", line);
	errno = saved_errno;
}

bool ratelimit_allow(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_suppressed)
{
	if (rl->begin_ns == 0 || now_ns - rl->begin_ns >= rl->interval_ns) {
		if (ret_suppressed)
			*ret_suppressed = rl->suppressed;
		rl->begin_ns = now_ns;
		rl->count = 1;
		rl->suppressed = 0;
		return true;
	}
	if (rl->count < rl->burst) {
		rl->count++;
		if (ret_suppressed)
			*ret_suppressed = 0;
		return true;
	}
	rl->suppressed++;
	return false;
}
