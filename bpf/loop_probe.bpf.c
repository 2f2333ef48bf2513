// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * io_uring BPF loop probe: the smallest struct io_uring_bpf_ops program that shows the three
 * things a real event loop needs work, on a ring it is attached to (Linux 7.1+):
 *   region access  it writes one SQE (a NOP, or what user space described in the shared state)
 *                  into the SQE array and moves the SQ tail (IOU_REGION_SQ, IOU_REGION_CQ), and
 *                  keeps its state in the ring's registered memory region;
 *   submission     bpf_io_uring_submit_sqes submits that SQE;
 *   waiting        it sets cq_wait_idx to the CQ index the SQE's CQE will take and returns
 *                  CONTINUE, so the kernel sleeps (or not, if it is already there) until the CQ
 *                  tail reaches it, then calls it again; it then reads the CQE and returns STOP.
 * It leaves the CQE in the CQ for user space (the CQ head is user space's).
 *
 * Once attached, every io_uring_enter(2) on the ring runs loop_step in a loop instead of its
 * usual submit and wait (io_uring/loop.c), with the ring's uring_lock held.
 *
 * No BPF global data (.data, .bss, .rodata): those would be array maps the loader must create
 * and a relocation kind (BPF_PSEUDO_MAP_VALUE) it would have to learn, and their state would be
 * per program, not per ring. The ring's registered memory region is per ring, mapped by user
 * space as ordinary memory, and reached here through a kfunc: the probe's state lives there
 * (struct loop_probe_shared, iou_loop.h).
 *
 * The section names the member this program implements: struct_ops.s/<member of
 * io_uring_bpf_ops>; ".s" makes the loader load it sleepable (BPF_F_SLEEPABLE), which the
 * sleepable kfunc bpf_io_uring_submit_sqes requires.
 */
#include "iou_loop.h"

/* Offsets read from shared memory are unknown to the verifier: each access is bounds-checked
 * against the constant region size first. */
#define FITS(off, size) ((off) <= LOOP_PROBE_REGION_SIZE - (size))

/*
 * loop_step(struct iou_ctx *ctx, struct iou_loop_params *lp). A struct_ops program receives its
 * arguments as an array of u64 (the trampoline's context); args[0] and args[1] are typed by the
 * kernel's BTF of the member's function prototype.
 */
SEC("struct_ops.s/loop_step")
int loop_probe_step(__u64 *args)
{
	struct iou_ctx *ring = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];

	struct loop_probe_shared *shared = (struct loop_probe_shared *)bpf_io_uring_get_region(ring, IOU_REGION_MEM, LOOP_PROBE_REGION_SIZE);
	__u8 *rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ, LOOP_PROBE_REGION_SIZE);
	__u8 *sqes = bpf_io_uring_get_region(ring, IOU_REGION_SQ, LOOP_PROBE_REGION_SIZE);
	if (!shared || !rings || !sqes)
		return IOU_LOOP_STOP; /* a region missing or smaller than a page: nothing to probe */

	shared->passes++;

	__u32 sq_tail = *(volatile __u32 *)&shared->sq_tail;
	__u32 cq_tail = *(volatile __u32 *)&shared->cq_tail;
	__u32 cqes = *(volatile __u32 *)&shared->cqes;
	if (!FITS(sq_tail, 4) || !FITS(cq_tail, 4) || !FITS(cqes, sizeof(struct io_uring_cqe)))
		return IOU_LOOP_STOP;

	/* The kernel writes the CQ tail (release); this pass runs after it, on the same task. */
	__u32 cq_now = *(volatile __u32 *)(rings + cq_tail);

	if (shared->state == LOOP_PROBE_SUBMIT) {
		/* The SQ tail is the application's, which this program is while it runs. */
		__u32 tail = *(volatile __u32 *)(rings + sq_tail);
		__u64 at = (__u64)(tail & shared->sq_mask) * sizeof(struct io_uring_sqe);
		if (!FITS(at, sizeof(struct io_uring_sqe)))
			return IOU_LOOP_STOP;

		struct io_uring_sqe *sqe = (struct io_uring_sqe *)(sqes + at);
		__builtin_memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = (__u8)shared->opcode;
		sqe->addr = shared->addr;
		sqe->len = shared->len;
		sqe->user_data = shared->user_data;
		/* The SQE before the tail: io_submit_sqes reads the tail, then the entries before it,
		 * on this same task, so program order is all the ordering needed. */
		*(volatile __u32 *)(rings + sq_tail) = tail + 1;

		shared->submitted = bpf_io_uring_submit_sqes(ring, 1);
		shared->cq_after = *(volatile __u32 *)(rings + cq_tail);
		shared->wait_idx = cq_now + 1;
		shared->state = LOOP_PROBE_WAITING;
		lp->cq_wait_idx = cq_now + 1;
		return IOU_LOOP_CONTINUE;
	}

	if (shared->state == LOOP_PROBE_WAITING) {
		__u32 target = shared->wait_idx;
		if ((__s32)(cq_now - target) < 0) {
			/* Woken early (the index is only a hint): wait again. */
			lp->cq_wait_idx = target;
			return IOU_LOOP_CONTINUE;
		}

		/* The CQE at index target - 1 is the SQE's: no one else submits while we wait. */
		__u64 at = cqes + (__u64)((target - 1) & shared->cq_mask) * sizeof(struct io_uring_cqe);
		if (!FITS(at, sizeof(struct io_uring_cqe)))
			return IOU_LOOP_STOP;

		struct io_uring_cqe *cqe = (struct io_uring_cqe *)(rings + at);
		shared->res = cqe->user_data == shared->user_data ? cqe->res : -1;
		shared->state = LOOP_PROBE_DONE;
	}

	return IOU_LOOP_STOP;
}

/* The licence the kernel sees: GPL-compatible (struct_ops programs and kfuncs need that), as the SPDX line above. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
