/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * Definitions shared by the dispatch programs and the transport's loader
 * (src/IoUring.Transport/Internal/Dispatch/). Self-contained on purpose: no kernel or
 * libbpf headers, so the object depends only on this folder and the pinned clang flags, and
 * rebuilding it reproduces the committed bytes.
 */
#ifndef IOURING_DISPATCH_H
#define IOURING_DISPATCH_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

/* linux/bpf.h */
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_REUSEPORT_SOCKARRAY 20
#define BPF_F_MMAPABLE (1U << 10)
#define SK_DROP 0
#define SK_PASS 1

/* TCP header flags (byte 13 of struct tcphdr). */
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* The context of an sk_reuseport program (struct sk_reuseport_md, linux/bpf.h); only the prefix we
 * read. The verifier checks each access against the real layout. */
struct sk_reuseport_md {
	__u64 data;
	__u64 data_end;
	__u32 len;
	__u32 eth_protocol;
	__u32 ip_protocol;
	__u32 bind_inany;
	__u32 hash;
};

/* Helper ids from enum bpf_func_id (linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_sk_select_reuseport)(struct sk_reuseport_md *reuse, void *map, void *key, __u64 flags) = (void *)82;

#define SEC(name) __attribute__((section(name), used))

/*
 * A map as this project's loader reads it from the "maps" section: the loader creates each map
 * itself (sizes known only at run time replace max_entries) and checks type, key and value sizes
 * against these.
 */
struct dispatch_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

/* The most rings a reuseport group can hold for these programs (the loop bound the verifier sees). */
#define DISPATCH_MAX_RINGS 1024

/*
 * One ring's load, one cache line each so the rings' stores and the kernel's increments do not
 * share lines. Writers:
 *   active     the ring thread (plain 64-bit store): its open connections;
 *   accepted   the ring thread (plain 64-bit store): connections it accepted on dispatched listeners;
 *   dispatched the program (atomic add, any CPU): connections it sent to this ring.
 *   rings      the loader, once, before the program is attached: how many rings (entries) there are.
 * dispatched - accepted is what sits in the ring's accept queue, so a burst of handshakes is
 * counted before the ring has seen it. It is an estimate: a connection the kernel's hash placed
 * (empty slot) or completed by a SYN cookie is accepted without being dispatched, so the ring never
 * lets accepted pass dispatched (it stores min(accepted + 1, dispatched)) and the program clamps
 * the difference at 0; a SYN that never becomes an accepted connection (a scan, a handshake that
 * times out, a retransmitted SYN counted twice) stays counted as pending on its ring.
 */
struct ring_load {
	__u64 active;
	__u64 accepted;
	__u64 dispatched;
	__u64 rings;
	__u64 reserved[4];
};

#endif
