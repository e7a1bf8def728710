/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_CAPS_H
#define TCPTAP_CAPS_H

#include <stddef.h>
#include <stdint.h>

#include <linux/capability.h>

/* Linux 5.8 added both; older headers lack them. */
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

/*
 * Capability drop once tcptapd has attached its programs, seeded its table and
 * listens. Capability sets are bit masks: bit N is capability N of
 * <linux/capability.h> (CAP_PERFMON is 38, CAP_BPF is 39).
 */

#define CAPS_BIT(cap) (UINT64_C(1) << (cap))

struct caps_state {
	uint64_t effective;
	uint64_t permitted;
	uint64_t inheritable;
	uint64_t bounding;
	uint64_t ambient;
};

/* Read the calling thread's five capability sets. */
int caps_get(struct caps_state *ret_state);

/* Compute the capabilities the running daemon still uses (see caps.c). Probes
 * the kernel, so it must run while the capabilities to probe are still held. */
uint64_t caps_runtime_set(void);

/* Reduce the effective and permitted sets to keep (intersected with what is
 * permitted now), clear the inheritable and ambient sets, shrink the bounding
 * set to keep if CAP_SETPCAP is effective, and set no_new_privs. Only the
 * calling thread changes: call it while the process has one thread. */
int caps_drop_to(uint64_t keep);

/* caps_drop_to(caps_runtime_set()), logging the capabilities that remain at
 * notice level and a failure at error level. */
int caps_drop_after_attach(void);

/* Write the names of the capabilities in mask, e.g. "cap_bpf cap_perfmon",
 * or "none", truncated to size. */
void caps_format(uint64_t mask, char *buf, size_t size);

#endif /* TCPTAP_CAPS_H */
