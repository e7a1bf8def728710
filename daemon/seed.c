// SPDX-License-Identifier: LGPL-2.1-or-later
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "seed.h"

#define DIAG_BUFFER_BYTES 32768
#define MAX_NAMESPACES 4096

struct netns_ref {
	uint32_t inode;
	char path[64];		/* /proc/<pid>/ns/net or /run/netns/<name> */
};

struct netns_set {
	struct netns_ref items[MAX_NAMESPACES];
	size_t count;
};

static int seed_list_push(struct seed_list *list, const struct seed_conn *c)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 256;
		struct seed_conn *items = realloc(list->items, capacity * sizeof(*items));

		if (!items)
			return -ENOMEM;
		list->items = items;
		list->capacity = capacity;
	}
	list->items[list->count++] = *c;
	return 0;
}

void seed_list_clear(struct seed_list *list)
{
	free(list->items);
	*list = (struct seed_list){ 0 };
}

static void netns_add(struct netns_set *set, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return;
	for (size_t i = 0; i < set->count; i++)
		if (set->items[i].inode == (uint32_t)st.st_ino)
			return;
	if (set->count == MAX_NAMESPACES)
		return;
	set->items[set->count].inode = (uint32_t)st.st_ino;
	snprintf(set->items[set->count].path, sizeof(set->items[0].path), "%s", path);
	set->count++;
}

static void netns_collect(struct netns_set *set)
{
	struct dirent *de;
	DIR *dir;
	char path[300];

	netns_add(set, "/proc/self/ns/net");

	dir = opendir("/proc");
	if (dir) {
		while ((de = readdir(dir))) {
			if (!isdigit((unsigned char)de->d_name[0]))
				continue;
			snprintf(path, sizeof(path), "/proc/%s/ns/net", de->d_name);
			netns_add(set, path);
		}
		closedir(dir);
	}

	/* Namespaces made by `ip netns add` may have no process in them. */
	dir = opendir("/run/netns");
	if (dir) {
		while ((de = readdir(dir))) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/run/netns/%s", de->d_name);
			netns_add(set, path);
		}
		closedir(dir);
	}
}

/* A NETLINK_SOCK_DIAG socket bound to the namespace at path: the socket keeps
 * the namespace it was created in, so the thread switches back at once. */
static int diag_socket_in(const char *path, int home_fd)
{
	int ns_fd, fd, err;

	ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ns_fd < 0)
		return -errno;
	if (setns(ns_fd, CLONE_NEWNET) < 0) {
		err = -errno;
		close(ns_fd);
		return err;
	}
	close(ns_fd);

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	err = fd < 0 ? -errno : 0;

	if (setns(home_fd, CLONE_NEWNET) < 0) {
		/* Staying in a foreign namespace would be worse than exiting. */
		log_error("Failed to return to the original network namespace: %s",
			  strerror(errno));
		abort();
	}
	return err < 0 ? err : fd;
}

static void fill_from_diag(struct seed_conn *c, const struct inet_diag_msg *msg, uint32_t netns)
{
	static const uint8_t v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const struct inet_diag_sockid *id = &msg->id;

	memset(c, 0, sizeof(*c));
	c->inode = msg->idiag_inode;
	c->state = msg->idiag_state;
	c->ev.netns = netns;
	c->ev.uid = msg->idiag_uid;
	c->ev.cookie = (uint64_t)id->idiag_cookie[0] | ((uint64_t)id->idiag_cookie[1] << 32);
	c->ev.sport = ntohs(id->idiag_sport);
	c->ev.dport = ntohs(id->idiag_dport);

	if (msg->idiag_family == AF_INET6 &&
	    memcmp(id->idiag_dst, v4mapped_prefix, sizeof(v4mapped_prefix)) != 0) {
		c->ev.family = TCPTAP_FAMILY_INET6;
		memcpy(c->ev.saddr_be, id->idiag_src, 16);
		memcpy(c->ev.daddr_be, id->idiag_dst, 16);
		return;
	}
	/* IPv4, or an IPv6 socket talking to an IPv4-mapped address, which is
	 * reported as IPv4 like the BPF side does. */
	c->ev.family = TCPTAP_FAMILY_INET;
	if (msg->idiag_family == AF_INET6) {
		memcpy(c->ev.saddr_be, (const uint8_t *)id->idiag_src + 12, 4);
		memcpy(c->ev.daddr_be, (const uint8_t *)id->idiag_dst + 12, 4);
	} else {
		memcpy(c->ev.saddr_be, id->idiag_src, 4);
		memcpy(c->ev.daddr_be, id->idiag_dst, 4);
	}
}

static int diag_dump_family(int fd, uint8_t family, uint32_t netns, struct seed_list *list)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} request = {
		.nlh = {
			.nlmsg_len = sizeof(request),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
		},
		.req = {
			.sdiag_family = family,
			.sdiag_protocol = IPPROTO_TCP,
			.idiag_states = (1u << TCP_ESTABLISHED) | (1u << TCP_CLOSE_WAIT) |
				(1u << TCP_SYN_SENT),
		},
	};
	static char buf[DIAG_BUFFER_BYTES] __attribute__((aligned(NLMSG_ALIGNTO)));

	if (send(fd, &request, sizeof(request), 0) < 0)
		return -errno;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		struct nlmsghdr *h;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			const struct inet_diag_msg *msg = NLMSG_DATA(h);
			struct seed_conn c;
			int err;

			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error < 0 ? e->error : -EIO;
			}
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*msg)))
				continue;
			/* Sockets still in an accept queue have no inode: their
			 * accept record introduces them. */
			if (msg->idiag_inode == 0)
				continue;
			fill_from_diag(&c, msg, netns);
			err = seed_list_push(list, &c);
			if (err < 0)
				return err;
		}
	}
}

int seed_dump_all(struct seed_list *list)
{
	static struct netns_set set;
	int home_fd;

	set.count = 0;
	netns_collect(&set);

	home_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home_fd < 0)
		return -errno;

	for (size_t i = 0; i < set.count; i++) {
		int fd, err;

		fd = diag_socket_in(set.items[i].path, home_fd);
		if (fd < 0) {
			/* A process can exit between listing and entering. */
			list->failed_namespaces++;
			log_debug("Failed to enter network namespace %u via '%s': %s",
				  set.items[i].inode, set.items[i].path, strerror(-fd));
			continue;
		}
		err = diag_dump_family(fd, AF_INET, set.items[i].inode, list);
		if (!err)
			err = diag_dump_family(fd, AF_INET6, set.items[i].inode, list);
		close(fd);
		if (err == -ENOMEM) {
			close(home_fd);
			return err;
		}
		if (err < 0) {
			list->failed_namespaces++;
			log_warning("Failed to dump the TCP sockets of network namespace %u: %s",
				    set.items[i].inode, strerror(-err));
			continue;
		}
		list->namespaces++;
	}
	close(home_fd);
	return 0;
}

static int compare_inode(const void *a, const void *b)
{
	const struct seed_conn *x = a, *y = b;

	return (x->inode > y->inode) - (x->inode < y->inode);
}

/* Mount point of the cgroup v2 hierarchy: /sys/fs/cgroup on most systems,
 * /sys/fs/cgroup/unified in hybrid set-ups. "" if there is none. */
static const char *cgroup2_mount(void)
{
	static char mount[256];
	static bool looked_up;
	char line[1024];
	FILE *f;

	if (looked_up)
		return mount;
	looked_up = true;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return mount;
	while (fgets(line, sizeof(line), f)) {
		char point[256], fstype[64];
		const char *sep = strstr(line, " - ");

		/* Fields: id parent major:minor root mount-point ... - fstype ... */
		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %255s", point) == 1) {
			snprintf(mount, sizeof(mount), "%s", point);
			break;
		}
	}
	fclose(f);
	return mount;
}

/* cgroup v2 id of pid: the inode of its cgroup directory. */
static uint64_t read_cgroup_id(const char *pid)
{
	char path[300], line[512], dir[800];
	const char *root = cgroup2_mount();
	struct stat st;
	FILE *f;

	if (!root[0])
		return 0;

	snprintf(path, sizeof(path), "/proc/%s/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		snprintf(dir, sizeof(dir), "%s%s", root, line + 3);
		fclose(f);
		return stat(dir, &st) == 0 ? (uint64_t)st.st_ino : 0;
	}
	fclose(f);
	return 0;
}

static void attribute_to(struct seed_conn *c, const char *pid, uint64_t cgroup)
{
	char path[300];
	FILE *f;

	c->ev.pid = (uint32_t)strtoul(pid, NULL, 10);
	c->ev.tid = c->ev.pid;
	c->ev.cgroup = cgroup;
	snprintf(path, sizeof(path), "/proc/%s/comm", pid);
	f = fopen(path, "re");
	if (f) {
		char comm[TCPTAP_COMM_LEN + 2] = "";

		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = '\0';
			memcpy(c->ev.comm, comm, strnlen(comm, sizeof(c->ev.comm)));
		}
		fclose(f);
	}
}

/* Attribute the entries whose socket inode is open in pid's fd table. */
static size_t attribute_pid(struct seed_list *list, const char *pid)
{
	char path[300], target[64];
	struct dirent *de;
	size_t found = 0;
	uint64_t cgroup = 0;
	bool cgroup_read = false;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((de = readdir(dir))) {
		struct seed_conn key, *c;
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/fd/%s", pid, de->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "socket:[", 8) != 0)
			continue;
		key.inode = (uint32_t)strtoul(target + 8, NULL, 10);
		c = bsearch(&key, list->items, list->count, sizeof(*list->items), compare_inode);
		if (!c || c->ev.pid != 0)
			continue;
		if (!cgroup_read) {
			cgroup = read_cgroup_id(pid);
			cgroup_read = true;
		}
		attribute_to(c, pid, cgroup);
		found++;
	}
	closedir(dir);
	return found;
}

/* x86-64 system call numbers, as /proc/<pid>/task/<tid>/syscall prints them. */
#define X86_64_NR_ACCEPT 43
#define X86_64_NR_ACCEPT4 288

static bool thread_in_accept(const char *pid, const char *tid)
{
	char path[600], line[64];
	bool waiting = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/task/%s/syscall", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		long nr = strtol(line, NULL, 10);

		/* "running" or "-1 ..." for threads not in a system call. */
		waiting = isdigit((unsigned char)line[0]) &&
			  (nr == X86_64_NR_ACCEPT || nr == X86_64_NR_ACCEPT4);
	}
	fclose(f);
	return waiting;
}

int seed_find_accept_waiters(uint32_t **ret_tids, size_t *ret_count)
{
	size_t count = 0, capacity = 0;
	uint32_t *tids = NULL;
	struct dirent *de;
	DIR *proc;

	proc = opendir("/proc");
	if (!proc)
		return -errno;
	while ((de = readdir(proc))) {
		char path[300];
		struct dirent *te;
		DIR *tasks;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task", de->d_name);
		tasks = opendir(path);
		if (!tasks)
			continue;
		while ((te = readdir(tasks))) {
			if (!isdigit((unsigned char)te->d_name[0]) ||
			    !thread_in_accept(de->d_name, te->d_name))
				continue;
			if (count == capacity) {
				size_t n = capacity ? capacity * 2 : 64;
				uint32_t *grown = realloc(tids, n * sizeof(*grown));

				if (!grown) {
					closedir(tasks);
					closedir(proc);
					free(tids);
					return -ENOMEM;
				}
				tids = grown;
				capacity = n;
			}
			tids[count++] = (uint32_t)strtoul(te->d_name, NULL, 10);
		}
		closedir(tasks);
	}
	closedir(proc);
	*ret_tids = tids;
	*ret_count = count;
	return 0;
}

size_t seed_attribute(struct seed_list *list)
{
	struct dirent *de;
	size_t found = 0;
	DIR *dir;

	if (list->count == 0)
		return 0;
	qsort(list->items, list->count, sizeof(*list->items), compare_inode);

	dir = opendir("/proc");
	if (!dir)
		return 0;
	while ((de = readdir(dir)) && found < list->count) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		found += attribute_pid(list, de->d_name);
	}
	closedir(dir);
	return found;
}
