# -*- test-case-name: tests.test_admin_metrics -*-
"""
``/metrics``: the Prometheus exposition of one L{CollectorRegistry}.

prometheus-client ships ``prometheus_client.twisted.MetricsResource``, but it imports the global
reactor and runs each scrape as WSGI in the reactor's thread pool.  Strata never imports the
global reactor (DESIGN decision 5), and a scrape needs no thread: the store's gauges come from a
snapshot in memory (L{strata_twisted.core.metrics.StoreGauges}), so collecting is a few
microseconds of Python.  This resource renders on the reactor thread instead, and answers in
the format the scraper asks for (Prometheus text, or OpenMetrics).

Not yet authenticated: it is open to whoever reaches the admin listener (loopback by default).
The admin API's authentication (#13) must cover it before the listener is exposed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request


class MetricsResource(Resource):
    """GET: every metric in ``registry``, in the encoding the ``Accept`` header asks for."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept or "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encoder(self._registry)
