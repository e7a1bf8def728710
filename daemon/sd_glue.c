// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "sd_glue.h"

#define LISTEN_BACKLOG 128

static int make_parent_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int fill_address(const char *path, struct sockaddr_un *addr)
{
	*addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
	if (path[0] == '\0') {
		log_error("Failed to listen: the socket path is empty");
		return -EINVAL;
	}
	if (strlen(path) >= sizeof(addr->sun_path)) {
		log_error("Failed to listen on '%s': path longer than %zu bytes", path,
			  sizeof(addr->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(addr->sun_path, path, strlen(path) + 1);
	return 0;
}

int sd_glue_check_socket_path(const char *path)
{
	struct sockaddr_un addr;
	struct stat st;
	int fd, err;

	err = fill_address(path, &addr);
	if (err < 0)
		return err;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		log_error("Failed to listen on '%s': the file exists and is not a socket; remove "
			  "it or choose another --socket path", path);
		return -EEXIST;
	}

	/* A socket that accepts connections belongs to a running daemon; one
	 * that refuses them was left by a daemon that was killed. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	err = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? -errno : 0;
	close(fd);
	if (err == 0) {
		log_error("Failed to listen on '%s': another daemon is listening there; stop it "
			  "or choose another --socket path", path);
		return -EADDRINUSE;
	}
	return 0;
}

static int create_socket(const char *path, const char *group_name)
{
	struct sockaddr_un addr;
	struct group *grp;
	int fd, err;

	err = sd_glue_check_socket_path(path);
	if (err < 0)
		return err;
	err = fill_address(path, &addr);
	if (err < 0)
		return err;

	err = make_parent_dir(path);
	if (err < 0) {
		log_error("Failed to create the directory of '%s': %s", path, strerror(-err));
		return err;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;

	/* sd_glue_check_socket_path() found no file or a stale socket there,
	 * which would make the bind below fail with EADDRINUSE. */
	if (unlink(path) < 0 && errno != ENOENT) {
		err = -errno;
		log_error("Failed to remove stale socket '%s': %s", path, strerror(errno));
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = -errno;
		log_error("Failed to bind '%s': %s", path, strerror(errno));
		goto fail;
	}
	if (chmod(path, 0660) < 0) {
		err = -errno;
		log_error("Failed to set mode 0660 on '%s': %s", path, strerror(errno));
		goto fail;
	}
	grp = group_name ? getgrnam(group_name) : NULL;
	if (grp) {
		if (chown(path, (uid_t)-1, grp->gr_gid) < 0)
			log_warning("Failed to give '%s' to group '%s', only root can connect: %s",
				    path, group_name, strerror(errno));
	} else if (group_name) {
		log_info("Group '%s' does not exist; only root can connect to '%s'", group_name,
			 path);
	}
	if (listen(fd, LISTEN_BACKLOG) < 0) {
		err = -errno;
		log_error("Failed to listen on '%s': %s", path, strerror(errno));
		goto fail;
	}
	return fd;

fail:
	close(fd);
	return err;
}

int sd_glue_listen(const char *path, const char *group_name, int *ret_fd, bool *ret_activated)
{
	int n, fd;

	n = sd_listen_fds(1);
	if (n < 0) {
		log_error("Failed to read the sockets passed by systemd: %s", strerror(-n));
		return n;
	}
	if (n > 1) {
		log_error("Failed to use socket activation: %d sockets passed, expected 1", n);
		return -EINVAL;
	}
	if (n == 1) {
		fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			log_error("Failed to use socket activation: fd %d is not a listening "
				  "UNIX stream socket", fd);
			return -EINVAL;
		}
		*ret_fd = fd;
		*ret_activated = true;
		return 0;
	}

	fd = create_socket(path, group_name);
	if (fd < 0)
		return fd;
	*ret_fd = fd;
	*ret_activated = false;
	return 0;
}

void sd_glue_notify_ready(const char *status)
{
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void sd_glue_notify_status(const char *fmt, ...)
{
	char status[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(status, sizeof(status), fmt, ap);
	va_end(ap);
	(void)sd_notifyf(0, "STATUS=%s", status);
}

void sd_glue_notify_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1\nSTATUS=Stopping");
}
