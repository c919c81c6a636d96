"""
The relay under crashes and a flapping primary, against a real Postfix primary (its cleanup log
gives the order in which it received each message, and every duplicate).

- kill -9 during a drain of 2,000 messages, then restart: every message reaches the primary;
  the duplicates (messages delivered but not yet recorded at the kill) are counted and reported,
  and bounded by the messages in flight on the one relay connection.
- A primary that goes down and up every couple of seconds during a 2,000-message drain: every
  message arrives, the first arrivals keep the acceptance order, duplicates are counted.
"""

from __future__ import annotations

import random
import re
import smtplib
import time
from collections import Counter
from typing import Any

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.net import FlappingProxy
from tests.peers.postfix import PostfixInstance

pytestmark = [pytest.mark.interop, pytest.mark.slow]

COUNT = 2000
MONITOR = "[monitor]\nprobe_interval = 0.5\ndown_after = 2\nup_after = 1\n"


def load(strata: Any, count: int) -> list[str]:
    ids = []
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=60) as client:
        for n in range(count):
            message_id = f"<drain-{n}@sender.test>"
            body = (f"From: a@sender.test\r\nTo: u@example.test\r\nMessage-ID: {message_id}\r\n"
                    f"Subject: {n}\r\n\r\n" + f"line {n}\r\n" * (n % 50 + 1)).encode()  # fmt: skip
            client.sendmail("a@sender.test", ["u@example.test"], body)
            ids.append(message_id)
    return ids


def arrivals(primary: PostfixInstance) -> list[str]:
    """Message-IDs in the order the primary received them, duplicates included."""
    return re.findall(r"cleanup\[\d+\]: \w+: message-id=(<drain-\d+@sender\.test>)",
                      primary.maillog())  # fmt: skip


def wait_delivered(strata: Any, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = Counter(e["state"] for e in strata.queue())
        if states.get("delivered") == count:
            return
        time.sleep(0.5)
    raise AssertionError(f"not all delivered: {Counter(e['state'] for e in strata.queue())}")


def check_order_and_count(sent: list[str], got: list[str]) -> int:
    """Every message arrived; first arrivals keep the acceptance order; returns duplicates."""
    first: list[str] = []
    seen: set[str] = set()
    for message_id in got:
        if message_id not in seen:
            seen.add(message_id)
            first.append(message_id)
    assert first == sent
    return len(got) - len(sent)


def test_kill_9_during_a_drain(strata_factory: Any, postfix_factory: PostfixFactory) -> None:
    primary = postfix_factory.primary(["example.test"])
    strata = strata_factory(extra_config="[relay]\ninterval = 300\n" + MONITOR)
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:9")
    strata.start()
    sent = load(strata, COUNT)
    strata.cli("domain", "update", "example.test", "--relay", f"127.0.0.1:{primary.smtpd_port}")
    # The drain starts when the monitor sees the new relay host answer; kill it part-way.
    target = random.Random(7).randint(200, COUNT - 300)
    deadline = time.monotonic() + 60
    while len(arrivals(primary)) < target and time.monotonic() < deadline:
        time.sleep(0.02)
    strata.kill()
    at_kill = len(arrivals(primary))
    assert 0 < at_kill < COUNT, "the kill should land mid-drain"
    strata.start()
    strata.cli("queue", "flush")
    wait_delivered(strata, COUNT)
    time.sleep(1)  # let the primary's cleanup log the last ones
    duplicates = check_order_and_count(sent, arrivals(primary))
    print(f"kill -9 after {at_kill} deliveries: {duplicates} duplicate(s)")
    assert duplicates <= 1  # at most the one message in flight on the relay connection


def test_flapping_primary_during_a_drain(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    primary = postfix_factory.primary(["example.test"])
    proxy = FlappingProxy(primary.smtpd_port)
    strata = strata_factory(extra_config="[relay]\ninterval = 1\n" + MONITOR)
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:9")
    strata.start()
    sent = load(strata, COUNT)
    proxy.up()
    strata.cli("domain", "update", "example.test", "--relay", f"127.0.0.1:{proxy.port}")
    flaps = 0
    deadline = time.monotonic() + 240
    try:
        while len(set(arrivals(primary))) < COUNT and time.monotonic() < deadline:
            time.sleep(0.7)
            proxy.down()  # the primary goes away mid-drain, connections cut...
            flaps += 1
            time.sleep(0.7)
            proxy.up()  # ...and comes back
        wait_delivered(strata, COUNT)
    finally:
        proxy.down()
    time.sleep(1)
    duplicates = check_order_and_count(sent, arrivals(primary))
    print(f"{flaps} flaps: {duplicates} duplicate(s)")
    assert flaps >= 2, "the drain should have lived through several outages"
    assert duplicates <= flaps  # at most the message in flight at each cut
