"""Listening sockets of the workers (sipim/cluster/sockets.py): SO_REUSEPORT groups and
the reuseport BPF program that spreads datagrams at random."""

from __future__ import annotations

import select
import socket
import struct

from sipim.cluster.sockets import bind_group, random_spread_program
from sipim.net import ListenSpec


def test_bpf_program_is_ld_random_mod_n_ret_a():
    program = random_spread_program(3)
    instructions = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert instructions == [
        (0x20, 0, 0, 0xFFFFF038),  # BPF_LD|BPF_W|BPF_ABS, k = SKF_AD_OFF + SKF_AD_RANDOM
        (0x94, 0, 0, 3),           # BPF_ALU|BPF_MOD|BPF_K, k = N
        (0x16, 0, 0, 0),           # BPF_RET|BPF_A
    ]


def test_udp_datagrams_from_one_source_reach_every_socket():
    group = bind_group(ListenSpec("udp", "127.0.0.1", 0), 2)
    try:
        port = group[0].getsockname()[1]
        assert group[1].getsockname()[1] == port
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for n in range(200):
            sender.sendto(b"x%d" % n, ("127.0.0.1", port))
        counts = [0, 0]
        while True:
            readable, _, _ = select.select(group, [], [], 0.5)
            if not readable:
                break
            for sock in readable:
                sock.recv(100)
                counts[group.index(sock)] += 1
        sender.close()
        assert sum(counts) == 200
        # One source port: without the program the kernel would pick one socket for all.
        assert min(counts) >= 40, counts
    finally:
        for sock in group:
            sock.close()


def test_tcp_group_listens_on_one_port():
    group = bind_group(ListenSpec("tcp", "127.0.0.1", 0), 3)
    try:
        ports = {sock.getsockname()[1] for sock in group}
        assert len(ports) == 1
        client = socket.create_connection(("127.0.0.1", ports.pop()), timeout=2)
        readable, _, _ = select.select(group, [], [], 2)
        assert len(readable) == 1
        readable[0].accept()[0].close()
        client.close()
    finally:
        for sock in group:
            sock.close()
