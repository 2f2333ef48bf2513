#!/usr/bin/env python3
"""Connection churn against the connection-level echo port, for perf/soak.sh.

    python3 perf/soak_client.py PORT SECONDS [THREADS]

Each thread, until SECONDS have passed: connects, sends 1 B to 256 KiB of random bytes, and then
either half-closes and checks the echo comes back whole and in order, or resets the connection
(SO_LINGER 0) after reading part of the echo. Prints one line of counts at the end; exits 1 if an
echo was wrong.
"""
import os
import random
import socket
import struct
import sys
import threading
import time

LINGER_ZERO = struct.pack("ii", 1, 0)


def worker(port, deadline, seed, counts, lock):
    rnd = random.Random(seed)
    while time.monotonic() < deadline:
        size = rnd.randint(1, 256 * 1024)
        payload = os.urandom(size)
        s = socket.create_connection(("127.0.0.1", port))
        try:
            if rnd.random() < 0.5:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                key = "echo" if bytes(got) == payload else "bad"
            else:
                cut = rnd.randint(0, size)
                s.sendall(payload[:cut])
                want = cut // 2
                got = bytearray()
                while len(got) < want:
                    chunk = s.recv(want - len(got))
                    if not chunk:
                        break
                    got += chunk
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                key = "reset" if bytes(got) == payload[:len(got)] else "bad"
        except OSError:
            key = "error"
        finally:
            s.close()
        with lock:
            counts[key] = counts.get(key, 0) + 1


def main():
    port = int(sys.argv[1])
    seconds = float(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    deadline = time.monotonic() + seconds
    counts, lock = {}, threading.Lock()
    pool = [threading.Thread(target=worker, args=(port, deadline, i, counts, lock)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    return 1 if counts.get("bad") else 0


if __name__ == "__main__":
    sys.exit(main())
