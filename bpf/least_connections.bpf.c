// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * sk_reuseport program: sends each new connection to the ring with the fewest connections.
 *
 * Attached (SO_ATTACH_REUSEPORT_EBPF) to one listener of an endpoint's SO_REUSEPORT group, it runs
 * in the kernel for every incoming SYN and selects the listening socket of the least-loaded ring
 * from ring_sockets (key = ring index). The scan starts at a ring chosen by the connection's hash,
 * so among equally loaded rings the first one after that start wins, not always ring 0. When the
 * chosen slot is empty (a listener not yet added, or already closed), it returns SK_PASS without a
 * selection and the kernel's reuseport hash decides, as if no program were attached.
 *
 * Verifier note: the ring index is derived from the hash, so the verifier sees it as an unknown
 * bounded value rather than a constant per iteration; the loop's states then converge and the
 * program verifies in time linear in DISPATCH_MAX_RINGS.
 */
#include "dispatch.h"

struct dispatch_map_def ring_sockets SEC("maps") = {
	.type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = DISPATCH_MAX_RINGS,
};

struct dispatch_map_def ring_load SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct ring_load),
	.max_entries = DISPATCH_MAX_RINGS,
	.map_flags = BPF_F_MMAPABLE,
};

SEC("sk_reuseport")
int least_connections(struct sk_reuseport_md *md)
{
	__u32 key = 0;
	struct ring_load *first = bpf_map_lookup_elem(&ring_load, &key);
	if (!first)
		return SK_PASS;

	__u32 rings = (__u32)first->rings;
	if (rings == 0 || rings > DISPATCH_MAX_RINGS)
		return SK_PASS;

	__u32 start = md->hash % rings;
	__u64 best_load = ~0ULL;
	__u32 best = 0;

	for (__u32 k = 0; k < DISPATCH_MAX_RINGS; k++) {
		if (k >= rings)
			break;

		__u32 i = start + k;
		if (i >= rings)
			i -= rings;

		key = i;
		struct ring_load *load = bpf_map_lookup_elem(&ring_load, &key);
		if (!load)
			break;

		/* Plain loads: each field is an aligned 64-bit word, written whole by its one writer. */
		__u64 active = *(volatile __u64 *)&load->active;
		__u64 accepted = *(volatile __u64 *)&load->accepted;
		__u64 dispatched = *(volatile __u64 *)&load->dispatched;
		__u64 pending = dispatched > accepted ? dispatched - accepted : 0;
		__u64 value = active + pending;

		if (value < best_load) {
			best_load = value;
			best = i;
		}
	}

	if (best_load == ~0ULL)
		return SK_PASS;

	key = best;
	if (bpf_sk_select_reuseport(md, &ring_sockets, &key, 0) != 0)
		return SK_PASS; /* empty slot: the kernel's hash picks */

	/*
	 * Count only a SYN (SYN set, ACK clear) as a connection on its way to the ring. The program also
	 * runs for any other segment that finds no established socket and falls to the listeners: an
	 * ACK or FIN that arrives after its connection closed (answered with a reset), or the final ACK
	 * of a SYN-cookie handshake. Counting those would leave phantom pending connections on the ring
	 * that is least loaded while connections close. For TCP the packet data starts at the TCP header
	 * (tcp_v4_rcv and tcp_v6_rcv pull the whole header before the lookup); byte 13 holds the flags.
	 */
	__u8 *data = (__u8 *)(long)md->data;
	__u8 *data_end = (__u8 *)(long)md->data_end;
	if (data + 14 > data_end || (data[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return SK_PASS;

	struct ring_load *chosen = bpf_map_lookup_elem(&ring_load, &key);
	if (chosen)
		__sync_fetch_and_add(&chosen->dispatched, 1);
	return SK_PASS;
}

/* The licence the kernel sees: GPL-compatible (kfuncs and GPL-only helpers need that), as the SPDX line above. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
