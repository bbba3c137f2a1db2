"""Several worker processes of the embedded core + IM server on one machine.

``sipim serve --workers N`` (TOML ``workers``): the supervisor (supervisor.py)
prepares the data directory, binds every listening socket N times with SO_REUSEPORT
(sockets.py), makes the bus between the workers (bus.py) and the tables they share
in memory (shared.py), then forks N workers.  Each runs its own event loop and
``SipimServer``; worker.py is what makes N of them one service: the location table
replicated in every worker, sends over another worker's connections, responses and
retransmissions passed to the worker that expects them, lock-out counted across
workers, digest nonce-counts in shared memory, jobs that must run once done by the
first worker only.  With ``workers = 1`` (the default) none of this is used.
"""
