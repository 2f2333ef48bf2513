#!/usr/bin/env python3
"""Where the server's CPU goes, from `perf record -g` of it during a measured run (run.sh PROFILE).

    profile.py fold <perf script output> <out.json>   one run's samples, by where each was taken
    profile.py report <raw dir> <results dir>         profile.md: per scenario and transport, the
                                                      medians of the runs' shares, and what each
                                                      share comes to per request (share x the
                                                      run's CPU per request, from results.csv)

A sample counts once, for its leaf frame (self time), in one of the groups below; the kernel's and
the threads' groups are also given apart. "Inclusive" groups count a sample when any frame of its
stack is in them: the kernel work done inside the transport's own system calls (io_uring_enter on
io_uring; recvfrom, sendto, sendmsg, epoll_wait on Sockets), which is where TCP itself runs.

JIT-compiled frames are named by the runtime's perf map (/tmp/perf-<pid>.map, DOTNET_PerfMapEnabled),
in the form `instance void [Assembly] Namespace.Type::Method(...)[OptimizedTier1]`: the assembly in
brackets decides the group.
"""
import collections
import csv
import glob
import json
import os
import re
import statistics
import sys

FRAME = re.compile(r'^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$')
ASSEMBLY = re.compile(r'\[([A-Za-z0-9_.]+)\]\s')

# Leaf groups, in the order profile.md lists them.
GROUPS = [
    ('kernel: io_uring', 'io_uring\'s own functions (io_*, __io_*)'),
    ('kernel: TCP/IP and sockets', 'tcp_*, ip_*, sock_*, skb, loopback, netif, inet'),
    ('kernel: scheduler, futex, wake-ups', 'schedule, futex, try_to_wake_up, enqueue/dequeue, eventfd'),
    ('kernel: system call entry and exit', 'entry_SYSCALL*, syscall_*, do_syscall_64, pvm_* (the guest\'s returns)'),
    ('kernel: other', 'memory copies, page faults, timers, the rest'),
    ('transport', '[IoUring.Transport], [IoUring] / [Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets], [System.Net.Sockets]'),
    ('System.IO.Pipelines', '[System.IO.Pipelines]'),
    ('Kestrel (HTTP/1.1, HTTP/2, TLS)', '[Microsoft.AspNetCore.Server.Kestrel.Core], [System.Net.Security]'),
    ('ASP.NET Core, the app', 'other [Microsoft.*], [BenchmarkApp]'),
    ('CoreLib: threading and tasks', '[System.Private.CoreLib] System.Threading.*, System.Runtime.CompilerServices.*'),
    ('CoreLib: other', '[System.Private.CoreLib] the rest (buffers, spans, strings, collections)'),
    ('other managed', 'any other assembly, stubs, frames the map does not name, unresolved addresses'),
    ('runtime (libcoreclr)', 'allocation, write barriers, GC, thread statics, the JIT\'s helpers'),
    ('JIT (libclrjit)', 'compiling'),
    ('native libraries', 'libc, libSystem.Native, libssl/libcrypto, the rest'),
]
INCLUSIVE = [
    ('in io_uring_enter', ('__x64_sys_io_uring_enter', '__do_sys_io_uring_enter', '__se_sys_io_uring_enter')),
    ('in recvfrom/recvmsg', ('__x64_sys_recvfrom', '__sys_recvfrom', '__x64_sys_recvmsg', '__sys_recvmsg')),
    ('in sendto/sendmsg', ('__x64_sys_sendto', '__sys_sendto', '__x64_sys_sendmsg', '__sys_sendmsg')),
    ('in epoll_wait', ('__x64_sys_epoll_wait', 'do_epoll_wait', '__x64_sys_epoll_pwait')),
    ('in write (eventfd wakes)', ('__x64_sys_write', 'ksys_write')),
    ('in futex', ('__x64_sys_futex', 'do_futex')),
    ('in sched_yield', ('__x64_sys_sched_yield', 'do_sched_yield')),
]
THREADS = [
    ('ring threads', lambda c: c.startswith('io_uring ring')),
    ('Sockets\' epoll threads', lambda c: c.startswith('.NET SocketEng') or c.startswith('.NET Sockets')),
    ('thread-pool workers', lambda c: c.startswith('.NET TP Worker') or c.startswith('.NET ThreadPool')),
    ('other threads', lambda c: True),
]
NET = ('tcp_', '__tcp', 'ip_', '__ip', 'ipv4', 'sock_', '__sock', 'sk_', '__sk', 'skb', '__skb', 'kfree_skb',
       'loopback', 'netif', '__netif', 'net_', '__net', 'inet', '__inet', 'dev_', '__dev', 'nf_', 'raw_v4',
       'validate_xmit', 'release_sock', 'lock_sock', 'security_sock', 'napi', '__napi', 'process_backlog',
       'bpf_skops', 'dst_', 'eth_', 'fib_', 'sys_send', 'sys_recv', '__sys_send', '__sys_recv', 'do_softirq',
       '__do_softirq', 'handle_softirqs', '__local_bh', 'consume_skb', 'copy_to_iter', '_copy_to_iter',
       '_copy_from_iter', 'skb_copy', 'csum')
SCHED = ('schedule', '__schedule', 'futex', '__futex', 'try_to_wake_up', 'ttwu', 'enqueue', 'dequeue',
         'pick_next', 'pick_', 'update_curr', 'update_load', 'update_rq', 'psi_', 'finish_task_switch',
         'context_switch', 'switch_mm', '__switch_to', 'set_next', 'put_prev', 'select_task_rq', 'wake_up',
         '__wake_up', 'autoremove_wake', 'eventfd', 'do_sched_yield', 'yield', 'rseq', '__rseq',
         'check_preempt', 'resched', 'sched_', 'native_sched', 'load_balance', 'newidle', 'idle_',
         'cpuacct', 'cgroup_rstat', 'reweight', 'place_entity', 'wakeup_', 'hrtick', 'prepare_task_switch')
ENTRY = ('entry_SYSCALL', 'syscall_', 'do_syscall', 'syscall_exit', 'exit_to_user', 'pvm_',
         'native_irq_return', 'irqentry_', 'arch_exit_to', 'fpregs_', 'switch_fpu', 'restore_fpregs',
         'x64_sys_call', 'ret_from_fork', 'error_entry', 'asm_sysvec', 'sysvec_')


def leaf_group(sym, dso):
    if dso == '[kernel.kallsyms]' or dso.startswith('[kernel'):
        if sym.startswith(('io_', '__io_')):
            return 'kernel: io_uring'
        if sym.startswith(NET):
            return 'kernel: TCP/IP and sockets'
        if sym.startswith(SCHED):
            return 'kernel: scheduler, futex, wake-ups'
        if sym.startswith(ENTRY):
            return 'kernel: system call entry and exit'
        return 'kernel: other'
    base = os.path.basename(dso)
    if base.startswith('libcoreclr'):
        return 'runtime (libcoreclr)'
    if base.startswith('libclrjit'):
        return 'JIT (libclrjit)'
    if not (dso.startswith('/tmp/perf-') or dso in ('[unknown]', '[anon]', '//anon') or 'doublemapper' in dso):
        return 'native libraries' # a file: libc, libSystem.Native, libssl, ...
    m = ASSEMBLY.search(sym)
    if not m:
        return 'other managed'
    asm = m.group(1)
    if asm in ('IoUring.Transport', 'IoUring', 'Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets', 'System.Net.Sockets'):
        return 'transport'
    if asm == 'System.IO.Pipelines':
        return 'System.IO.Pipelines'
    if asm in ('Microsoft.AspNetCore.Server.Kestrel.Core', 'System.Net.Security'):
        return 'Kestrel (HTTP/1.1, HTTP/2, TLS)'
    if asm.startswith('Microsoft.') or asm == 'BenchmarkApp':
        return 'ASP.NET Core, the app'
    if asm == 'System.Private.CoreLib':
        rest = sym[m.end():]
        if rest.startswith(('System.Threading.', 'System.Runtime.CompilerServices.')):
            return 'CoreLib: threading and tasks'
        return 'CoreLib: other'
    return 'other managed'


def samples(lines):
    """(comm, frames) per sample of `perf script -F comm,tid,ip,sym,dso` (frames leaf first)."""
    comm, frames = None, []
    for line in lines:
        line = line.rstrip('\n')
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        m = FRAME.match(line)
        if m and comm is not None:
            frames.append((m.group(2), m.group(3)))
        elif not line[0].isspace():
            if comm is not None:
                yield comm, frames
            # "<comm> <tid>": the comm may hold spaces ("io_uring ring 0", ".NET TP Worker").
            comm, frames = line.rsplit(None, 1)[0].strip(), []
    if comm is not None:
        yield comm, frames


def fold(script_path, out_path):
    leaf = collections.Counter()
    inclusive = collections.Counter()
    threads = collections.Counter()
    others = collections.Counter()  # the names of the "other threads"
    total = 0
    with open(script_path, errors='replace') as f:
        for comm, frames in samples(f):
            if not frames:
                continue
            total += 1
            sym, dso = frames[0]
            leaf[leaf_group(sym, dso)] += 1
            names = {s for s, _ in frames}  # -F sym prints no offsets
            for name, syms in INCLUSIVE:
                if names.intersection(syms):
                    inclusive[name] += 1
            for name, test in THREADS:
                if test(comm):
                    threads[name] += 1
                    if name == 'other threads':
                        others[comm] += 1
                    break
    with open(out_path, 'w') as f:
        json.dump({'samples': total, 'leaf': leaf, 'inclusive': inclusive, 'threads': threads,
                   'other_threads': dict(others.most_common(8))}, f, indent=1)


def report(raw, out):
    cpu = {}
    scenarios = []  # in the run's order
    with open(os.path.join(out, 'results.csv')) as f:
        for row in csv.DictReader(f):
            if row['scenario'] not in scenarios:
                scenarios.append(row['scenario'])
            key = 'r%s-%s-%s-a%s.txt' % (row['round'], row['scenario'], row['transport'], row['attempt'])
            try:
                cpu[key] = float(row['cpu_us_per_req'])
            except ValueError:
                pass
    runs = collections.defaultdict(list)  # (scenario, transport) -> [(profile, cpu us per request)]
    order = []
    for path in sorted(glob.glob(os.path.join(raw, '*.profile.json'))):
        name = os.path.basename(path)[:-len('.profile.json')]
        m = re.match(r'^r\d+-(.+)-(iouring(?:-[A-Za-z]+)?|sockets|baseline)-a\d+\.txt$', name)
        if not m or name not in cpu:
            continue
        with open(path) as f:
            profile = json.load(f)
        if not profile['samples']:
            continue
        key = (m.group(1), m.group(2))
        if key not in runs:
            order.append(key)
        runs[key].append((profile, cpu[name]))
    scenarios = [s for s in scenarios if any(k[0] == s for k in order)]
    lines = ['# Where the server\'s CPU goes', '',
             'From `perf record -F 999 -g` of the server during each measured run (`PROFILE`, run.sh);',
             'profile.py says how a sample is grouped. Per group: the median over the rounds of its share',
             'of the server\'s samples, and that share times the run\'s CPU per request (µs). Leaf groups',
             'add up to 100 %; the threads\' groups too; "inclusive" rows count a sample when any frame is',
             'in that system call.', '']
    for scenario in scenarios:
        transports = [t for s, t in order if s == scenario]
        header = '| %s |' % scenario + ''.join(' %s %% | µs/req |' % t for t in transports)
        lines += [header, '|---|' + '--:|--:|' * len(transports)]

        def row(label, section, name):
            cells = ''
            for t in transports:
                shares = [p[section].get(name, 0) / p['samples'] for p, _ in runs[(scenario, t)]]
                costs = [p[section].get(name, 0) / p['samples'] * c for p, c in runs[(scenario, t)]]
                cells += ' %.1f | %.2f |' % (100 * statistics.median(shares), statistics.median(costs))
            lines.append('| %s |%s' % (label, cells))

        cells = ''.join(' %d runs | %.2f |' % (len(runs[(scenario, t)]), statistics.median(c for _, c in runs[(scenario, t)]))
                        for t in transports)
        lines.append('| all samples (runs, CPU µs per request) |%s' % cells)
        for name, _ in GROUPS:
            row(name, 'leaf', name)
        for name, _ in THREADS:
            row('thread: ' + name, 'threads', name)
        for name, _ in INCLUSIVE:
            row('inclusive: ' + name, 'inclusive', name)
        lines.append('')
        for t in transports:
            names = collections.Counter()
            for p, _ in runs[(scenario, t)]:
                names.update(p.get('other_threads', {}))
            if names:
                lines.append('Other threads, %s: %s.' % (t, ', '.join('`%s` %d' % kv for kv in names.most_common(5))))
        lines.append('')
    lines += ['Groups:', '']
    lines += ['- %s: %s' % g for g in GROUPS]
    with open(os.path.join(out, 'profile.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == 'fold':
        fold(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == 'report':
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
