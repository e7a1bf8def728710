// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/capability.h>

#include "caps.h"
#include "log.h"

/*
 * Plain capget/capset/prctl instead of libcap: the daemon needs five set
 * reads, one capset and a loop of PR_CAPBSET_DROP, which is not worth a
 * library dependency in the package.
 *
 * What tcptapd does once it runs, and the capability each step needs:
 * - When a CPU comes online, perf_event_open() of its CPU-wide cpu-clock sync
 *   event and of a new set of per-CPU perf rings needs CAP_PERFMON
 *   (CAP_SYS_ADMIN before Linux 5.8) whenever kernel.perf_event_paranoid is 1
 *   or more (the kernel default is 2).
 * - Mapping that new set of rings while the old one is still mapped needs
 *   CAP_IPC_LOCK once the pages exceed kernel.perf_event_mlock_kb per online
 *   CPU, an allowance all processes of the user share, plus RLIMIT_MEMLOCK.
 *   On 2 CPUs with the kernel defaults, rings of 1024 pages already fail with
 *   EPERM without it.
 * - bpf() commands on descriptors it already has: map lookups, updates and
 *   deletes, BPF_PROG_TEST_RUN of the sync program, BPF_LINK_CREATE of a
 *   perf_event program and BPF_OBJ_GET_INFO_BY_FD. None of them checks a
 *   capability itself. On Linux 5.8 to 5.18, though, the
 *   kernel.unprivileged_bpf_disabled gate in front of every bpf() command
 *   requires CAP_BPF. Linux 5.19 (commit c8644cd0efe7) narrowed that gate to
 *   BPF_MAP_CREATE and BPF_PROG_LOAD, so probe_bpf_fd_commands_need_cap()
 *   tests which kind of kernel this is.
 * Loading programs, creating maps, attaching the tracing programs, entering
 * other network namespaces and reading /proc/<pid>/fd for the start-up seed
 * all happen before the drop.
 */

/* Capability numbers fit in 64 bits until the kernel defines a 65th. */
#define CAPS_MAX_NUMBER 63

static const char *const cap_names[] = {
	"cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
	"cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
	"cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
	"cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
	"cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
	"cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
	"cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override",
	"cap_mac_admin", "cap_syslog", "cap_wake_alarm", "cap_block_suspend", "cap_audit_read",
	"cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
};

void caps_format(uint64_t mask, char *buf, size_t size)
{
	size_t len = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	for (int cap = 0; cap <= CAPS_MAX_NUMBER && len < size; cap++) {
		const size_t nnames = sizeof(cap_names) / sizeof(cap_names[0]);
		int n;

		if (!(mask & CAPS_BIT(cap)))
			continue;
		if ((size_t)cap < nnames)
			n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", cap_names[cap]);
		else
			n = snprintf(buf + len, size - len, "%scap_%d", len ? " " : "", cap);
		if (n < 0)
			return;
		len += (size_t)n;
	}
	if (len == 0)
		snprintf(buf, size, "none");
}

/* Find the highest capability number of this kernel: PR_CAPBSET_READ fails
 * with EINVAL beyond it. */
static int last_cap(void)
{
	int cap = 0;

	while (cap < CAPS_MAX_NUMBER && prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0)
		cap++;
	return cap;
}

int caps_get(struct caps_state *ret_state)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };
	struct caps_state s = { 0 };
	int last = last_cap();

	if (syscall(SYS_capget, &header, data) < 0)
		return -errno;
	s.effective = data[0].effective | (uint64_t)data[1].effective << 32;
	s.permitted = data[0].permitted | (uint64_t)data[1].permitted << 32;
	s.inheritable = data[0].inheritable | (uint64_t)data[1].inheritable << 32;

	for (int cap = 0; cap <= last; cap++) {
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) > 0)
			s.bounding |= CAPS_BIT(cap);
		/* Fails with EINVAL before Linux 4.3, which has no ambient set. */
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) > 0)
			s.ambient |= CAPS_BIT(cap);
	}
	*ret_state = s;
	return 0;
}

static int capset_sets(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {
		{
			.effective = (uint32_t)effective,
			.permitted = (uint32_t)permitted,
			.inheritable = (uint32_t)inheritable,
		},
		{
			.effective = (uint32_t)(effective >> 32),
			.permitted = (uint32_t)(permitted >> 32),
			.inheritable = (uint32_t)(inheritable >> 32),
		},
	};

	if (syscall(SYS_capset, &header, data) < 0)
		return -errno;
	return 0;
}

/*
 * Returns 1 if bpf() commands on existing descriptors need CAP_BPF here, 0 if
 * not, or a negative errno if the probe could not run. It lowers CAP_BPF and
 * CAP_SYS_ADMIN from the effective set for one BPF_OBJ_GET_INFO_BY_FD on an
 * invalid descriptor: EPERM comes from the kernel.unprivileged_bpf_disabled
 * gate, EBADF from the command's own handler, which the gate let through.
 */
static int probe_bpf_fd_commands_need_cap(void)
{
	const uint64_t bpf_caps = CAPS_BIT(CAP_BPF) | CAPS_BIT(CAP_SYS_ADMIN);
	struct caps_state cur;
	union bpf_attr attr;
	int err, probe_errno;

	err = caps_get(&cur);
	if (err < 0)
		return err;
	if (!(cur.effective & bpf_caps))
		return 0;	/* nothing to keep either way */

	err = capset_sets(cur.effective & ~bpf_caps, cur.permitted, cur.inheritable);
	if (err < 0)
		return err;
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = UINT32_MAX;
	probe_errno = syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) < 0 ? errno : 0;
	err = capset_sets(cur.effective, cur.permitted, cur.inheritable);
	if (err < 0)
		return err;

	log_debug("bpf(BPF_OBJ_GET_INFO_BY_FD) of an invalid descriptor without CAP_BPF: %s",
		  probe_errno ? strerror(probe_errno) : "succeeded");
	return probe_errno == EPERM;
}

uint64_t caps_runtime_set(void)
{
	const uint64_t perf_bpf = CAPS_BIT(CAP_PERFMON) | CAPS_BIT(CAP_BPF);
	uint64_t keep = CAPS_BIT(CAP_PERFMON) | CAPS_BIT(CAP_IPC_LOCK);
	struct caps_state cur;
	int r;

	/* If the probe fails, keep CAP_BPF: losing it would break the release
	 * tick, while keeping it only costs privilege. */
	r = probe_bpf_fd_commands_need_cap();
	if (r != 0)
		keep |= CAPS_BIT(CAP_BPF);
	/* NOTE: the probe tests kernel.unprivileged_bpf_disabled as it is now.
	 * On Linux 5.8 to 5.18, setting it later from 0 to 1 or 2 makes the
	 * running daemon's bpf() calls fail with EPERM. */

	/* CAP_SYS_ADMIN also passes every check of CAP_PERFMON and CAP_BPF: keep
	 * it only where it is all the daemon has for them, as on kernels before
	 * 5.8 that lack both, or under a bounding set that leaves them out. */
	if (caps_get(&cur) == 0 && (keep & perf_bpf & ~cur.permitted) &&
	    (cur.permitted & CAPS_BIT(CAP_SYS_ADMIN)))
		keep |= CAPS_BIT(CAP_SYS_ADMIN);
	return keep;
}

int caps_drop_to(uint64_t keep)
{
	struct caps_state cur;
	int err;

	err = caps_get(&cur);
	if (err < 0)
		return err;
	keep &= cur.permitted;

	/* Shrinking the bounding set needs CAP_SETPCAP, which tcptapd.service
	 * does not grant. Without it the bounding set stays as the service
	 * manager set it. no_new_privs, set below, still keeps execve() from
	 * raising the permitted set again, even for uid 0. */
	if (cur.effective & CAPS_BIT(CAP_SETPCAP)) {
		int last = last_cap();

		for (int cap = 0; cap <= last; cap++) {
			if ((keep & CAPS_BIT(cap)) || !(cur.bounding & CAPS_BIT(cap)))
				continue;
			if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
				return -errno;
		}
	}

	/* Linux before 4.3 has no ambient set and fails with EINVAL. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;

	err = capset_sets(keep, keep, 0);
	if (err < 0)
		return err;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

int caps_drop_after_attach(void)
{
	struct caps_state before, after;
	char kept[512], dropped[1024];
	int err;

	err = caps_get(&before);
	if (err >= 0)
		err = caps_drop_to(caps_runtime_set());
	if (err >= 0)
		err = caps_get(&after);
	if (err < 0) {
		log_error("Failed to drop capabilities: %s", strerror(-err));
		return err;
	}

	caps_format(after.permitted, kept, sizeof(kept));
	caps_format(before.permitted & ~after.permitted, dropped, sizeof(dropped));
	if (after.bounding == after.permitted)
		log_notice("Dropped capabilities not needed after start-up; keeping: %s", kept);
	else
		log_notice("Dropped capabilities not needed after start-up; keeping: %s (the "
			   "bounding set stays as the service manager set it: no CAP_SETPCAP)",
			   kept);
	log_info("Capabilities dropped: %s", dropped);
	return 0;
}
