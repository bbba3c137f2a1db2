"""The listening sockets of the worker processes: one group per listener, one socket per worker.

Every socket of a group is bound to the same address with SO_REUSEPORT, by the
supervisor, before it forks (so the port is bound once for all: with port 0 the
first socket gets a free port and the others are bound to it).  The supervisor
keeps them all open, so a worker that dies and is started again gets the very same
sockets: datagrams and connections that arrived meanwhile wait in them.

How the kernel spreads traffic over a group:

- TCP (tcp, tls, ws, wss): each new connection goes to one listening socket (a hash
  of the addresses).  A connection then belongs to the worker that accepted it.
- UDP: without help the kernel hashes the source address and port too, so one peer
  -- sipp, or a Kamailio/SBC in front sending everything from one port -- lands on a
  single worker.  A classic-BPF reuseport program (SO_ATTACH_REUSEPORT_CBPF) picks
  the socket per datagram instead: ``A = random(); A %= N; return A``, an even spread
  whatever the source.  Retransmissions and responses that land on a worker other
  than the one that needs them are passed on over the bus (sipim/cluster/worker.py).
  Where the program cannot be attached (an old kernel), the group falls back to
  hashing, with a warning.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

from sipim.net import ListenSpec, host_port
from sipim.transport.manager import bind_stream_socket
from sipim.transport.udp import SOCKET_BUFFER_SIZES, open_udp_socket

log = logging.getLogger("sipim.cluster")

# <asm-generic/socket.h>
SO_ATTACH_REUSEPORT_CBPF = 51
# <linux/bpf_common.h>, <linux/filter.h>
BPF_LD, BPF_ALU, BPF_RET = 0x00, 0x04, 0x06
BPF_W, BPF_ABS = 0x00, 0x20
BPF_MOD, BPF_K, BPF_A = 0x90, 0x00, 0x10
SKF_AD_OFF = -0x1000
SKF_AD_RANDOM = 56

_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}


def random_spread_program(count: int) -> bytes:
    """The three instructions of the classic-BPF program: ``ld #random; mod #count; ret a``.

    The return value is the index of the socket in its reuseport group (in the order
    the sockets were bound), so each datagram goes to a random one of the ``count``.
    """
    if not 1 <= count <= 0xFFFF:
        raise ValueError("count must be from 1 to 65535")
    return b"".join((
        _SOCK_FILTER.pack(BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) & 0xFFFFFFFF),
        _SOCK_FILTER.pack(BPF_ALU | BPF_MOD | BPF_K, 0, 0, count),
        _SOCK_FILTER.pack(BPF_RET | BPF_A, 0, 0, 0),
    ))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_random_spread(sock: socket.socket, count: int) -> None:
    """Attach the random-spread program to the reuseport group of ``sock`` (raises OSError)."""
    program = random_spread_program(count)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _SOCK_FILTER.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def bind_group(spec: ListenSpec, count: int, *, backlog: int = 1024,
               buffer_sizes: tuple[int, ...] = SOCKET_BUFFER_SIZES) -> list[socket.socket]:
    """``count`` sockets bound to ``spec``'s address with SO_REUSEPORT (stream ones listening)."""
    sockets: list[socket.socket] = []
    port = spec.port
    try:
        for _ in range(count):
            if spec.transport == "udp":
                sock = open_udp_socket(spec.host, port, buffer_sizes, reuse_port=True)
            else:
                sock = bind_stream_socket(spec.host, port, reuse_port=True)
                # Listening from the start: a connection that comes while its worker is
                # (re)starting waits in the backlog instead of being refused.
                sock.listen(backlog)
            sockets.append(sock)
            port = host_port(sock.getsockname())[1]
        if spec.transport == "udp" and count > 1:
            try:
                attach_random_spread(sockets[0], count)
            except OSError as exc:
                log.warning("%s: cannot spread datagrams over the workers at random (%s); the kernel "
                            "hashes by source address instead, so one peer reaches one worker only", spec, exc)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
