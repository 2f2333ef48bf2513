#!/usr/bin/env python3
"""Opens N idle TCP connections to a server and holds them until stdin closes.

    python3 perf/idle_client.py PORT N [SOURCES]

SOURCES (default 4) loopback source addresses 127.0.0.2 and up share the connections, so the
ephemeral port range of one address is never the limit. Prints "connected N" once every
connection is established, then waits; closing stdin (or SIGTERM) closes them all.
"""
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    count = int(sys.argv[2])
    sources = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    held = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.0.{2 + i % sources}", 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
    print(f"connected {len(held)}", flush=True)
    sys.stdin.read()  # hold until the driver closes our stdin
    for s in held:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
