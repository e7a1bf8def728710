/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_SEED_H
#define TCPTAP_SEED_H

#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>

#include "../bpf/tcptap_event.h"

/*
 * Enumeration of the TCP connections that exist when tcptapd starts, in every
 * network namespace of the host, through NETLINK_SOCK_DIAG (inet_diag).
 * Namespaces are found under /proc/<pid>/ns/net and /run/netns/.
 */

struct seed_conn {
	struct tcptap_event ev;		/* family, addresses, ports, netns, cookie, uid */
	uint32_t inode;			/* socket inode, for the owner lookup */
	uint8_t state;			/* TCP_ESTABLISHED, TCP_CLOSE_WAIT or TCP_SYN_SENT */
};

struct seed_list {
	struct seed_conn *items;
	size_t count;
	size_t capacity;
	unsigned int namespaces;	/* distinct network namespaces dumped */
	unsigned int failed_namespaces;	/* namespaces that could not be entered or dumped */
};

/* Dump the ESTABLISHED, CLOSE_WAIT and SYN_SENT TCP sockets of every network
 * namespace that have a socket inode (accepted, connected or connecting; a
 * connection still in an accept queue is introduced by its accept record
 * instead). */
int seed_dump_all(struct seed_list *list);

/* Fill pid, tid, comm and cgroup of each entry from the process that has its
 * socket inode, as found in /proc/<pid>/fd. Entries no process has open keep
 * pid 0. Returns how many entries were attributed. */
size_t seed_attribute(struct seed_list *list);

void seed_list_clear(struct seed_list *list);

/* Collect the ids of the threads blocked in accept() or accept4() now, from
 * /proc/<pid>/task/<tid>/syscall, into a malloc'd array. */
int seed_find_accept_waiters(uint32_t **ret_tids, size_t *ret_count);

#endif /* TCPTAP_SEED_H */
