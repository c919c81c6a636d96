"""
Crash safety (DESIGN decision 2): ``twistd`` as a subprocess takes 2,000 messages over 20 parallel
sessions and is ``kill -9``'d at a random moment.  After a restart, every message that got ``250``
is in the queue exactly once and its stored bytes are exactly what was sent (after the one
Received header we prepend).  Five runs, five different kill moments.
"""

from __future__ import annotations

import random
import smtplib
import threading
from pathlib import Path
from typing import Any

import pytest

from strata_twisted.clock import WallClock
from strata_twisted.executor import SyncExecutor
from strata_twisted.storage import open_store
from strata_twisted.testing import result_of

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SESSIONS = 20
PER_SESSION = 100


def make_message(session: int, n: int, rng: random.Random) -> tuple[str, bytes]:
    message_id = f"<crash-{session}-{n}@sender.test>"
    lines = [
        f"From: s{session}@sender.test",
        "To: u@example.test",
        f"Message-ID: {message_id}",
        f"Subject: crash test {session}/{n}",
        "",
        f"session {session} message {n}",
    ]
    for _ in range(rng.randint(1, 60)):
        kind = rng.random()
        if kind < 0.1:
            lines.append("." + "x" * rng.randint(0, 40))  # needs dot-stuffing on the wire
        elif kind < 0.15:
            lines.append("")
        else:
            lines.append(
                "".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(1, 200)))
            )
    return message_id, ("\r\n".join(lines) + "\r\n").encode()


def sender(
    port: int,
    session: int,
    seed: int,
    acked: dict[str, bytes],
    stop: threading.Event,
    lock: threading.Lock,
    count: list[int],
) -> None:
    rng = random.Random(seed * 1000 + session)
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("crash.test")
        for n in range(PER_SESSION):
            if stop.is_set():
                break
            message_id, body = make_message(session, n, rng)
            client.sendmail(f"s{session}@sender.test", ["u@example.test"], body)
            with lock:
                acked[message_id] = body  # sendmail returned: the server said 250
                count[0] += 1
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass  # the server was killed under us


def stored_bodies(data_dir: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    store = open_store("sqlite", data_dir, WallClock(), SyncExecutor())
    store.open(recover=False)
    try:
        entries = result_of(store.list_entries())
        bodies = {e.message_id: result_of(store.read_body(e.message_id)) for e in entries}
        return [e.as_json() for e in entries], bodies
    finally:
        store.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_kill_9_loses_no_acknowledged_message(strata_factory, seed: int) -> None:
    strata = strata_factory()
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    strata.start()
    rng = random.Random(seed)
    kill_after = rng.randint(50, SESSIONS * PER_SESSION - 200)
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()
    count = [0]
    threads = [
        threading.Thread(target=sender, args=(strata.port, s, seed, acked, stop, lock, count))
        for s in range(SESSIONS)
    ]
    for t in threads:
        t.start()
    while True:
        with lock:
            if count[0] >= kill_after:
                break
        if not any(t.is_alive() for t in threads):
            pytest.fail(
                f"senders finished before the kill point ({count[0]} acked): "
                + strata.log_text()[-2000:]
            )
        threading.Event().wait(0.002)
    strata.kill()
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acked) >= kill_after

    strata.start()  # recovery runs at startup; the server must come back
    strata.stop()
    entries, bodies = stored_bodies(strata.data_dir)
    by_message_id: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_message_id.setdefault(e["message_id"], []).append(e)
    for message_id, body in acked.items():
        found = by_message_id.get(message_id, [])
        assert len(found) == 1, f"{message_id}: {len(found)} entries"
        stored = bodies[found[0]["queue_id"]]
        assert stored.startswith(b"Received: ")
        assert stored.split(b"\r\n", 3)[3] == body, f"{message_id} was altered"
    # Nothing half-stored: every entry has a readable body, and no stray files remain.
    assert all(e["queue_id"] in bodies for e in entries)
    files = [p for p in (strata.data_dir / "messages").rglob("*") if p.is_file()]
    assert all(p.name in bodies for p in files), "an uncommitted body file survived recovery"
