/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * Definitions shared by the io_uring BPF loop programs (struct_ops programs of type
 * struct io_uring_bpf_ops, Linux 7.1+) and their loader (src/IoUring/Bpf/IoUringBpfLoop.cs).
 * Self-contained on purpose, like dispatch.h: no kernel or libbpf headers, so the object depends
 * only on this folder and the pinned clang flags. The kernel types are declared as far as the
 * programs use them; the verifier checks every access against the kernel's own BTF.
 */
#ifndef IOURING_IOU_LOOP_H
#define IOURING_IOU_LOOP_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

/*
 * The loop's context: opaque to the program, only passed back to the kfuncs. (Debian's 7.2 BTF
 * names it struct iou_ctx; the verifier matches it by BTF id, not by this declaration.)
 */
struct iou_ctx;

/* io_uring/loop.h: the loop reads cq_wait_idx after a CONTINUE and sleeps until the CQ tail
 * reaches it (an absolute CQ index; a hint, it may wake earlier). The program may write it. */
struct iou_loop_params {
	__u32 cq_wait_idx;
};

/* io_uring/loop.h: what loop_step returns. */
#define IOU_LOOP_CONTINUE 0
#define IOU_LOOP_STOP 1

/* io_uring/bpf-ops.h: the regions bpf_io_uring_get_region hands out. */
#define IOU_REGION_MEM 0 /* the ring's registered memory region (IORING_REGISTER_MEM_REGION) */
#define IOU_REGION_CQ 1  /* SQ and CQ headers, CQEs, SQ array: what IORING_OFF_SQ_RING maps */
#define IOU_REGION_SQ 2  /* the SQE array: what IORING_OFF_SQES maps */

/*
 * kfuncs (io_uring/bpf-ops.c). A call to an undefined extern compiles to `call -1` with an
 * R_BPF_64_32 relocation naming it; the loader turns it into a BPF_PSEUDO_KFUNC_CALL whose imm
 * is the function's id in the kernel's BTF. No .ksyms section or BTF is needed for that.
 *
 * bpf_io_uring_submit_sqes is KF_SLEEPABLE: only a program loaded with BPF_F_SLEEPABLE (section
 * struct_ops.s/...) may call it. It submits up to nr SQEs between the SQ head and tail, as
 * io_uring_enter(2) would.
 * bpf_io_uring_get_region is KF_RET_NULL: it returns NULL when the region is smaller than size.
 * size is named rdwr_buf_size in the kernel, which makes the verifier demand a constant and
 * give the returned pointer exactly that many readable and writable bytes.
 */
extern __s32 bpf_io_uring_submit_sqes(struct iou_ctx *ctx, __u32 nr);
extern __u8 *bpf_io_uring_get_region(struct iou_ctx *ctx, __u32 region_id, const unsigned long size);

/* struct io_uring_sqe (linux/io_uring.h), 64 bytes; the fields a NOP and a receive need. */
struct io_uring_sqe {
	__u8 opcode;
	__u8 flags;
	__u16 ioprio;
	__s32 fd;
	__u64 off;
	__u64 addr;
	__u32 len;
	__u32 op_flags;
	__u64 user_data;
	__u16 buf_group; /* union with buf_index */
	__u16 personality;
	__u32 file_index;
	__u64 tail[2];
};

/* struct io_uring_cqe (linux/io_uring.h), 16 bytes without CQE32. */
struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
};

#define IORING_OP_NOP 0
#define IORING_OP_TIMEOUT 11
#define IORING_OP_RECV 27
#define IORING_OP_MSG_RING 40

/* io_uring_sqe flags and a receive's ioprio flags (linux/io_uring.h). */
#define IOSQE_BUFFER_SELECT (1U << 5)
#define IOSQE_CQE_SKIP_SUCCESS (1U << 6)
#define IORING_RECV_MULTISHOT (1U << 1)

/* IORING_OP_MSG_RING's command, in sqe->addr (linux/io_uring.h): post a CQE on the ring sqe->fd
 * names, with user_data sqe->off and res sqe->len (io_uring/msg_ring.c, io_msg_ring_data). */
#define IORING_MSG_DATA 0

/*
 * The loop probe (loop_probe.bpf.c). Each region is asked for with this size, a constant as the
 * verifier requires: one page, the smallest region the kernel allocates, so the probe runs on
 * any ring whose SQEs and CQ fit one page (up to 64 SQEs; SQ/CQ headers, CQEs and SQ array
 * within 4096 bytes).
 */
#define LOOP_PROBE_REGION_SIZE 4096

/* loop_probe_shared.state */
#define LOOP_PROBE_SUBMIT 0  /* next pass writes and submits the SQE */
#define LOOP_PROBE_WAITING 1 /* the SQE is submitted; waiting for its CQE */
#define LOOP_PROBE_DONE 2    /* its CQE was seen; every later pass stops at once */

/*
 * The probe's state, at the start of the ring's registered memory region (IOU_REGION_MEM),
 * which user space reads and writes directly. Writers:
 *   sq_tail .. opcode     user space, before the first io_uring_enter: where the ring's fields
 *                         are in the IOU_REGION_CQ region (io_uring_params sq_off/cq_off), the
 *                         ring masks, and the one SQE to submit (opcode, addr, len, user_data:
 *                         IORING_OP_NOP with all 0 completes at once; IORING_OP_TIMEOUT with
 *                         addr = a struct __kernel_timespec in user memory completes later);
 *   passes .. cq_after    the program, during io_uring_enter: loop_step calls, its state, what
 *                         bpf_io_uring_submit_sqes returned, the cq_wait_idx it asked for, the
 *                         CQE's res, and the CQ tail right after the submit (whether the CQE
 *                         was posted inline, so that the kernel had nothing to wait for).
 */
struct loop_probe_shared {
	__u32 sq_tail;
	__u32 sq_mask;
	__u32 cq_tail;
	__u32 cq_mask;
	__u32 cqes;
	__u32 len;
	__u64 user_data;
	__u64 addr;
	__u32 opcode;
	__u32 reserved0;
	__u32 passes;
	__u32 state;
	__s32 submitted;
	__u32 wait_idx;
	__s32 res;
	__u32 cq_after;
};

/*
 * The transport's event loop (event_loop.bpf.c). Its memory region (IOU_REGION_MEM, registered by
 * user space) is EVENT_LOOP_MEM_SIZE bytes: struct event_loop_shared in the first page, then
 * EVENT_LOOP_SEND_SLOTS __u32s at EVENT_LOOP_SEND_TABLE, the length each slot's send must report to
 * be complete (see event_loop_shared). Each region is asked for with a constant size, as the
 * verifier requires; bpf_io_uring_get_region returns NULL if the ring's region is smaller.
 */
#define EVENT_LOOP_MEM_SIZE 20480
#define EVENT_LOOP_SEND_TABLE 4096
#define EVENT_LOOP_SEND_SLOTS 4096

/*
 * The CQ region (IOU_REGION_CQ: the SQ and CQ headers, the CQEs, the SQ array) is asked for with
 * this size: 4096 CQEs of 16 bytes plus a page for the headers before them. A ring with at least
 * 4096 CQ entries (the transport's default, 8 x 512) has a region (the headers, the CQEs and the SQ
 * array, rounded up to pages) at least this big. With more CQ entries (a submission queue above
 * 512) the CQEs past this size cannot be read: the program returns to user space for them.
 */
#define EVENT_LOOP_CQ_REGION_SIZE 69632
#define EVENT_LOOP_CQ_ENTRIES 4096

/* The first page of that region, which holds the SQ and CQ heads and tails (user space checks that
 * the CQEs start within it): all the program reads of a ring with fewer CQ entries, whose
 * completions it therefore never holds. */
#define EVENT_LOOP_HEADER_SIZE 4096

/* The most completions the program holds in the CQ before it returns: the verifier's bound on the
 * classifying loop; user space asks for fewer in hold_max. */
#define EVENT_LOOP_HOLD_LIMIT 64

/* The kinds in user_data's top byte (src/IoUring.Transport/Internal/Ring/UserData.cs, OpKind) the
 * program may hold; every other kind returns to user space at once. */
#define EVENT_LOOP_OP_SEND 4
#define EVENT_LOOP_OP_CANCEL 5
#define EVENT_LOOP_OP_SEND_DEFERRABLE 8

/* The kind of a multishot accept whose connections stay on its ring: for each of its CQEs with a
 * descriptor and IORING_CQE_F_MORE the program arms the connection's first receive (arm_receives).
 * Never held. */
#define EVENT_LOOP_OP_ACCEPT_ARMABLE 9

/*
 * Arming receives. The SQE array (IOU_REGION_SQ) is asked for with this size, a constant as the
 * verifier requires: 512 SQEs, the transport's default SQ. A ring with a smaller SQ gets NULL and the
 * program arms nothing (user space then publishes no tags); with a larger one the program arms only
 * when the SQ tail's entry falls within the first 512 (else user space arms that connection).
 */
#define EVENT_LOOP_SQ_REGION_SIZE 32768
/*
 * Placing connections (place_connection in event_loop.bpf.c). The kinds, in user_data's top byte
 * (OpKind in UserData.cs):
 *   ACCEPT_PLACEABLE  a multishot accept whose connections the program may hand to a less loaded
 *                     ring of the group; one it keeps is armed as for ACCEPT_ARMABLE;
 *   ACCEPT_HANDED     what the program rewrites a placeable accept's CQE to once it queued the
 *                     hand-over: the descriptor is the target ring's now (held like a cancel);
 *   HANDOVER          the IORING_OP_MSG_RING's own CQE on this ring, posted only if the hand-over
 *                     failed (IOSQE_CQE_SKIP_SUCCESS): user_data is HANDOVER | listener id << 32 |
 *                     descriptor, res the error; user space then takes the connection itself;
 *   ADOPT             the CQE the target ring gets (the MSG_RING's off and len): user_data ADOPT |
 *                     listener id << 32 | descriptor, res the descriptor; the target's program arms
 *                     its receive as for an armable accept's (without IORING_CQE_F_MORE, which a
 *                     MSG_RING CQE never has).
 */
#define EVENT_LOOP_OP_ACCEPT_PLACEABLE 10
#define EVENT_LOOP_OP_ACCEPT_HANDED 11
#define EVENT_LOOP_OP_HANDOVER 12
#define EVENT_LOOP_OP_ADOPT 13
/* The most rings placement chooses among (the group places nothing with more). */
#define EVENT_LOOP_PLACE_RINGS 64
/* Placeable listeners a ring can name (by the accept's slot modulo this; a power of two). */
#define EVENT_LOOP_PLACE_LISTENERS 16
/* Where the loads are in the shared page: their own cache lines, away from the fields the ring
 * thread and the program write on every enter, because every ring thread writes them. */
#define EVENT_LOOP_LOADS 2048
/* The load of a ring that stopped or failed: never less than another's, so never a target. */
#define EVENT_LOOP_LOAD_GONE 0xFFFFFFFFU

/* Tags user space can publish at once (a power of two: positions are taken modulo it). */
#define EVENT_LOOP_ARM_SLOTS 16
/* The most CQEs one pass looks at for armable accepts: the verifier's bound on that loop. */
#define EVENT_LOOP_ARM_SCAN 64

/* struct io_uring_cqe's flags (linux/io_uring.h). */
#define IORING_CQE_F_MORE (1U << 1)
#define IORING_CQE_F_NOTIF (1U << 3)

/*
 * Writers:
 *   sq_head .. cq_tail  user space, before attaching: where the ring's heads and tails are in the
 *                       IOU_REGION_CQ region (io_uring_params sq_off.head/tail, cq_off.head/tail);
 *   wait                user space, around an io_uring_enter: 1 for that enter to wait for a
 *                       completion, else 0 (submit and reap);
 *   pass                the program: its passes in the current enter, back to 0 at each STOP
 *                       (user space also zeroes it before its enters: an enter cut short by a
 *                       signal returns without a STOP);
 *   error               the program: the last submit error (negated errno; user space clears it);
 *   hold_max            user space, before attaching: a waiting enter may hold up to hold_max - 1
 *                       completions that user space can take later; with hold_max ready it
 *                       returns (0: hold nothing; at most EVENT_LOOP_HOLD_LIMIT);
 *   steps .. deferred   the program, during io_uring_enter: counters of passes, SQEs submitted,
 *                       sleeps, and completions it held over a sleep (each counted once);
 *   cqes, cq_mask       user space, before attaching: where the CQE array starts in IOU_REGION_CQ
 *                       (cq_off.cqes) and the CQ's index mask (the value at cq_off.ring_mask);
 *   scanned             the program: the CQ index up to which it has classified the completions;
 *                       behind the CQ head once user space reaped past it, and then ignored.
 *   sq_mask, sq_entries user space, before attaching: the SQ's index mask and size (its
 *                       ring_mask and ring_entries);
 *   arm_group           user space, before attaching: the provided buffer group the receives it
 *                       arms select from (io_uring_prep_recv_multishot with IOSQE_BUFFER_SELECT);
 *   arm_scanned         the program: the CQ index up to which it has looked for armable accepts
 *                       (as scanned, behind the CQ head once user space reaped past it);
 *   arm_tail            user space, between its enters: one past the last tag it published in
 *                       arm_tags (position p at arm_tags[p % EVENT_LOOP_ARM_SLOTS]);
 *   arm_head            the program: one past the last tag it used; arm_head <= arm_tail;
 *   armed               the program: the receives it armed (a counter);
 *   arm_tags            user space, between its enters: the user_data of each receive the program
 *                       may arm (OpKind.Recv, a slot user space reserved and its generation). User
 *                       space writes position p only once it has matched position p - ARM_SLOTS
 *                       (below), so a record is never overwritten before it is read;
 *   arm_fd              the program: for position p, the descriptor (the accept's res) whose
 *                       receive it armed with arm_tags[p]. User space matches the armable accept
 *                       CQEs it reaps, in CQ order, against the positions in order: the program arms
 *                       in CQ order, and an accepted descriptor stays open and unique until user
 *                       space, which has not seen the later accepts yet, closes it.
 *   place_rings         user space (this ring's thread), once, before any placeable listener starts:
 *                       the rings of the group (0 or 1: this ring places nothing);
 *   place_self          user space, with place_rings: this ring's index in the group;
 *   place_margin        user space, between its enters: hand a connection over only when this
 *                       ring's load exceeds the least loaded ring's by more than this (hysteresis);
 *   placed              the program: the connections it handed to other rings (a counter);
 *   place_tags, _lids   user space, between its enters: for a placeable listener whose accept's
 *                       user_data is place_tags[slot % EVENT_LOOP_PLACE_LISTENERS], its group-wide
 *                       listener id, which the MSG_RING carries to the target (0 in a free entry);
 *   place_fds           user space, with place_rings: each ring's descriptor, the MSG_RING's target.
 *   loads (at EVENT_LOOP_LOADS, EVENT_LOOP_PLACE_RINGS __u32s, not in this struct)
 *                       every ring thread of the group, at any time: loads[i] is ring i's open
 *                       connections, which ring i's thread stores into every ring's page when it
 *                       changes (relaxed stores: a hint; EVENT_LOOP_LOAD_GONE once ring i stops or
 *                       fails, for good). The program only reads them. Each load is an aligned __u32, so no reader sees it torn; no
 *                       ordering with anything else is needed, because a stale load costs balance,
 *                       never correctness (the target's descriptor and its liveness do not come
 *                       from it: see place_connection).
 * The send table (EVENT_LOOP_SEND_TABLE, one __u32 per slot) is written by user space only: before
 * it submits a send of kind EVENT_LOOP_OP_SEND_DEFERRABLE from slot s, the bytes that send must
 * report for the connection's send to be complete; 0 when such a send must not be held any more
 * (the application flushed meanwhile). The program only reads it.
 * User space reads the program's fields only between its enters, and writes its own only then (the
 * program runs inside them, on the ring thread): program order is the ordering on both sides.
 */
struct event_loop_shared {
	__u32 sq_head;
	__u32 sq_tail;
	__u32 cq_head;
	__u32 cq_tail;
	__u32 wait;
	__u32 pass;
	__s32 error;
	__u32 hold_max;
	__u64 steps;
	__u64 submitted;
	__u64 sleeps;
	__u64 deferred;
	__u32 cqes;
	__u32 cq_mask;
	__u32 scanned;
	__u32 reserved;
	__u32 sq_mask;
	__u32 sq_entries;
	__u32 arm_group;
	__u32 arm_scanned;
	__u32 arm_tail;
	__u32 arm_head;
	__u64 armed;
	__u64 arm_tags[EVENT_LOOP_ARM_SLOTS];
	__s32 arm_fd[EVENT_LOOP_ARM_SLOTS];
	__u32 place_rings;
	__u32 place_self;
	__u32 place_margin;
	__u32 place_reserved;
	__u64 placed;
	__u64 place_tags[EVENT_LOOP_PLACE_LISTENERS];
	__u32 place_lids[EVENT_LOOP_PLACE_LISTENERS];
	__s32 place_fds[EVENT_LOOP_PLACE_RINGS];
};

_Static_assert(sizeof(struct event_loop_shared) <= EVENT_LOOP_LOADS, "the loads follow the shared state");

#endif
