"""
Acceptance (#13, point 5): a real Prometheus scrapes a real ``twistd -n strata`` at ``/metrics``.

Strata protects example.test, whose primary is a closed loopback port; the monitor (short
intervals) opens an outage, and three messages sent to intake wait in the queue.  Prometheus
(Debian's package, on loopback, scraping every second) must then answer the PromQL queries an
operator's dashboard and alerts use: the domain's queue depth is 3, ``strata_primary_up == 0``
returns the domain, its outage is active, and intake counted three accepted messages.  It scrapes
with an operator's read-scope API key: ``/metrics`` answers nobody else.
"""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from tests.peers.admin_api import AdminClient, operator_key
from tests.peers.net import free_port
from tests.peers.prometheus import PrometheusProcess
from tests.peers.strata import StrataProcess
from tests.peers.wait import eventually

pytestmark = pytest.mark.interop

DOMAIN = "example.test"
MONITOR = "[monitor]\nprobe_interval = 0.5\nretry_interval = 0.5\ndown_after = 2\nup_after = 2\n"
QUEUED = 3


def value(prometheus: PrometheusProcess, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_sees_the_queue_and_the_down_primary(strata_factory: Any, tmp_path) -> None:
    closed = free_port()  # nothing listens here: the primary is down
    admin = free_port()
    strata: StrataProcess = strata_factory(
        extra_config=MONITOR + f'[admin]\nlisten = ["127.0.0.1:{admin}"]\n'
    )
    strata.cli("domain", "add", DOMAIN, "--relay", f"127.0.0.1:{closed}")
    strata.start()
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.ehlo("sender.test")
        for n in range(QUEUED):
            client.sendmail("ana@sender.test", [f"user{n}@{DOMAIN}"],
                            f"Subject: during the outage {n}\r\n\r\nhello\r\n")  # fmt: skip
    # /metrics names every domain: only an operator's key (or session) reads it.
    assert AdminClient(admin).get("/metrics").status == 401
    key = operator_key(admin, strata.data_dir, scope="read")
    assert AdminClient(admin, key=key).get("/metrics").status == 200
    prometheus = PrometheusProcess(tmp_path / "prometheus", f"127.0.0.1:{admin}", bearer=key)
    prometheus.start()
    try:
        queued = f'strata_queue_messages{{domain="{DOMAIN}", state="queued"}}'
        eventually(lambda: value(prometheus, queued) == QUEUED, timeout=60,
                   what=f"{queued} == {QUEUED} in Prometheus")  # fmt: skip
        down = eventually(lambda: prometheus.query(f'strata_primary_up{{domain="{DOMAIN}"}} == 0'),
                          timeout=60, what="strata_primary_up == 0 in Prometheus")  # fmt: skip
        assert [series["metric"]["domain"] for series in down] == [DOMAIN]
        assert down[0]["metric"]["job"] == "strata"
        assert value(prometheus, f'strata_outage_active{{domain="{DOMAIN}"}}') == 1
        accepted = 'strata_intake_messages_total{result="accepted"}'
        eventually(lambda: value(prometheus, accepted) == QUEUED, timeout=30, what=accepted)
        age = value(prometheus, f'strata_queue_oldest_message_age_seconds{{domain="{DOMAIN}"}}')
        assert age is not None and 0 <= age < 120
        assert value(prometheus, 'up{job="strata"}') == 1  # every scrape succeeded lately
    except BaseException:
        print(prometheus.log_text()[-3000:])  # noqa: T201 (shown when the test fails)
        raise
    finally:
        prometheus.stop()
        strata.stop()
