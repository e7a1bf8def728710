/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef TCPTAP_VMLINUX_MIN_H
#define TCPTAP_VMLINUX_MIN_H

/* Tells <bpf/bpf_tracing.h> to use the kernel's pt_regs member names (di, si)
 * instead of the user-space ones (rdi, rsi), as it does with a vmlinux.h. */
#define __VMLINUX_H__ 1

/*
 * The few kernel types the BPF programs read, declared by hand instead of a
 * vmlinux.h dumped from one kernel's BTF. Every struct carries
 * preserve_access_index, so field offsets are relocated by libbpf (CO-RE)
 * against the running kernel's BTF at load time; the layout below only has to
 * name the fields, not reproduce their positions. Members that live inside
 * anonymous unions in the kernel are declared directly: libbpf finds them by
 * name through anonymous members.
 */

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_F_MMAPABLE (1U << 10)

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

typedef struct {
	__s64 counter;
} atomic64_t;

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
};

/* sk_protocol and sk_type are plain u16 fields since Linux 5.6; earlier
 * kernels kept them in bitfields, which this header does not support. */
struct socket;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	int sk_err;
	struct socket *sk_socket;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct socket {
	struct sock *sk;
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
};

/* x86-64 register frame; the order is the kernel's, the offsets come from BTF. */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
};

#pragma clang attribute pop

/* Context of raw tracepoint programs: the tracepoint's arguments. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* Context of the syscalls:sys_exit_* tracepoints, as their format files in
 * tracefs describe it (common header, syscall number, return value). */
struct syscall_exit_ctx {
	__u64 common;
	__s32 syscall_nr;
	__s32 pad;
	long ret;
};

#endif /* TCPTAP_VMLINUX_MIN_H */
