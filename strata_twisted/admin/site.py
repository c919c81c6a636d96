# -*- test-case-name: tests.test_admin_metrics -*-
"""
The admin listener's root resource: one place that says what is served where.

For now only ``/metrics``; the JSON API (a Klein app) replaces this root, keeping ``metrics`` as
a child, so ``service.py`` calls L{build_root} and knows nothing of the routes.
"""

from __future__ import annotations

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request


class _Root(Resource):
    """Its children, and 404 for anything else (Twisted's default 404 page is deprecated)."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def build_root(metrics_resource: IResource) -> Resource:
    """The root: ``/metrics`` is ``metrics_resource``; anything else is 404."""
    root = _Root()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", metrics_resource)
    return root
