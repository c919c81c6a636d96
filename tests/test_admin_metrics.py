"""
``/metrics`` (admin/metrics.py): the registry's figures in the format the scraper asks for.  Who
may read them is the API's check (tests/test_admin_api.py).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from strata_twisted.admin.metrics import MetricsResource
from strata_twisted.core.metrics import Metrics


def get(path: bytes, accept: str | None = None) -> tuple[DummyRequest, bytes]:
    metrics = Metrics()
    metrics.intake_message("accepted")
    metrics.relay_results("example.test", "delivered", 3)
    resource = MetricsResource(metrics.registry)
    request = DummyRequest(path.strip(b"/").split(b"/"))
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    body = resource.render(request)
    if body == NOT_DONE_YET:
        body = b"".join(request.written)
    assert isinstance(body, bytes)
    return request, body


def test_metrics_answers_in_prometheus_text_format() -> None:
    request, body = get(b"/metrics")
    content_type = request.responseHeaders.getRawHeaders(b"content-type")
    assert content_type is not None and content_type[0].startswith(b"text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("strata_intake_messages_total", (("result", "accepted"),))] == 1
    assert samples[("strata_intake_messages_total", (("result", "failed"),))] == 0
    key = ("strata_relay_deliveries_total", (("domain", "example.test"), ("result", "delivered")))
    assert samples[key] == 3
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def test_metrics_speaks_openmetrics_when_asked() -> None:
    request, body = get(b"/metrics", "application/openmetrics-text; version=1.0.0")
    content_type = request.responseHeaders.getRawHeaders(b"content-type")
    assert content_type is not None and content_type[0].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
