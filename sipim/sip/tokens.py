"""Random tokens: tags, branches, Call-IDs and ids, drawn from one buffered CSPRNG read.

RFC 3261 §19.3 wants tags "cryptographically random with at least 32 bits of
randomness", §8.1.1.7 branches unique in space and time, §8.1.1.4 Call-IDs
cryptographically random.  ``os.urandom`` gives that, but one getrandom system
call per token (several per request) costs more than the rest of making the
token: the bytes are read a few kilobytes at a time and handed out in slices.
Every byte is used once.

A forked child must not hand out what its parent already holds in the buffer
(two worker processes would repeat each other's tags and branches): the buffer
is emptied in the child at fork.  Meant for the event-loop thread; a value is
never handed out twice as long as one thread draws at a time.
"""

from __future__ import annotations

import os

__all__ = ["random_hex"]

_POOL_BYTES = 4096

_pool = ""   # hex text of random bytes not handed out yet, from _position on
_position = 0


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as lower-case hex (2 * nbytes characters)."""
    global _pool, _position
    start = _position
    end = start + 2 * nbytes
    if end > len(_pool):
        _pool = os.urandom(max(_POOL_BYTES, nbytes)).hex()
        start, end = 0, 2 * nbytes
    _position = end
    return _pool[start:end]


def _forget_after_fork() -> None:
    global _pool, _position
    _pool, _position = "", 0


os.register_at_fork(after_in_child=_forget_after_fork)
