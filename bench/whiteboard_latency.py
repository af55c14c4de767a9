#!/usr/bin/env python3
"""Whiteboard latencies through real upgradefs mounts, each beside a baseline measured in the same run.

usage: whiteboard_latency.py MOUNT_A MOUNT_B LOCAL_DIR SERVER_URL [ROUNDS]
MOUNT_A and MOUNT_B are two nodes' mounts (node names a and b are read from their `self` links); LOCAL_DIR is a
directory on the local disk for the baselines; SERVER_URL is http://HOST:PORT of the server.
"""
import http.client
import os
import sys
import time
import urllib.parse


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return pick(0.50) * 1000, pick(0.99) * 1000


def timed(rounds, action):
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        action(i)
        samples.append(time.perf_counter() - start)
    return samples


def write_file(path, data, flags=os.O_TRUNC, sync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def row(name, samples, baseline_name=None, baseline=None):
    p50, p99 = percentiles(samples)
    line = f"  {name:<44} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"
    if baseline is not None:
        b50, b99 = percentiles(baseline)
        line += f"   | {baseline_name:<30} p50 {b50:7.3f} ms   p99 {b99:7.3f} ms"
    print(line, flush=True)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    mount_a, mount_b, local, server = sys.argv[1:5]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 300
    node_a = os.path.basename(os.readlink(os.path.join(mount_a, "self")))
    self_a = os.path.join(mount_a, "self")

    print(f"whiteboard latencies ({rounds} rounds each; baselines measured alongside)")
    # 1. A status write through the mount: signed, journaled with fsync, then delivered in the background.
    states = [b"running\n", b"waiting\n"]
    through = timed(rounds, lambda i: write_file(os.path.join(self_a, "state"), states[i % 2]))
    local_sync = timed(rounds, lambda i: write_file(os.path.join(local, "state"), states[i % 2], sync=True))
    local_plain = timed(rounds, lambda i: write_file(os.path.join(local, "state-nosync"), states[i % 2]))
    row("status write (echo > self/state)", through, "local write + fsync", local_sync)
    row("", through, "local write, no fsync", local_plain)

    # 2. A log append (the manager's way of logging).
    appends = timed(rounds, lambda i: write_file(os.path.join(self_a, "log"), b"step %d done\n" % i, flags=os.O_APPEND))
    local_appends = timed(rounds, lambda i: write_file(os.path.join(local, "log"), b"step %d done\n" % i,
                                                       flags=os.O_APPEND, sync=True))
    row("log append (echo >> self/log)", appends, "local append + fsync", local_appends)

    # 3. Lock acquire + release round trip (two signed requests to the server, answered synchronously).
    lock = os.path.join(mount_a, "udb", "locks", "bench", node_a)
    def lock_round_trip(_):
        os.mkdir(lock)
        os.rmdir(lock)
    locks = timed(rounds, lock_round_trip)
    parsed = urllib.parse.urlparse(server)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=5)
    def two_gets(_):
        for _ in range(2):
            connection.request("GET", "/healthz")
            connection.getresponse().read()
    http_baseline = timed(rounds, two_gets)
    row("lock mkdir + rmdir round trip", locks, "2 x HTTP GET /healthz", http_baseline)

    # 4. Propagation: written on node a, read on node b.
    seen_on_b = os.path.join(mount_b, "udb", "nodes", node_a, "version")
    def propagate(i):
        value = b"%d\n" % (1000 + i)
        write_file(os.path.join(self_a, "version"), value)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:
            try:
                with open(seen_on_b, "rb") as f:
                    if f.read() == value:
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.001)
        raise SystemExit("a write on node a did not reach node b within 10 s")
    propagation = timed(max(20, rounds // 6), propagate)
    row("write on one node -> visible on another", propagation)


if __name__ == "__main__":
    main()
