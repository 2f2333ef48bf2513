// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * The transport's io_uring event loop in the kernel (struct io_uring_bpf_ops, Linux 7.1+): one
 * copy attached to each ring (IoUringTransportOptions.KernelEventLoop). Once attached, every
 * io_uring_enter(2) on the ring runs loop_step again and again, with the ring's lock held and its
 * task work run between passes, until it returns STOP (io_uring/loop.c); the enter's own
 * to_submit and min_complete no longer apply. So this program is the ring's submission path and
 * decides when the ring thread returns to user space.
 *
 * The kernel calls loop_step first, then (if asked) sleeps, then runs the ring's task work and
 * posts the completions that work produced (DEFER_TASKRUN), then calls loop_step again
 * (__io_run_loop, io_uring/loop.c). What this program does:
 *   1. every pass: submits the SQEs the ring thread queued, those between the SQ head (the
 *      kernel's) and the SQ tail (the ring thread's, published with a release store before it
 *      entered);
 *   2. first pass of an enter: returns CONTINUE with cq_wait_idx at the CQ tail, which asks for no
 *      sleep, so the kernel runs the task work once and posts what completed: an enter that only
 *      submits still reaps, as io_uring_enter with IORING_ENTER_GETEVENTS does. Every STOP
 *      resets the pass count, so any enter, even one the ring thread did not prepare (the
 *      binding submitting a full SQ), starts at this pass;
 *   3. later passes: returns STOP when the ring thread asked only to submit (shared->wait 0), or
 *      when a CQE is ready (the CQ tail past the CQ head the ring thread last published): the
 *      ring thread routes every completion itself;
 *   4. otherwise asks the kernel to sleep until one more CQE is posted (cq_wait_idx = tail + 1)
 *      and returns CONTINUE. The cross-thread wake is an eventfd read armed on the ring, so a
 *      wake is a CQE like any other and ends the wait; a signal ends it too (the enter returns
 *      -EINTR, which the ring thread retries).
 * Which completions may wait in the kernel for a later return, and arming a new connection's
 * first receive here, come next (docs/design.md, "The kernel event loop").
 *
 * State is in the ring's registered memory region (IOU_REGION_MEM), one page that user space maps
 * as ordinary memory (struct event_loop_shared, iou_loop.h); no BPF global data, for the reasons
 * loop_probe.bpf.c gives. The section name struct_ops.s/loop_step names the member and makes the
 * loader load it sleepable (bpf_io_uring_submit_sqes is KF_SLEEPABLE).
 */
#include "iou_loop.h"

/* Offsets read from shared memory are unknown to the verifier: bound each before use. */
#define FITS(off, size) ((off) <= EVENT_LOOP_REGION_SIZE - (size))

SEC("struct_ops.s/loop_step")
int event_loop_step(__u64 *args)
{
	struct iou_ctx *ring = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];

	struct event_loop_shared *shared = (struct event_loop_shared *)bpf_io_uring_get_region(ring, IOU_REGION_MEM, EVENT_LOOP_REGION_SIZE);
	__u8 *rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ, EVENT_LOOP_REGION_SIZE);
	if (!shared || !rings)
		return IOU_LOOP_STOP; /* cannot happen on a ring the transport set up: let user space see it stopped */

	__u32 sq_head = shared->sq_head;
	__u32 sq_tail = shared->sq_tail;
	__u32 cq_head = shared->cq_head;
	__u32 cq_tail = shared->cq_tail;
	if (!FITS(sq_head, 4) || !FITS(sq_tail, 4) || !FITS(cq_head, 4) || !FITS(cq_tail, 4)) {
		shared->error = -22; /* EINVAL: offsets user space wrote wrong */
		return IOU_LOOP_STOP;
	}

	shared->steps++;
	__u32 pass = shared->pass++;

	/* 1. Submit. The tail is the ring thread's, written before this enter on the same task, so
	 * program order is the ordering; the head is the kernel's, which io_submit_sqes moves on this
	 * same task. */
	__u32 queued = *(volatile __u32 *)(rings + sq_tail) - *(volatile __u32 *)(rings + sq_head);
	if (queued) {
		__s32 submitted = bpf_io_uring_submit_sqes(ring, queued);
		if (submitted < 0) {
			/* -EAGAIN, -EBUSY: transient, the ring thread enters again; anything else it raises. */
			shared->error = submitted;
			shared->pass = 0;
			return IOU_LOOP_STOP;
		}
		shared->submitted += submitted;
	}

	/* The CQ tail is written by the kernel on this task (completions are posted between passes);
	 * the CQ head is the ring thread's. */
	__u32 tail = *(volatile __u32 *)(rings + cq_tail);

	/* 2. Let the task work run once before deciding: a wait index at the tail means no sleep. */
	if (pass == 0) {
		lp->cq_wait_idx = tail;
		return IOU_LOOP_CONTINUE;
	}

	/* 3. Return to user space when asked only to submit, or when a completion is ready; the next
	 * enter starts at its first pass again. */
	if (!shared->wait || tail != *(volatile __u32 *)(rings + cq_head)) {
		shared->pass = 0;
		return IOU_LOOP_STOP;
	}

	/* 4. Nothing yet: sleep until the next CQE. */
	shared->sleeps++;
	lp->cq_wait_idx = tail + 1;
	return IOU_LOOP_CONTINUE;
}

/* The licence the kernel sees: GPL-compatible (struct_ops programs and kfuncs need that), as the SPDX line above. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
