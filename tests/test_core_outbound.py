"""
Outbound delivery (issue 5) on a task.Clock: users' mail for other domains goes to the recipient
domain's MX (or a smarthost) on a backoff schedule, with a delay notice, a failed DSN on 5xx, null
MX and expiry, DSNs into the sender's shadow INBOX, and DKIM prefixes for outbound mail only.

The memory store, the scripted primary and the fake resolver are the relay tests' (imported from
``tests/test_core_relay.py`` and ``strata_twisted.testing``); the connector here also records
when each connection was asked for and what each session was given to send.
"""

from __future__ import annotations

import email.message
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from strata_twisted.config import OutboundSettings, RelaySettings
from strata_twisted.core.relay import NULL_MX_REASON, NULL_MX_STATUS, RelayedMessage, RelayLoop
from strata_twisted.core.routes import NullMX, RouteTemporaryFailure
from strata_twisted.model import (
    BOUNCED,
    DELIVERED,
    QUEUED,
    Delivery,
    Domain,
    QueueEntry,
    RelayTarget,
    ShadowCopy,
)
from strata_twisted.testing import FakeMXResolver, ScriptedPrimary, result_of, store_message
from tests.test_core_relay import INTERVAL, T0, RecordingConnector, Relay, parts

RETRY_MIN = 600.0
RETRY_MAX = 1500.0
LIFETIME = 86400.0
SENDER = "ana@example.test"  # a user of the protected domain (mode both), sending
REMOTE = "bob@remote.test"
MX = RelayTarget("10.0.0.50", 25)
TRY_LATER = (451, "451 4.3.0 try later")
PREFIX = b"DKIM-Signature: x\r\n"


class SpyConnection:
    """A scripted session that remembers every message it is given."""

    def __init__(self, inner: Any, sent: list[RelayedMessage]) -> None:
        self._inner = inner
        self._sent = sent

    @property
    def alive(self) -> bool:
        return bool(self._inner.alive)

    @property
    def remote(self) -> str:
        return str(self._inner.remote)

    def send(self, message: RelayedMessage, after: Deferred[bool] | None = None) -> Deferred[Any]:
        self._sent.append(message)
        d: Deferred[Any] = self._inner.send(message, after)
        return d

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._inner.close()
        return d


class TimedConnector(RecordingConnector):
    """The relay tests' recording connector, also noting the clock at each connection attempt
    (``attempts``: (time, domain name)) and every message sent (``sent``)."""

    def __init__(self, primary: ScriptedPrimary, clock: Clock) -> None:
        super().__init__(primary)
        self.clock = clock
        self.attempts: list[tuple[float, str]] = []
        self.sent: list[RelayedMessage] = []

    def connect(self, domain: Domain) -> Deferred[Any]:
        self.attempts.append((self.clock.seconds(), domain.name))
        d = super().connect(domain)
        d.addCallback(lambda connection: SpyConnection(connection, self.sent))
        return d

    def times(self, name: str) -> list[float]:
        """When a connection for mail to ``name`` was asked for (relative to T0)."""
        return [at - T0 for at, asked in self.attempts if asked == name]


class FakeSigner:
    """An OutboundSigner that signs everything it is asked about with PREFIX."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def signature(self, message: RelayedMessage) -> Deferred[bytes]:
        self.asked.append(message.message.id)
        return succeed(PREFIX)


class Outbound:
    """The relay tests' harness (example.test protected, here in mode both) with a RelayLoop that
    has a resolver, outbound settings and maybe a signer."""

    def __init__(
        self,
        routes: dict[str, Any] | None = None,
        signer: FakeSigner | None = None,
        resolver: bool = True,
        **outbound: Any,
    ) -> None:
        self.r = Relay(mode="both")
        self.clock = self.r.clock
        self.store = self.r.store
        self.primary = self.r.primary
        self.resolver = FakeMXResolver(
            {"remote.test": [(MX.host, MX.port)]} if routes is None else routes
        )
        self.connector = TimedConnector(self.primary, self.clock)
        settings: dict[str, Any] = {
            "retry_min": RETRY_MIN,
            "retry_max": RETRY_MAX,
            "delay_notice": 0.0,
        }
        settings.update(outbound)
        self.loop = RelayLoop(
            self.clock, self.store, self.store, self.store, self.r.domains, self.connector,
            RelaySettings(interval=INTERVAL, queue_lifetime=LIFETIME, batch_size=3),
            "strata.test", self.resolver if resolver else None,
            OutboundSettings(**settings), signer,
        )  # fmt: skip
        self._n = 0

    def send(self, *recipients: str, sender: str = SENDER, outbound: bool = True) -> str:
        """Commit a message as submission does: recipients outside example.test are outbound
        (``outbound=False``: as intake did while their domain was protected)."""
        self._n += 1
        queue_id = f"S{self._n:04d}"
        body = (f"From: {sender}\r\nTo: {', '.join(recipients)}\r\n"
                f"Message-ID: <{queue_id}@example.test>\r\nSubject: {queue_id}\r\n"
                "\r\nhello\r\n").encode()  # fmt: skip
        deliveries = []
        for recipient in recipients:
            domain = recipient.split("@")[1]
            if domain == "example.test":
                deliveries.append(Delivery(recipient, domain, shadow=True))
            else:
                deliveries.append(Delivery(recipient, domain, outbound=outbound))
        result_of(store_message(self.store, queue_id, body, deliveries, sender=sender,
                                received_at=self.clock.seconds()))  # fmt: skip
        return queue_id

    def run(self) -> None:
        result_of(self.loop.run())

    def at(self, since_t0: float) -> None:
        """Move the clock to T0 + ``since_t0`` and run the loop once."""
        self.clock.advance(T0 + since_t0 - self.clock.seconds())
        self.run()

    def entry(self, entry_id: str) -> QueueEntry:
        entry = result_of(self.store.get_entry(entry_id))
        assert entry is not None
        return entry

    def dsn_entries(self) -> list[QueueEntry]:
        return [e for e in result_of(self.store.list_entries()) if e.sender == ""]

    def dsns(self, action: str | None = None) -> list[email.message.Message]:
        """The DSNs queued so far; ``action``: only those whose recipients say so."""
        return [dsn for dsn in self.r.dsns() if action is None or actions(dsn) == {action}]

    def inbox(self, user: str = SENDER) -> list[str]:
        return [m.message_id for m in result_of(self.store.list_messages(user, "INBOX"))]

    def kinds(self) -> list[str]:
        return sorted(e.kind for e in result_of(self.store.list_events()))


def recipient_blocks(dsn: email.message.Message) -> list[email.message.Message]:
    """The per-recipient blocks of a DSN's message/delivery-status part (RFC 3464 §2.3)."""
    _, status, _ = parts(dsn)
    assert status.get_content_type() == "message/delivery-status"
    return parts(status)[1:]


def actions(dsn: email.message.Message) -> set[str]:
    return {str(block["Action"]) for block in recipient_blocks(dsn)}


# -- the backoff schedule ----------------------------------------------------------------------


def test_a_4xx_defers_by_retry_min_and_nothing_is_tried_before_then() -> None:
    o = Outbound()
    o.primary.script(REMOTE, TRY_LATER)
    queue_id = o.send(REMOTE)
    o.run()
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.attempts, entry.last_error) == (QUEUED, 1, "451 4.3.0 try later")
    assert entry.next_attempt_at == T0 + RETRY_MIN
    assert o.resolver.lookups == ["remote.test"]
    assert o.connector.asked == [Domain("remote.test", MX, tls_policy="opportunistic",
                                        monitored=False)]  # fmt: skip
    # The loop's runs before retry_min (every interval, and one just before it) try nothing.
    o.at(INTERVAL)
    o.at(RETRY_MIN - 1)
    assert o.connector.times("remote.test") == [0.0]
    assert o.primary.received == []
    o.at(RETRY_MIN)
    assert o.connector.times("remote.test") == [0.0, RETRY_MIN]
    assert o.primary.received == [(queue_id, (REMOTE,))]
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.attempts, entry.delivered_at) == (DELIVERED, 2, T0 + RETRY_MIN)
    assert o.dsns() == []


def test_each_4xx_doubles_the_wait_up_to_retry_max() -> None:
    o = Outbound()
    o.primary.script(REMOTE, *[TRY_LATER] * 5)
    queue_id = o.send(REMOTE)
    # Waits: retry_min, 2 * retry_min, then 4 * and 8 * retry_min capped at retry_max.
    waits = [RETRY_MIN, 2 * RETRY_MIN, RETRY_MAX, RETRY_MAX, RETRY_MAX]
    expected = [0.0]
    for wait in waits:
        expected.append(expected[-1] + wait)
    o.run()
    for n, (attempt, wait) in enumerate(zip(expected, waits, strict=False), start=1):
        entry = o.entry(f"{queue_id}.1")
        assert (entry.state, entry.attempts) == (QUEUED, n)
        assert entry.next_attempt_at == T0 + attempt + wait
        o.at(attempt + wait - 1)  # a second early: nothing
        assert o.connector.times("remote.test") == expected[:n]
        o.at(attempt + wait)
    assert o.connector.times("remote.test") == expected
    assert o.entry(f"{queue_id}.1").state == DELIVERED
    assert [q for q, _ in o.primary.received] == [queue_id]


def test_no_route_defers_outbound_mail_on_the_same_schedule() -> None:
    o = Outbound({"remote.test": RouteTemporaryFailure("remote.test: MX lookup failed")})
    queue_id = o.send(REMOTE)
    o.run()
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.next_attempt_at) == (QUEUED, T0 + RETRY_MIN)
    o.at(RETRY_MIN - 1)
    assert o.resolver.lookups == ["remote.test"]
    o.at(RETRY_MIN)
    assert o.entry(f"{queue_id}.1").next_attempt_at == T0 + RETRY_MIN + 2 * RETRY_MIN
    assert o.resolver.lookups == ["remote.test"] * 2
    assert o.kinds() == ["relay.no_route"] * 2


# -- failures: 5xx, null MX, expiry --------------------------------------------------------------


def test_a_5xx_gives_one_dsn_to_the_senders_inbox_and_primary() -> None:
    o = Outbound()
    o.primary.script(REMOTE, (550, "550 5.1.1 <bob@remote.test>: user unknown"))
    queue_id = o.send(REMOTE)
    o.run()
    bounced = o.entry(f"{queue_id}.1")
    assert (bounced.state, bounced.attempts) == (BOUNCED, 1)
    (dsn,) = o.dsns()
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    (block,) = recipient_blocks(dsn)
    assert block["Final-Recipient"] == f"rfc822; {REMOTE}"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] == f"dns; {MX.host}"  # RFC 3464 §2.3.5: no port
    assert "user unknown" in str(block["Diagnostic-Code"])
    # The DSN: one queue entry, from <>, for the sender's primary (after the outage) ...
    (dsn_entry,) = o.dsn_entries()
    assert (dsn_entry.recipient, dsn_entry.domain, dsn_entry.outbound, dsn_entry.state) == (
        SENDER, "example.test", False, QUEUED)  # fmt: skip
    # ... and a shadow copy in the sender's INBOX now, where they sent the message from.
    assert result_of(o.store.list_shadow_copies(SENDER)) == [
        ShadowCopy(dsn_entry.message_id, SENDER, "INBOX", T0)
    ]
    assert o.inbox() == [dsn_entry.message_id]
    assert "relay.bounced" in o.kinds()
    # The next run takes the DSN to the primary, and bounces nothing again.
    o.at(INTERVAL)
    assert o.primary.received == [(dsn_entry.message_id, (SENDER,))]
    assert o.connector.asked[-1].relay == RelayTarget("10.0.0.1")
    assert o.entry(dsn_entry.id).state == DELIVERED
    assert len(o.dsns()) == 1


def test_a_null_mx_bounces_at_once_with_5_1_10() -> None:
    o = Outbound({"nomail.test": NullMX("nomail.test")})
    queue_id = o.send("x@nomail.test")
    o.run()
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.attempts, entry.last_error) == (BOUNCED, 1, NULL_MX_REASON)
    assert o.connector.times("nomail.test") == []  # no connection, no retry
    (dsn,) = o.dsns()
    (block,) = recipient_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", NULL_MX_STATUS)
    assert NULL_MX_STATUS == "5.1.10"
    assert block["Final-Recipient"] == "rfc822; x@nomail.test"
    (dsn_entry,) = o.dsn_entries()
    assert dsn_entry.recipient == SENDER
    assert o.inbox() == [dsn_entry.message_id]
    assert "relay.null_mx" in o.kinds()
    o.at(RETRY_MAX * 10)
    assert o.resolver.lookups == ["nomail.test"]


def test_outbound_mail_expires_at_the_queue_lifetime_with_4_4_7() -> None:
    o = Outbound()
    o.primary.script(REMOTE, *[TRY_LATER] * 200)
    queue_id = o.send(REMOTE)
    o.run()
    for _ in range(200):  # bounded: a retry that goes wrong must fail, not loop
        entry = o.entry(f"{queue_id}.1")
        assert entry.state == QUEUED
        if entry.next_attempt_at >= T0 + LIFETIME:
            break
        o.at(entry.next_attempt_at - T0)
    assert o.clock.seconds() > T0 + LIFETIME - RETRY_MAX
    tried = len(o.connector.times("remote.test"))
    assert o.dsns() == []
    o.at(o.entry(f"{queue_id}.1").next_attempt_at - T0)  # past the lifetime: expired, not tried
    assert len(o.connector.times("remote.test")) == tried
    entry = o.entry(f"{queue_id}.1")
    assert entry.state == BOUNCED
    assert entry.last_error is not None and entry.last_error.startswith("message expired")
    (dsn,) = o.dsns()
    (block,) = recipient_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert "try later" in str(block["Diagnostic-Code"])  # the last error is in the reason
    (dsn_entry,) = o.dsn_entries()
    assert o.inbox() == [dsn_entry.message_id]
    assert "relay.expired" in o.kinds()


# -- the delay notice ------------------------------------------------------------------------------

DELAY = 3600.0


@pytest.mark.parametrize("deferral", ["4xx", "no route"])
def test_one_delay_notice_once_delay_notice_has_passed(deferral: str) -> None:
    if deferral == "4xx":
        o = Outbound(delay_notice=DELAY)
        o.primary.script(REMOTE, *[TRY_LATER] * 20)
    else:
        o = Outbound({"remote.test": RouteTemporaryFailure("remote.test: timed out")},
                     delay_notice=DELAY)  # fmt: skip
    queue_id = o.send(REMOTE)
    o.run()
    # Attempts at 0, 600, 1800, 3300 (before DELAY), then 4800, 6300, ...
    for since in (RETRY_MIN, 3 * RETRY_MIN, 3 * RETRY_MIN + RETRY_MAX):
        o.at(since)
        assert o.dsns() == []
        assert o.entry(f"{queue_id}.1").delay_notified_at is None
    late = 3 * RETRY_MIN + 2 * RETRY_MAX
    o.at(late)
    (dsn,) = o.dsns()
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    (block,) = recipient_blocks(dsn)
    assert block["Action"] == "delayed"
    assert block["Final-Recipient"] == f"rfc822; {REMOTE}"
    assert str(block["Status"]).startswith("4.")
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.delay_notified_at) == (QUEUED, T0 + late)
    (dsn_entry,) = o.dsn_entries()
    assert o.inbox() == [dsn_entry.message_id]
    assert "relay.delayed" in o.kinds()
    for n in range(1, 5):  # later deferrals tell nobody again
        o.at(late + n * RETRY_MAX)
    if deferral == "4xx":  # every one of them was an attempt
        assert o.connector.times("remote.test") == [
            0.0,
            RETRY_MIN,
            3 * RETRY_MIN,
            *(late + n * RETRY_MAX for n in range(-1, 5)),
        ]
    assert len(o.dsns()) == 1
    assert o.entry(f"{queue_id}.1").delay_notified_at == T0 + late


def test_delay_notice_zero_sends_none() -> None:
    o = Outbound(delay_notice=0.0)
    o.primary.script(REMOTE, *[TRY_LATER] * 40)
    queue_id = o.send(REMOTE)
    o.run()
    for _ in range(30):
        entry = o.entry(f"{queue_id}.1")
        assert entry.state == QUEUED
        o.at(entry.next_attempt_at - T0)
    assert o.clock.seconds() > T0 + 10 * 3600  # well past the default delay_notice (4 hours)
    assert len(o.connector.times("remote.test")) == 31
    assert o.dsns() == []
    assert o.entry(f"{queue_id}.1").delay_notified_at is None


@pytest.mark.parametrize("deferral", ["4xx", "no route"])
def test_one_delay_notice_per_message_for_two_deferred_recipients(deferral: str) -> None:
    if deferral == "4xx":
        o = Outbound(delay_notice=DELAY)
        for recipient in (REMOTE, "carl@remote.test"):
            o.primary.script(recipient, *[TRY_LATER] * 10)
    else:
        o = Outbound({"remote.test": RouteTemporaryFailure("remote.test: timed out")},
                     delay_notice=DELAY)  # fmt: skip
    o.send(REMOTE, "carl@remote.test")
    o.run()
    for since in (RETRY_MIN, 3 * RETRY_MIN, 3 * RETRY_MIN + RETRY_MAX,
                  3 * RETRY_MIN + 2 * RETRY_MAX):  # fmt: skip
        o.at(since)
    assert len(o.dsns()) == 1  # one per message, not one per recipient
    (dsn,) = o.dsns()
    assert sorted(str(b["Final-Recipient"]) for b in recipient_blocks(dsn)) == [
        f"rfc822; {REMOTE}",
        "rfc822; carl@remote.test",
    ]


# -- the DSN's headers ---------------------------------------------------------------------------


def _fail_5xx(o: Outbound) -> None:
    o.primary.script(REMOTE, (554, "554 5.7.1 rejected"))
    o.send(REMOTE)
    o.run()


def _fail_null_mx(o: Outbound) -> None:
    o.resolver.routes["remote.test"] = NullMX("remote.test")
    o.send(REMOTE)
    o.run()


def _fail_expiry(o: Outbound) -> None:
    o.resolver.routes["remote.test"] = RouteTemporaryFailure("remote.test: timed out")
    o.send(REMOTE)
    o.run()
    o.at(LIFETIME)


def _delay(o: Outbound) -> None:
    o.primary.script(REMOTE, *[TRY_LATER] * 2)
    o.send(REMOTE)
    o.run()
    o.at(RETRY_MIN)


@pytest.mark.parametrize(
    ("cause", "delay_notice", "action"),
    [
        (_fail_5xx, 0.0, "failed"),
        (_fail_null_mx, 0.0, "failed"),
        (_fail_expiry, 0.0, "failed"),
        (_delay, RETRY_MIN, "delayed"),
    ],  # fmt: skip
    ids=["5xx", "null-mx", "expiry", "delay"],
)
def test_the_dsn_comes_from_the_mailer_daemon_to_the_sender(
    cause: Any, delay_notice: float, action: str
) -> None:
    o = Outbound(delay_notice=delay_notice)
    cause(o)
    (dsn,) = o.dsns()
    assert actions(dsn) == {action}
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@strata.test>"
    assert dsn["To"] == f"<{SENDER}>"
    assert dsn["Auto-Submitted"] == "auto-replied"  # RFC 3834: no auto-reply loops
    (dsn_entry,) = o.dsn_entries()
    assert (dsn_entry.sender, dsn_entry.recipient) == ("", SENDER)  # from <>: never bounces


# -- routing: smarthost, unprotected domains -----------------------------------------------------


@pytest.mark.parametrize(
    ("smarthost", "target"),
    [
        ("smart.example.net:2525", RelayTarget("smart.example.net", 2525)),
        ("smart.example.net", RelayTarget("smart.example.net", 587)),
    ],  # fmt: skip
)
@pytest.mark.parametrize("with_resolver", [True, False])
def test_a_smarthost_takes_outbound_mail_without_mx_lookups(
    smarthost: str, target: RelayTarget, with_resolver: bool
) -> None:
    o = Outbound(smarthost=smarthost, smarthost_tls="required", resolver=with_resolver)
    queue_id = o.send(REMOTE)
    o.run()
    assert o.connector.asked == [
        Domain("remote.test", target, tls_policy="required", monitored=False)
    ]
    assert o.resolver.lookups == []
    assert o.primary.received == [(queue_id, (REMOTE,))]
    assert o.entry(f"{queue_id}.1").state == DELIVERED


def test_an_unreachable_smarthost_defers_on_the_backoff_schedule() -> None:
    o = Outbound(smarthost="smart.example.net:2525")
    o.connector.refuse = {"smart.example.net"}
    queue_id = o.send(REMOTE)
    o.run()
    entry = o.entry(f"{queue_id}.1")
    assert (entry.state, entry.next_attempt_at) == (QUEUED, T0 + RETRY_MIN)
    assert entry.last_error is not None and "smarthost smart.example.net:2525" in entry.last_error
    assert o.resolver.lookups == []


def test_mail_for_an_unprotected_domain_waits_unless_it_is_outbound() -> None:
    o = Outbound()
    kept = o.send("carol@remote.test", sender="s@sender.test", outbound=False)
    sent = o.send(REMOTE)
    o.run()
    assert o.primary.received == [(sent, (REMOTE,))]
    assert o.entry(f"{sent}.1").state == DELIVERED
    entry = o.entry(f"{kept}.1")
    # Kept queued as before: retried at the next run (the interval, not the backoff), no DSN.
    assert (entry.state, entry.next_attempt_at) == (QUEUED, T0 + INTERVAL)
    assert entry.last_error is not None and "no longer protected" in entry.last_error
    # The outbound one opened a session: a drain, which counts the kept one as deferred.
    assert o.kinds() == ["relay.drain_finished", "relay.drain_started", "relay.unprotected"]
    (finished,) = [e for e in result_of(o.store.list_events()) if e.kind == "relay.drain_finished"]
    assert (finished.data["delivered"], finished.data["deferred"]) == (1, 1)
    assert o.dsns() == []
    o.at(INTERVAL)
    assert o.entry(f"{kept}.1").state == QUEUED
    # Nothing left to send: no session, no drain; the kept one is reported again.
    assert o.kinds().count("relay.unprotected") == 2
    assert o.kinds().count("relay.drain_started") == 1


# -- signing -----------------------------------------------------------------------------------


def test_outbound_mail_carries_the_signers_prefix() -> None:
    signer = FakeSigner()
    o = Outbound(signer=signer)
    queue_id = o.send(REMOTE)
    o.run()
    (relayed,) = o.connector.sent
    assert relayed.prefix == PREFIX
    assert relayed.size == len(PREFIX) + relayed.message.size
    assert relayed.message.id == queue_id
    assert signer.asked == [queue_id]
    assert o.entry(f"{queue_id}.1").state == DELIVERED


def test_mail_for_a_protected_primary_is_never_signed() -> None:
    signer = FakeSigner()
    o = Outbound(signer=signer)
    colleague = o.send("carla@example.test")
    both = o.send("carla@example.test", REMOTE)  # one message: a colleague and an outsider
    o.run()
    by_domain = {(m.message.id, m.entries[0].domain): m for m in o.connector.sent}
    assert set(by_domain) == {(colleague, "example.test"), (both, "example.test"),
                              (both, "remote.test")}  # fmt: skip
    assert by_domain[colleague, "example.test"].prefix == b""
    assert by_domain[both, "example.test"].prefix == b""
    assert (
        by_domain[colleague, "example.test"].size
        == by_domain[colleague, "example.test"].message.size
    )
    assert by_domain[both, "remote.test"].prefix == PREFIX
    assert signer.asked == [both]


def test_our_own_dsns_going_by_mx_are_not_signed() -> None:
    signer = FakeSigner()
    o = Outbound({"sender.test": [("10.0.0.60", 25)]}, signer=signer)
    o.send("s@sender.test", sender="", outbound=False)  # a DSN from <> to a sender elsewhere
    o.run()
    (relayed,) = o.connector.sent
    assert relayed.entries[0].domain == "sender.test"
    assert relayed.prefix == b""
    assert signer.asked == []
