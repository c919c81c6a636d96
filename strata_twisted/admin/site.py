"""
The admin web site (#13, #14): the JSON API under ``/api/``, ``/metrics`` and the public
branding lookup (``/branding``, for Roundcube), the panel everywhere else, on one listener with
one set of sessions.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

_API_PATHS = frozenset((b"/api", b"/metrics", b"/branding", b"/branding/logo"))


class AdminSite(Resource):
    """Hands each request, whole, to the API's or the panel's Klein resource by its path (both
    route on the full path, so neither sees a shortened one)."""

    isLeaf = True

    def __init__(self, api: IResource, panel: IResource) -> None:
        Resource.__init__(self)
        self.api = api
        self.panel = panel

    def render(self, request: IRequest) -> Any:
        path = request.path
        if path.startswith(b"/api/") or path in _API_PATHS:
            return self.api.render(request)
        return self.panel.render(request)
