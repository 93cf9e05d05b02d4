#!/usr/bin/env python3
"""Delay, jitter and loss for one test-bed host when the kernel has no sch_netem.

Why Python in a TypeScript project: the emulation must hold real packets (SYNs included), which
takes an NFQUEUE listener, which takes an AF_NETLINK socket. Node cannot open one without a
native addon; Python's standard library can. Nothing outside the standard library is used.

Runs inside the host's network namespace (`ip netns exec`). iptables rules there send the
packets of the host's link, both directions, to queue --queue; each packet is released after
delay +/- jitter milliseconds, or dropped with probability loss%, so the link behaves like
`tc qdisc add ... netem delay D J loss L` on both of its ends.

Protocol with the parent (scripts/testbed/shaping.ts): prints `ready` once bound to the queue;
reads lines `set <delayMs> <jitterMs> <lossPercent>` on stdin to change the shaping; exits when
stdin closes, so it never outlives the test bed.
"""

import argparse
import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_DROP = 0
NF_ACCEPT = 1


class Queue:
    """One bound nfnetlink queue: reads packet ids, sends verdicts."""

    def __init__(self, number):
        self.number = number
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        bind = struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)
        self.send(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_CMD, bind)], NLM_F_REQUEST | NLM_F_ACK)
        params = struct.pack(">IB", 0, NFQNL_COPY_META)
        self.send(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_PARAMS, params)], NLM_F_REQUEST | NLM_F_ACK)

    def send(self, msg_type, attrs, flags=NLM_F_REQUEST):
        self.seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(self.number)) + b"".join(attrs)
        header = struct.pack(
            "=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, self.seq, 0
        )
        self.sock.send(header + body)

    def verdict(self, packet_id, verdict):
        self.send(NFQNL_MSG_VERDICT, [attr(NFQA_VERDICT_HDR, struct.pack(">II", verdict, packet_id))])

    def packet_ids(self):
        """The ids of the packets in one read; raises on a netlink error reply."""
        data = self.sock.recv(1 << 17)
        ids = []
        off = 0
        while off + 16 <= len(data):
            length, msg_type = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if msg_type == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + 16)
                if err != 0:
                    raise OSError(-err, "nfnetlink_queue refused the request")
            elif msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                pos = off + 20
                while pos + 4 <= off + length:
                    attr_len, attr_type = struct.unpack_from("=HH", data, pos)
                    if attr_len < 4:
                        break
                    if attr_type & 0x7FFF == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from(">I", data, pos + 4)[0])
                    pos += (attr_len + 3) & ~3
            off += (length + 3) & ~3
        return ids


def attr(attr_type, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * ((4 - length % 4) % 4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="milliseconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="milliseconds")
    parser.add_argument("--loss", type=float, default=0.0, help="percent")
    args = parser.parse_args()
    shaping = [args.delay / 1000, args.jitter / 1000, args.loss / 100]

    queue = Queue(args.queue)
    print("ready", flush=True)
    pending = []  # heap of (release time, sequence, packet id)
    order = 0
    control = b""
    stdin = sys.stdin.fileno()
    while True:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            queue.verdict(heapq.heappop(pending)[2], NF_ACCEPT)
        timeout = max(0.0, pending[0][0] - now) if pending else None
        readable, _, _ = select.select([queue.sock, stdin], [], [], timeout)
        if stdin in readable:
            data = os.read(stdin, 4096)
            if data == b"":
                return
            control += data
            while b"\n" in control:
                line, control = control.split(b"\n", 1)
                words = line.decode().split()
                if len(words) == 4 and words[0] == "set":
                    shaping = [float(w) / s for w, s in zip(words[1:], (1000, 1000, 100))]
                    print("ok", flush=True)
        if queue.sock in readable:
            delay, jitter, loss = shaping
            for packet_id in queue.packet_ids():
                if loss > 0 and random.random() < loss:
                    queue.verdict(packet_id, NF_DROP)
                    continue
                order += 1
                release = time.monotonic() + max(0.0, delay + random.uniform(-jitter, jitter))
                heapq.heappush(pending, (release, order, packet_id))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
