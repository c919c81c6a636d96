"""
Alert emails (issue 5, point 5): what they say, where they are queued, and that each is recorded.
Memory store on a task.Clock; the relay's delivery of them is tested with the relay.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from twisted.internet.task import Clock

from strata_twisted.core.alert_email import EmailAlertSender
from strata_twisted.core.domains import DomainCache
from strata_twisted.model import (
    DELIVERED_OUTCOME,
    AttemptResult,
    Branding,
    Customer,
    Delivery,
    Domain,
    Outage,
    QueueEntry,
    RelayTarget,
    Reseller,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Setup:
    def __init__(self, alert_email: str | None, mode: str = "both", customer: str = "") -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore(self.clock)
        for domain in (
            Domain(
                "acme.test", RelayTarget("10.0.0.1"), alert_email=alert_email, customer=customer
            ),
            Domain("msp.test", RelayTarget("10.0.0.2"), mode=mode),  # type: ignore[arg-type]
        ):
            result_of(self.store.add_domain(domain))
        self.domains = DomainCache(self.clock, self.store, 1.0)
        result_of(self.domains.refresh())
        self.kicked: list[str] = []
        self.sender = EmailAlertSender(
            self.clock, self.store, self.store, self.store, self.domains, "strata.test",
            "Acme IT <alerts@msp.test>", deliver_now=self.kicked.append, tenants=self.store,
        )  # fmt: skip
        found = self.domains.get("acme.test")
        assert found is not None
        self.domain: Domain = found

    def alerts(self) -> list[tuple[email.message.EmailMessage, list[QueueEntry]]]:
        out = []
        ids = dict.fromkeys(e.message_id for e in result_of(self.store.list_entries()))
        for message_id in ids:
            body = result_of(self.store.read_body_range(message_id, 0, 1 << 20))
            parsed = email.message_from_bytes(body, policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            if parsed["X-Strata-Alert"]:
                out.append((parsed, result_of(self.store.entries_for_message(message_id))))
        return out


def test_outage_start_alert_to_an_outside_address_goes_outbound_and_is_recorded() -> None:
    s = Setup("ops@elsewhere.test")
    outage = Outage(1, "acme.test", T0 - 600, "connection refused")
    result_of(s.sender.outage_started(s.domain, outage, 7))
    [(message, entries)] = s.alerts()
    assert message["From"] == "Acme IT <alerts@msp.test>"
    assert message["To"] == "ops@elsewhere.test"
    assert message["Subject"] == (
        "[Strata] acme.test: primary mail server DOWN since 2027-01-15 07:50:00 UTC"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert "Down since:      2027-01-15 07:50:00 UTC" in text
    assert "connection refused" in text
    assert "Queued for it:   7 message(s)" in text
    [entry] = entries
    assert entry.outbound and entry.domain == "elsewhere.test"
    assert entry.sender == "alerts@msp.test"
    assert s.kicked == ["elsewhere.test"]
    [event] = [e for e in result_of(s.store.list_events()) if e.kind == "alert.email"]
    assert event.domain == "acme.test" and event.data["to"] == "ops@elsewhere.test"


def test_outage_end_alert_counts_the_outages_mail() -> None:
    s = Setup("ops@elsewhere.test")
    started = T0 - 3725
    for n, delivered in ((1, True), (2, False), (3, True)):
        result_of(store_message(s.store, f"M{n}", b"Subject: x\r\n\r\nx\r\n",
                                [Delivery("u@acme.test", "acme.test")],
                                received_at=started + n))  # fmt: skip
        if delivered:
            [entry] = result_of(s.store.entries_for_message(f"M{n}"))
            result_of(s.store.record_result(AttemptResult(entry.id, DELIVERED_OUTCOME, "250", T0)))
    outage = Outage(1, "acme.test", started, "timeout", ended_at=T0)
    result_of(s.sender.outage_ended(s.domain, outage, 1))
    [(message, _)] = s.alerts()
    assert message["Subject"] == (
        "[Strata] acme.test: primary mail server UP again at 2027-01-15 08:00:00 UTC"
    )
    text = message.get_content()
    assert "Outage lasted:   1h 2m 5s" in text
    assert "Received during the outage: 3 message(s), 2 delivered so far" in text
    assert "Being delivered: 1 queued message(s)" in text


def test_an_alert_address_in_a_protected_domain_gets_its_shadow_inbox_and_primary_queue() -> None:
    s = Setup("boss@msp.test")
    result_of(s.sender.outage_started(s.domain, Outage(1, "acme.test", T0, "refused"), 0))
    [(message, [entry])] = s.alerts()
    assert not entry.outbound and entry.domain == "msp.test"
    copies = result_of(s.store.list_shadow_copies("boss@msp.test"))
    assert [c.message_id for c in copies] == [entry.message_id]


def test_a_domain_without_an_alert_address_gets_no_email() -> None:
    s = Setup(None)
    result_of(s.sender.outage_started(s.domain, Outage(1, "acme.test", T0, "refused"), 0))
    assert s.alerts() == []
    assert s.kicked == []


def test_a_stale_queue_alert_says_how_long_mail_waits() -> None:
    s = Setup("ops@elsewhere.test")
    result_of(s.sender.queue_stale(s.domain, T0 - 5400, 12))
    [(message, _)] = s.alerts()
    assert message["Subject"] == (
        "[Strata] acme.test: mail queued since 2027-01-15 06:30:00 UTC is not delivered yet"
    )
    text = message.get_content()
    assert "waiting in Strata's queue for 1h 30m 0s" in text
    assert "Queued:          12 message(s)" in text
    assert message["X-Strata-Alert"] == "queue.stale; domain=acme.test"


def test_an_alert_goes_to_every_address_of_the_domain() -> None:
    """``alert_email`` may hold several addresses (the API's ``alert_emails``): one message,
    every address a recipient, each routed on its own (a protected domain's primary, or out)."""
    s = Setup("ops@elsewhere.test, noc@msp.test")
    assert s.domain.alert_emails == ("ops@elsewhere.test", "noc@msp.test")
    result_of(s.sender.test_alert(s.domain))
    [(message, entries)] = s.alerts()
    assert message["To"] == "ops@elsewhere.test, noc@msp.test"
    assert sorted((e.recipient, e.domain, e.outbound) for e in entries) == [
        ("noc@msp.test", "msp.test", False),
        ("ops@elsewhere.test", "elsewhere.test", True),
    ]


# -- white-label (#14): a reseller's customer gets the reseller's brand


def branded(brand: Branding, customer: str = "shop") -> Setup:
    s = Setup("ops@elsewhere.test", customer=customer)
    result_of(s.store.add_reseller(Reseller("acme-it", brand)))
    result_of(s.store.add_customer(Customer("shop", "acme-it")))
    result_of(s.store.add_customer(Customer("own")))
    return s


def from_of(message: email.message.EmailMessage) -> tuple[str, str]:
    """The From: field's display name and address (quoted or not, as RFC 5322 allows)."""
    [address] = message["From"].addresses
    return address.display_name, address.addr_spec


ACME_IT = Branding(
    product_name="Acme Continuity",
    support_email="help@acme-it.test",
    support_url="https://acme-it.test/help",
)


def test_a_resellers_customer_gets_alerts_from_the_reseller_with_its_product_name() -> None:
    s = branded(ACME_IT)
    result_of(s.sender.outage_started(s.domain, Outage(1, "acme.test", T0 - 600, "refused"), 7))
    [(message, [entry])] = s.alerts()
    assert from_of(message) == ("Acme Continuity", "help@acme-it.test")
    assert entry.sender == "help@acme-it.test"  # bounces reach the reseller
    assert message["Subject"] == (
        "[Acme Continuity] acme.test: primary mail server DOWN since 2027-01-15 07:50:00 UTC"
    )
    text = message.get_content().replace("\r\n", "\n")
    assert "Strata" not in text
    assert "Acme Continuity is accepting the domain's mail" in text
    assert text.endswith(
        "\n-- \nAcme Continuity\nSupport: help@acme-it.test\nhttps://acme-it.test/help\n"
    )


@pytest.mark.parametrize("kind", ["ended", "stale", "test"])
def test_every_alert_kind_is_branded(kind: str) -> None:
    s = branded(ACME_IT)
    if kind == "ended":
        outage = Outage(1, "acme.test", T0 - 60, "refused", ended_at=T0)
        result_of(s.sender.outage_ended(s.domain, outage, 0))
    elif kind == "stale":
        result_of(s.sender.queue_stale(s.domain, T0 - 5400, 3))
    else:
        result_of(s.sender.test_alert(s.domain))
    [(message, _)] = s.alerts()
    assert message["Subject"].startswith("[Acme Continuity] acme.test: ")
    assert from_of(message) == ("Acme Continuity", "help@acme-it.test")
    text = message.get_content()
    assert "Strata" not in text.replace("strata ", "")  # the CLI's commands keep their name
    assert "Support: help@acme-it.test" in text


def test_a_brand_without_a_support_email_keeps_the_configured_sender() -> None:
    s = branded(Branding(product_name="Acme Continuity"))
    result_of(s.sender.test_alert(s.domain))
    [(message, [entry])] = s.alerts()
    assert message["From"] == "Acme IT <alerts@msp.test>"
    assert entry.sender == "alerts@msp.test"
    assert message["Subject"].startswith("[Acme Continuity] ")
    assert message.get_content().endswith("\r\n-- \r\nAcme Continuity\r\n")


@pytest.mark.parametrize(
    ("customer", "brand"),
    [("own", ACME_IT), ("", ACME_IT), ("shop", Branding(primary_color="#123456"))],
    ids=["operators-customer", "no-customer", "brand-without-name-or-email"],
)
def test_without_a_brand_alerts_are_unchanged(customer: str, brand: Branding) -> None:
    s = branded(brand, customer)
    result_of(s.sender.test_alert(s.domain))
    [(message, [entry])] = s.alerts()
    assert message["From"] == "Acme IT <alerts@msp.test>"
    assert entry.sender == "alerts@msp.test"
    assert message["Subject"] == "[Strata] acme.test: test alert (nothing is wrong)"
    assert "-- " not in message.get_content()
