/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_SD_GLUE_H
#define TCPTAP_SD_GLUE_H

#include <stdbool.h>
#include <sys/types.h>

/* systemd integration: socket activation, readiness and status notification.
 * Every call is harmless when tcptapd does not run under systemd. */

/* Return the listening socket passed by systemd (LISTEN_FDS) if there is
 * one, else create, bind and listen on path: its directory is created with
 * mode 0755, the socket gets mode 0660 and, if the group exists, group
 * group_name. *ret_activated is true for a socket passed by systemd. */
int sd_glue_listen(const char *path, const char *group_name, int *ret_fd, bool *ret_activated);

/* Check that path can be used for the listening socket: nothing is there,
 * or a stale socket no daemon listens on. Logs why not and returns -EEXIST
 * for another kind of file, -EADDRINUSE for a live socket. */
int sd_glue_check_socket_path(const char *path);

void sd_glue_notify_ready(const char *status);
void sd_glue_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sd_glue_notify_stopping(void);

#endif /* TCPTAP_SD_GLUE_H */
