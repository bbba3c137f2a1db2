"""Messages through a real sipim with the Python client library, both ends in one process.

    .venv/bin/python -m bench.client_messages [--count 300]

Starts a throw-away server (SQLite, TLS + WSS on loopback), registers two devices,
sends COUNT messages one after another (CPIM, delivery and display requested) and
reports: sends per second (each waits for its 200) and the time from sending to
the "delivered" report coming back (recipient's client sends it by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sipim.client.agent import UserAgent
from sipim.client.messaging import DispositionReport
from sipim.client.profile import local_password_config
from tests.support.server import DOMAIN, SipimProcess


def device(server: SipimProcess, user: str):
    return local_password_config(user=user, password=f"{user}-secret", domain=DOMAIN, sip_host="127.0.0.1",
                                 sip_port=server.ports["tls"], https_base=f"https://127.0.0.1:{server.ports['wss']}",
                                 ca_pem=server.ca_file.read_text())


async def run(server: SipimProcess, count: int) -> None:
    async with UserAgent(device(server, "alice")) as alice, UserAgent(device(server, "bob")) as bob:
        await alice.register()
        await bob.register()
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def collect() -> None:
            while len(latencies) < count:
                event = await alice.next_event()
                if isinstance(event, DispositionReport) and event.status == "delivered" and event.message_id in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(event.message_id))
            done.set()

        async def drain_bob() -> None:
            while True:
                await bob.next_event()

        collector = asyncio.create_task(collect())
        drainer = asyncio.create_task(drain_bob())
        start = time.perf_counter()
        for index in range(count):
            began = time.perf_counter()
            result = await alice.send_message("bob", f"message {index}")
            sent_at[result.message_id] = began
        elapsed = time.perf_counter() - start
        await asyncio.wait_for(done.wait(), 60)
        drainer.cancel()
        collector.cancel()
    latencies.sort()
    print(f"{count} messages in {elapsed:.2f} s: {count / elapsed:.0f} sends/s (each waiting for its 200)")
    print(f"send -> delivered report: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = SipimProcess(Path(directory), listen=("tls:127.0.0.1:0", "wss:127.0.0.1:0"),
                              allow_insecure=False, config_text="lockout_threshold = 1000\n").start()
        try:
            server.add_user("alice", "alice-secret")
            server.add_user("bob", "bob-secret")
            asyncio.run(run(server, args.count))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
