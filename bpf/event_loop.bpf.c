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
 *   0. every pass: for each new CQE of an armable accept (EVENT_LOOP_OP_ACCEPT_ARMABLE) with a
 *      descriptor and IORING_CQE_F_MORE, queues the connection's first multishot receive with the
 *      next tag user space published (arm_receives), so that a client's first bytes, if already
 *      there, come back in the same return as its accept; an accept of a placeable listener
 *      (EVENT_LOOP_OP_ACCEPT_PLACEABLE) is first offered to place_connection, which hands the
 *      descriptor to the least loaded ring of the group with IORING_OP_MSG_RING when this ring is
 *      busier than it by more than a margin; a connection another ring handed over
 *      (EVENT_LOOP_OP_ADOPT) has its receive armed here as an accepted one's;
 *   1. every pass: submits the SQEs the ring thread queued, those between the SQ head (the
 *      kernel's) and the SQ tail (the ring thread's, published with a release store before it
 *      entered);
 *   2. first pass of an enter: returns CONTINUE with cq_wait_idx at the CQ tail, which asks for no
 *      sleep, so the kernel runs the task work once and posts what completed: an enter that only
 *      submits still reaps, as io_uring_enter with IORING_ENTER_GETEVENTS does. Every STOP
 *      resets the pass count, so any enter, even one the ring thread did not prepare (the
 *      binding submitting a full SQ), starts at this pass;
 *   3. later passes: returns STOP when the ring thread asked only to submit (shared->wait 0);
 *   4. when completions are ready (the CQ tail past the CQ head the ring thread last published),
 *      classifies the ones it has not seen yet by the kind in their user_data (hold_completions):
 *      it returns STOP as soon as one needs user space now, or once hold_max completions are
 *      ready; otherwise it holds them in the CQ and sleeps, so that one return carries them with
 *      the completion that ends the sleep;
 *   5. otherwise asks the kernel to sleep until one more CQE is posted (cq_wait_idx = tail + 1)
 *      and returns CONTINUE. The cross-thread wake is an eventfd read armed on the ring, so a
 *      wake is a CQE like any other, never held, and ends the wait at once; a signal ends it too
 *      (the enter returns -EINTR, which the ring thread retries; it reaps the held ones then).
 *
 * What may be held (may_wait): a cancel's result (no connection waits for it: its target's own
 * completion reports the end); a zero-copy send's first CQE (IORING_CQE_F_MORE: user space acts on
 * its notification); and a send of kind EVENT_LOOP_OP_SEND_DEFERRABLE that reports exactly the
 * bytes the send table names for its slot. The ring thread gives a send that kind only when the
 * send took everything the connection's output pipe held and the output is not complete, so the
 * connection's send loop, once it has the completion, finds nothing more to send; an application
 * that writes more meanwhile posts to the ring (whose wake ends the sleep) and the ring thread
 * zeroes the slot's entry, so a completion not posted yet is not held either
 * (IoUringConnection.Send.cs). A partial send, an error, a notification of such a send and every
 * other kind (a receive, an accept, a connect, a timeout, the wake) return at once. An accept
 * whose connection this program handed to another ring (EVENT_LOOP_OP_ACCEPT_HANDED) may be held
 * too: user space only counts it. A failed hand-over (EVENT_LOOP_OP_HANDOVER) and an adopted
 * connection (EVENT_LOOP_OP_ADOPT) return at once.
 *
 * An accept whose receive this program armed is not held either, although its connection's first
 * data would then come back with it: the hold bound counts completions, not time, so a client that
 * connects and waits for the server to speak first (a greeting, a connection handler that writes
 * at once) would leave its accept held until some other completion came, its connection unknown
 * to the application meanwhile. Returning at once costs one return when the data was not there
 * yet; when it was, the receive's completion is posted during the submit of the same pass and
 * comes back with the accept anyway.
 *
 * State is in the ring's registered memory region (IOU_REGION_MEM), which user space maps as
 * ordinary memory (struct event_loop_shared and the send table, iou_loop.h); no BPF global data,
 * for the reasons loop_probe.bpf.c gives. The section name struct_ops.s/loop_step names the member
 * and makes the loader load it sleepable (bpf_io_uring_submit_sqes is KF_SLEEPABLE).
 */
#include "iou_loop.h"

/* Offsets read from shared memory are unknown to the verifier: bound each before use. */
#define FITS(off, size) ((off) <= EVENT_LOOP_CQ_REGION_SIZE - (size))
#define FITS_HEADER(off, size) ((off) <= EVENT_LOOP_HEADER_SIZE - (size))

/* Whether user space can take this completion later (see the header comment). */
static inline __attribute__((always_inline)) int may_wait(const struct io_uring_cqe *cqe, const __u32 *send_table)
{
	/* The kernel wrote the CQE on this task before it ran this pass: program order. */
	__u64 user_data = *(volatile __u64 *)&cqe->user_data;
	__s32 res = *(volatile __s32 *)&cqe->res;
	__u32 flags = *(volatile __u32 *)&cqe->flags;
	__u32 kind = (__u32)(user_data >> 56);

	if (kind == EVENT_LOOP_OP_CANCEL || kind == EVENT_LOOP_OP_ACCEPT_HANDED)
		return 1; /* a handed accept: its connection is the target ring's, user space only counts it */
	if (kind != EVENT_LOOP_OP_SEND && kind != EVENT_LOOP_OP_SEND_DEFERRABLE)
		return 0;
	if (flags & IORING_CQE_F_MORE)
		return 1;
	if (kind != EVENT_LOOP_OP_SEND_DEFERRABLE || (flags & IORING_CQE_F_NOTIF) || res <= 0)
		return 0;

	__u32 slot = (__u32)user_data;
	if (slot >= EVENT_LOOP_SEND_SLOTS)
		return 0;
	return (__u32)res == *(volatile __u32 *)&send_table[slot];
}

/*
 * Completions head..tail are ready (head != tail): 1 to hold them and sleep, 0 to return. Only
 * the ones past shared->scanned are classified; the ones before it were held by an earlier pass.
 */
static inline __attribute__((always_inline)) int hold_completions(struct event_loop_shared *shared, const __u8 *mem, const __u8 *rings, __u32 head, __u32 tail)
{
	__u32 max = shared->hold_max;
	if (max > EVENT_LOOP_HOLD_LIMIT || tail - head >= max)
		return 0; /* the bound: this many wait in the CQ (hold_max 0: never hold) */

	__u32 from = shared->scanned;
	if ((__s32)(from - head) < 0 || (__s32)(tail - from) < 0)
		from = head; /* user space reaped past it (or it is stale): start at the head */

	__u32 cqes = shared->cqes;
	__u32 mask = shared->cq_mask;
	const __u32 *send_table = (const __u32 *)(mem + EVENT_LOOP_SEND_TABLE);
	__u32 n = 0;
	/* tail - from <= tail - head < max <= EVENT_LOOP_HOLD_LIMIT: the bound only tells the verifier. */
	for (__u32 i = 0; i < EVENT_LOOP_HOLD_LIMIT; i++) {
		if (from + i == tail)
			break;
		__u64 at = (__u64)cqes + (__u64)((from + i) & mask) * sizeof(struct io_uring_cqe);
		if (!FITS(at, sizeof(struct io_uring_cqe)))
			return 0; /* a CQE past the region the program reads: user space takes it */
		if (!may_wait((const struct io_uring_cqe *)(rings + at), send_table))
			return 0;
		n++;
	}
	if (from + n != tail)
		return 0;

	shared->deferred += n;
	shared->scanned = tail;
	return 1;
}

/* The least loaded ring of the group as this ring's page shows it now (see event_loop_shared). */
struct placement {
	__u32 rings;  /* 0: place nothing in this pass */
	__u32 self;
	__u32 own;    /* this ring's load */
	__u32 best;   /* the least loaded ring */
	__u32 least;  /* its load */
};

/*
 * Reads the loads once per pass (a bounded loop of at most EVENT_LOOP_PLACE_RINGS). The loads are
 * relaxed stores of other ring threads: a hint, read with single-copy atomic loads.
 */
static inline __attribute__((always_inline)) void read_loads(const struct event_loop_shared *shared, const __u32 *loads, struct placement *p)
{
	p->rings = 0;
	__u32 rings = shared->place_rings;
	__u32 self = shared->place_self;
	if (rings < 2 || rings > EVENT_LOOP_PLACE_RINGS || self >= rings)
		return;
	__u32 own = *(volatile const __u32 *)&loads[self & (EVENT_LOOP_PLACE_RINGS - 1)];
	if (own == EVENT_LOOP_LOAD_GONE)
		return; /* this ring is stopping: its listeners are too */
	__u32 best = self;
	__u32 least = own;
	for (__u32 i = 0; i < EVENT_LOOP_PLACE_RINGS; i++) {
		if (i >= rings)
			break;
		__u32 load = *(volatile const __u32 *)&loads[i];
		if (load < least) {
			least = load;
			best = i;
		}
	}
	p->rings = rings;
	p->self = self;
	p->own = own;
	p->best = best;
	p->least = least;
}

/*
 * A placeable accept's CQE with a descriptor (fd) and IORING_CQE_F_MORE: hands the descriptor to
 * the least loaded ring with IORING_OP_MSG_RING when this ring's load exceeds that ring's by more
 * than place_margin, and returns 1; else returns 0 and the connection stays (step 0 arms its
 * receive). Accepted descriptors are ordinary descriptors of the process, so IORING_MSG_DATA can
 * carry the number (no fixed files, which IORING_MSG_SEND_FD needs): the target gets a CQE with
 * user_data sqe->off and res sqe->len (io_msg_ring_data, io_uring/msg_ring.c). The target rings are
 * IORING_SETUP_DEFER_TASKRUN, so the kernel posts that CQE as task work on the target's thread
 * (io_msg_data_remote): the MSG_RING itself completes during this pass's submit, and with
 * IOSQE_CQE_SKIP_SUCCESS its own CQE is posted only when it failed (-ENOMEM, -EBADFD for a
 * descriptor that is no ring or a disabled one, -EOWNERDEAD on kernels that check the target's
 * task); user space then takes the connection itself, with the descriptor its user_data carries.
 * Either way one side owns the descriptor: the target from its CQE on, or this ring.
 * The accept's CQE stays in this CQ (the program cannot take it out): it is rewritten to
 * EVENT_LOOP_OP_ACCEPT_HANDED, so user space, which reads it after this enter, knows the
 * connection is not its own (the CQ is the kernel's to write only at the tail; a CQE between the
 * head and the tail is read by user space only after this enter returns, on this thread).
 * The target's descriptor comes from place_fds, which this ring's thread wrote, never from the
 * loads; a ring that stops or fails publishes EVENT_LOOP_LOAD_GONE before it closes its ring, so
 * it is never the least loaded from the next pass on (RingPlacement.cs says what a hand-over that
 * races a ring's failure can cost).
 */
static inline __attribute__((always_inline)) int place_connection(struct event_loop_shared *shared, struct placement *p, struct io_uring_cqe *cqe, __u64 user_data, __s32 fd, __u8 *rings, __u8 *sqes, __u32 sq_head, __u32 sq_tail)
{
	if (!p->rings || !sqes)
		return 0;
	if (p->best == p->self || p->own - p->least <= shared->place_margin) {
		p->own++; /* it stays: for the rest of this pass, this ring is one busier */
		return 0;
	}

	/* The listener's group-wide id, which the target needs to start the connection. */
	__u32 entry = (__u32)user_data % EVENT_LOOP_PLACE_LISTENERS;
	if (shared->place_tags[entry] != user_data)
		return 0; /* not published (a stopping listener, or two listeners on one entry) */
	__u64 listener = shared->place_lids[entry] & 0xFFFFFFU;

	__u32 sq_now = *(volatile __u32 *)(rings + sq_tail);
	if (sq_now - *(volatile __u32 *)(rings + sq_head) >= shared->sq_entries)
		return 0; /* the SQ is full */
	__u64 sqe_at = (__u64)(sq_now & shared->sq_mask) * sizeof(struct io_uring_sqe);
	if (sqe_at > EVENT_LOOP_SQ_REGION_SIZE - sizeof(struct io_uring_sqe))
		return 0;

	__u32 best = p->best & (EVENT_LOOP_PLACE_RINGS - 1);
	__u64 message = listener << 32 | (__u32)fd;
	struct io_uring_sqe *sqe = (struct io_uring_sqe *)(sqes + sqe_at);
	__builtin_memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_MSG_RING;
	sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
	sqe->fd = shared->place_fds[best];
	sqe->addr = IORING_MSG_DATA;
	sqe->off = (__u64)EVENT_LOOP_OP_ADOPT << 56 | message;
	sqe->len = (__u32)fd;
	sqe->user_data = (__u64)EVENT_LOOP_OP_HANDOVER << 56 | message;
	/* Before the tail, as for a receive (arm_receives). */
	*(volatile __u32 *)(rings + sq_tail) = sq_now + 1;

	*(volatile __u64 *)&cqe->user_data = (__u64)EVENT_LOOP_OP_ACCEPT_HANDED << 56 | (user_data & 0xFFFFFFFFFFFFFFULL);
	/* For the rest of this pass the target is one busier, so a burst of accepts spreads. Only in
	 * this pass's view: a store to loads[] could overwrite EVENT_LOOP_LOAD_GONE, which a ring
	 * that fails stores once, for good. */
	p->least++;
	shared->placed++;
	return 1;
}

/*
 * Arms the first receive of each new connection an armable accept produced (completions between
 * the CQ head and tail the program has not looked at yet, from shared->arm_scanned): for each CQE
 * of kind EVENT_LOOP_OP_ACCEPT_ARMABLE with a descriptor and IORING_CQE_F_MORE (a CQE without it
 * ends the multishot, and user space re-arms the accept: it handles that one entirely), it takes
 * the next tag user space published and queues a multishot receive with buffer selection on the
 * descriptor, as IoUringConnection.ArmReceive does (PrepRecvMultishotSelect without bundles), at
 * the SQ tail; step 1 of the same pass submits it. Its CQEs come after the accept's in the CQ,
 * because the accept's was posted before the receive was submitted, so user space always reaps the
 * accept (and gives the connection the slot) before the connection's first data.
 * A placeable accept's CQE (EVENT_LOOP_OP_ACCEPT_PLACEABLE, same conditions) is first offered to
 * place_connection; one it keeps is armed the same way. A connection another ring handed over
 * (EVENT_LOOP_OP_ADOPT, res the descriptor) is armed the same way too.
 * Skipped, leaving user space to arm as without the program: no tag left, the SQ full, or the SQ
 * tail's entry outside the SQE memory the program can write (sqes NULL, or past
 * EVENT_LOOP_SQ_REGION_SIZE).
 */
static inline __attribute__((always_inline)) void arm_receives(struct event_loop_shared *shared, __u8 *mem, __u8 *rings, __u8 *sqes, __u32 sq_head, __u32 sq_tail, __u32 head, __u32 tail)
{
	__u32 from = shared->arm_scanned;
	if ((__s32)(from - head) < 0 || (__s32)(tail - from) < 0)
		from = head; /* user space reaped past it (or it is stale): start at the head */

	const __u32 *loads = (const __u32 *)(mem + EVENT_LOOP_LOADS);
	struct placement p;
	read_loads(shared, loads, &p);

	__u32 cqes = shared->cqes;
	__u32 mask = shared->cq_mask;
	__u32 i = 0;
	for (; i < EVENT_LOOP_ARM_SCAN; i++) {
		if (from + i == tail)
			break;
		__u64 at = (__u64)cqes + (__u64)((from + i) & mask) * sizeof(struct io_uring_cqe);
		if (!FITS(at, sizeof(struct io_uring_cqe)))
			break; /* a CQE past the region the program reads: user space arms from here on */
		struct io_uring_cqe *cqe = (struct io_uring_cqe *)(rings + at);
		/* The kernel wrote the CQE on this task before this pass: program order. */
		__u64 user_data = *(volatile __u64 *)&cqe->user_data;
		__s32 res = *(volatile __s32 *)&cqe->res;
		__u32 flags = *(volatile __u32 *)&cqe->flags;
		__u32 kind = (__u32)(user_data >> 56);
		if (res < 0)
			continue;
		if (kind == EVENT_LOOP_OP_ACCEPT_PLACEABLE) {
			if (!(flags & IORING_CQE_F_MORE))
				continue;
			if (place_connection(shared, &p, cqe, user_data, res, rings, sqes, sq_head, sq_tail))
				continue;
		} else if (kind == EVENT_LOOP_OP_ACCEPT_ARMABLE) {
			if (!(flags & IORING_CQE_F_MORE))
				continue;
		} else if (kind != EVENT_LOOP_OP_ADOPT) {
			continue;
		}

		/* The tags are user space's, published before this enter on this task (program order). */
		__u32 arm_head = shared->arm_head;
		if (arm_head == shared->arm_tail || !sqes)
			continue; /* no tag left (or no SQE memory): user space arms it */

		/* The SQ tail is the ring thread's, written before this enter; the head the kernel's,
		 * moved by io_submit_sqes on this task. Both only change here within the enter. */
		__u32 sq_now = *(volatile __u32 *)(rings + sq_tail);
		if (sq_now - *(volatile __u32 *)(rings + sq_head) >= shared->sq_entries)
			continue; /* the SQ is full */
		__u64 sqe_at = (__u64)(sq_now & shared->sq_mask) * sizeof(struct io_uring_sqe);
		if (sqe_at > EVENT_LOOP_SQ_REGION_SIZE - sizeof(struct io_uring_sqe))
			continue; /* an entry past the SQE memory the program asked for */

		__u32 position = arm_head % EVENT_LOOP_ARM_SLOTS;
		struct io_uring_sqe *sqe = (struct io_uring_sqe *)(sqes + sqe_at);
		__builtin_memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = IORING_OP_RECV;
		sqe->flags = IOSQE_BUFFER_SELECT;
		sqe->ioprio = IORING_RECV_MULTISHOT;
		sqe->fd = res;
		sqe->buf_group = (__u16)shared->arm_group;
		sqe->user_data = shared->arm_tags[position];
		/* The SQE before the tail: io_submit_sqes (step 1, this task) reads the tail, then the
		 * entries before it. The SQ array maps each position to the entry of the same index
		 * (the ring thread writes it so once, src/IoUring/Ring/Ring.cs), so it needs no write. */
		*(volatile __u32 *)(rings + sq_tail) = sq_now + 1;

		/* The record user space matches the accept's CQE against, then the position it reads up to. */
		shared->arm_fd[position] = res;
		shared->arm_head = arm_head + 1;
		shared->armed++;
	}
	shared->arm_scanned = from + i;
}

SEC("struct_ops.s/loop_step")
int event_loop_step(__u64 *args)
{
	struct iou_ctx *ring = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];

	__u8 *mem = bpf_io_uring_get_region(ring, IOU_REGION_MEM, EVENT_LOOP_MEM_SIZE);
	/* A ring with fewer than EVENT_LOOP_CQ_ENTRIES CQ entries has a smaller region: the program
	 * then reads only its headers (their first page) and holds nothing. */
	int can_hold = 1;
	__u8 *rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ, EVENT_LOOP_CQ_REGION_SIZE);
	if (!rings) {
		can_hold = 0;
		rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ, EVENT_LOOP_HEADER_SIZE);
	}
	if (!mem || !rings)
		return IOU_LOOP_STOP; /* cannot happen on a ring the transport set up: let user space see it stopped */
	/* NULL on a ring with fewer than 512 SQEs: it then arms nothing. */
	__u8 *sqes = bpf_io_uring_get_region(ring, IOU_REGION_SQ, EVENT_LOOP_SQ_REGION_SIZE);
	struct event_loop_shared *shared = (struct event_loop_shared *)mem;

	__u32 sq_head = shared->sq_head;
	__u32 sq_tail = shared->sq_tail;
	__u32 cq_head = shared->cq_head;
	__u32 cq_tail = shared->cq_tail;
	if (!FITS_HEADER(sq_head, 4) || !FITS_HEADER(sq_tail, 4) || !FITS_HEADER(cq_head, 4) || !FITS_HEADER(cq_tail, 4)) {
		shared->error = -22; /* EINVAL: offsets user space wrote wrong */
		return IOU_LOOP_STOP;
	}

	shared->steps++;
	__u32 pass = shared->pass++;

	/* 0. Arm the first receive of the connections accepted since the last look (every pass, also
	 * in an enter that only submits): step 1 submits them. */
	__u32 arm_cq_tail = *(volatile __u32 *)(rings + cq_tail);
	if (can_hold && (shared->arm_head != shared->arm_tail || shared->place_rings > 1)) /* it reads the CQEs, as holding does */
		arm_receives(shared, mem, rings, sqes, sq_head, sq_tail, *(volatile __u32 *)(rings + cq_head), arm_cq_tail);
	else
		shared->arm_scanned = arm_cq_tail; /* nothing to arm with: what is ready now is user space's */

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
	 * the CQ head is the ring thread's, published before this enter. */
	__u32 tail = *(volatile __u32 *)(rings + cq_tail);

	/* 2. Let the task work run once before deciding: a wait index at the tail means no sleep. */
	if (pass == 0) {
		lp->cq_wait_idx = tail;
		return IOU_LOOP_CONTINUE;
	}

	/* 3, 4. Return to user space when asked only to submit, or when a ready completion needs it
	 * (or hold_max are ready); the next enter starts at its first pass again. */
	__u32 head = *(volatile __u32 *)(rings + cq_head);
	if (!shared->wait || (tail != head && (!can_hold || !hold_completions(shared, mem, rings, head, tail)))) {
		shared->pass = 0;
		return IOU_LOOP_STOP;
	}

	/* 5. Nothing yet, or only what may wait: sleep until the next CQE. */
	shared->sleeps++;
	lp->cq_wait_idx = tail + 1;
	return IOU_LOOP_CONTINUE;
}

/* The licence the kernel sees: GPL-compatible (struct_ops programs and kfuncs need that), as the SPDX line above. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
