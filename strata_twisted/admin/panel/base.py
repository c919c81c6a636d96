"""
The admin panel's plumbing (#14): one Klein app shared by every page module, Jinja2 with
autoescaping, the session check, the form CSRF check, notices after a redirect, and the error
pages.

Every page module subclasses L{PanelBase} and adds routes to the same ``app``; the panel is the
class that inherits them all (L{strata_twisted.admin.panel.Panel}).  A page handler receives a
L{Page}: the request, the logged-in caller and what every template needs.  Pages are HTML
forms that work without JavaScript: a POST that changes state carries the session's CSRF token
in a hidden ``csrf`` field and must come from this site (``Origin``, ``Sec-Fetch-Site``), and
answers with a redirect (303) to the page that shows the result, so a reload never repeats it.
Every action goes through L{strata_twisted.core.admin}, which checks tenancy and scope: the
panel decides nothing about who may do what, it only hides links a role cannot use.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from strata_twisted.admin.http import (
    SESSION_COOKIE,
    as_api_error,
    client_ip,
    same_origin,
    set_cookie,
)
from strata_twisted.core.admin import branding
from strata_twisted.core.admin.auth import (
    AdminLogin,
    Passwords,
    PendingLogins,
    Session,
    SessionStore,
    check_csrf,
)
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.branding import BrandingView

# A form posted to a page is at most this large (a passwd-file or a logo rides in one).
MAX_FORM_BODY: Final = 4 * 1024 * 1024
# Notices waiting for the next page, per session; a few at most.
_MAX_NOTICES: Final = 8

# Why a portal is open or closed, for people (core/portal.py's reasons).
PORTAL_REASONS: Final = {
    "outage": "an outage is open",
    "grace": "grace period after an outage",
    "always": "policy: always open",
    "drill": "open for a drill",
    "primary_up": "the primary is up",
    "off": "policy: never open",
    "unprotected": "not protected",
    "unavailable": "cannot tell right now",
}

# No script, style or image from anywhere but this site; no framing; forms post only here.
CONTENT_SECURITY_POLICY: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Body: TypeAlias = bytes
PageHandler: TypeAlias = Callable[..., Awaitable[Body]]

log = Logger()


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site (``/queue?...``), else ``default``: a login's
    ``next`` never sends the browser elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 0x21 for c in target):
        return default
    return target


def url(path: str, **query: object) -> str:
    """``path`` with the query arguments that have a value."""
    kept = {k: str(v) for k, v in query.items() if v not in (None, "", False)}
    return f"{path}?{urlencode(kept)}" if kept else path


class FormError(Exception):
    """Errors to show beside the form's fields (field name → sentence); nothing was saved."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = dict(errors)


def field_errors(error: BaseException, default_field: str = "") -> dict[str, str]:
    """The message of an operation's error, keyed by the form field it names."""
    api = as_api_error(error)
    name = api.field or default_field
    text = api.message
    if api.details:
        text += ": " + "; ".join(api.details[:20])
    return {name: text}


@dataclass(frozen=True)
class Brand:
    """What the panel shows of a reseller's branding (Strata's own look by default).  Colours
    are checked again where they reach CSS (L{theme_css})."""

    product: str = "Strata"
    logo: str | None = None  # a URL on this site
    primary: str = ""
    accent: str = ""
    support_email: str = ""
    support_url: str = ""


DEFAULT_BRAND: Final = Brand()


_WEB: Final = ("https://", "http://")


def _brand(view: BrandingView | None, logo_route: str) -> Brand:
    """The panel's L{Brand} from core's public view of a reseller's brand."""
    if view is None:
        return DEFAULT_BRAND
    logo = view.as_json(uploaded_logo_url=logo_route)["logo_url"]
    return Brand(
        product=view.product_name or DEFAULT_BRAND.product,
        logo=logo if isinstance(logo, str) and logo.startswith(("/", "https://")) else None,
        primary=view.primary_color,
        accent=view.accent_color,
        support_email=view.support_email,
        support_url=view.support_url
        if view.support_url.startswith(("https://", "http://"))
        else "",
    )


_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}")


def theme_css(brand: Brand) -> bytes:
    """The brand's colours as CSS custom properties (only ``#hex`` values get through)."""
    rules = []
    if _COLOUR.fullmatch(brand.primary):
        rules.append(f"--primary: {brand.primary};")
    if _COLOUR.fullmatch(brand.accent):
        rules.append(f"--accent: {brand.accent};")
    return (":root { " + " ".join(rules) + " }\n").encode("ascii")


@dataclass
class Page:
    """One request to a page, after the session check."""

    panel: PanelBase
    request: IRequest
    session: Session
    session_id: str
    caller: Caller
    brand: Brand = DEFAULT_BRAND
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ctx(self) -> AdminContext:
        return self.panel.ctx

    def arg(self, name: str, default: str = "") -> str:
        """A query-string or form value, decoded; ``default`` when absent."""
        values: list[bytes] = self.request.args.get(name.encode("ascii")) or []
        return values[0].decode("utf-8", "replace") if values else default

    def args(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.request.args.get(name.encode(), [])]

    def checked(self, name: str) -> bool:
        return self.arg(name) in ("on", "1", "true", "yes")

    def upload(self, name: str) -> bytes:
        """A file field's content (empty when none was chosen)."""
        values = self.request.args.get(name.encode("ascii"))
        return values[0] if values else b""

    def notice(self, text: str, kind: str = "ok") -> None:
        """Show ``text`` on the next page this session sees (after the redirect)."""
        self.panel.add_notice(self.session_id, kind, text)

    def redirect(self, location: str) -> Body:
        self.request.setResponseCode(303)
        self.request.setHeader(b"location", local_path(location).encode("utf-8"))
        return b""

    def render(self, template: str, status: int = 200, **values: Any) -> Body:
        return self.panel.render(self.request, template, status, page=self, **values)


class PanelBase:
    """The shared Klein app and what every page needs; see the module's docstring."""

    app = Klein()

    def __init__(
        self,
        ctx: AdminContext,
        sessions: SessionStore,
        login: AdminLogin,
        passwords: Passwords,
        *,
        secure: bool,
        pending: PendingLogins | None = None,
    ) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.login = login
        self.passwords = passwords
        self.secure = secure
        self.pending = pending if pending is not None else PendingLogins(ctx.clock)
        self.templates = Environment(
            loader=PackageLoader("strata_twisted.admin", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals["url"] = url
        self.templates.globals["portal_reasons"] = PORTAL_REASONS
        self.templates.filters["age"] = format_age
        self.templates.filters["when"] = self.format_time
        self._notices: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._static = load_static()

    def resource(self) -> Any:
        return self.app.resource()

    # -- rendering

    def format_time(self, value: float | None) -> str:
        return format_time(value)

    def secure_headers(self, request: IRequest) -> None:
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"cache-control", b"no-store")

    def render(
        self,
        request: IRequest,
        template: str,
        status: int = 200,
        *,
        page: Page | None = None,
        brand: Brand | None = None,
        **values: Any,
    ) -> Body:
        request.setResponseCode(status)
        self.secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        text = self.templates.get_template(template).render(
            caller=page.caller if page is not None else None,
            csrf=page.session.csrf_token if page is not None else "",
            notices=page.notices if page is not None else [],
            path=request.path.decode("utf-8", "replace"),
            brand=brand or (page.brand if page is not None else DEFAULT_BRAND),
            now=self.ctx.clock.seconds(),
            **values,
        )
        return text.encode("utf-8")

    # -- branding

    async def brand_for(self, caller: Caller) -> Brand:
        """The branding a logged-in admin sees: its reseller's (a customer admin's customer's
        reseller's); Strata's own for the operator and the operator's customers."""
        view = await branding.branding_for(self.ctx, caller)
        return _brand(view, "/api/v1/branding/logo")

    async def brand_for_host(self, request: IRequest) -> Brand:
        """The branding of the host name the panel is served under (before login)."""
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        view = await branding.branding_for_host(self.ctx, host)
        return _brand(view, url("/branding/logo", host=branding.host_name(host) or ""))

    # -- notices

    def add_notice(self, session_id: str, kind: str, text: str) -> None:
        notices = self._notices.setdefault(session_id, [])
        self._notices.move_to_end(session_id)
        notices.append((kind, text))
        del notices[:-_MAX_NOTICES]
        while len(self._notices) > self.sessions.max_sessions:
            self._notices.popitem(last=False)

    def take_notices(self, session_id: str) -> list[tuple[str, str]]:
        return self._notices.pop(session_id, [])

    # -- sessions

    async def page_for(self, request: IRequest) -> Page | None:
        cookie = request.getCookie(SESSION_COOKIE)
        if not cookie:
            return None
        session_id = cookie.decode("latin-1")
        session = await self.sessions.resolve(self.ctx, session_id)
        if session is None:
            return None
        caller = replace(session.caller, source=client_ip(request))
        return Page(self, request, session, session_id, caller, await self.brand_for(caller))

    def to_login(self, request: IRequest) -> Body:
        """Redirect to the login page, coming back here after it (a GET only)."""
        back = request.uri.decode("utf-8", "replace") if request.method == b"GET" else "/"
        request.setResponseCode(303)
        request.setHeader(b"location", url("/login", next=local_path(back)).encode("utf-8"))
        return b""

    def set_cookie(
        self,
        request: IRequest,
        name: bytes,
        value: str,
        *,
        path: bytes = b"/",
        expire: bool = False,
    ) -> None:
        set_cookie(request, name, value, secure=self.secure, path=path, expire=expire)

    # -- running handlers

    async def show(self, request: IRequest, handler: PageHandler, **kwargs: Any) -> Body:
        """A GET page: log in first, then ``handler(page, **kwargs)``; errors become pages."""
        page = await self.page_for(request)
        if page is None:
            return self.to_login(request)
        page.notices = self.take_notices(page.session_id)
        try:
            return await handler(page, **kwargs)
        except Exception as e:  # noqa: BLE001 - every error becomes a page
            return self.error_page(request, e, page)

    async def act(self, request: IRequest, handler: PageHandler, **kwargs: Any) -> Body:
        """A POST from one of our forms: the session, the CSRF token and the origin, then
        ``handler(page, **kwargs)``.  A refused form changes nothing."""
        page = await self.page_for(request)
        if page is None:
            if not same_origin(request, self.secure):
                return self.refused(request)
            return self.to_login(request)
        if not same_origin(request, self.secure):
            return self.refused(request, page)
        if not self.form_size_ok(request):
            return self.error_page(
                request, InvalidInput("", "the form is too large (at most 4 MiB)"), page, 413
            )
        if not check_csrf(page.session, page.arg("csrf") or None):
            return self.refused(request, page)
        try:
            return await handler(page, **kwargs)
        except Exception as e:  # noqa: BLE001
            return self.error_page(request, e, page)

    def form_size_ok(self, request: IRequest) -> bool:
        content = request.content
        if content is None:
            return True
        here: int = content.tell()
        size: int = content.seek(0, 2)
        content.seek(here)
        return size <= MAX_FORM_BODY

    def refused(self, request: IRequest, page: Page | None = None) -> Body:
        log.info(
            "admin panel refused a form to {path} from {client}: another site, or no CSRF token",
            path=request.path.decode("ascii", "replace"),
            client=client_ip(request),
        )
        return self.render(
            request,
            "error.html",
            403,
            page=page,
            title="Refused",
            message="This form did not come from this panel (another site, or an old page). "
            "Nothing was changed. Reload the page and try again.",
        )

    def error_page(
        self, request: IRequest, error: BaseException, page: Page | None, status: int = 0
    ) -> Body:
        api = as_api_error(error)
        if api.status >= 500:
            log.failure(
                "admin panel {method} {path} failed",
                Failure(error),
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("ascii", "replace"),
            )
        titles = {404: "Not found", 401: "Not allowed", 409: "Conflict", 503: "Unavailable"}
        code = status or (403 if api.status == 401 else api.status)
        message = api.message
        if api.details:
            message += ": " + "; ".join(api.details[:20])
        return self.render(
            request,
            "error.html",
            code,
            page=page,
            title=titles.get(api.status, "Error"),
            message=message,
        )

    # -- fixed routes

    @app.route("/static/<string:name>", methods=["GET"])
    def static(self, request: IRequest, name: str) -> Body:
        found = self._static.get(name)
        if found is None:
            return self.render(
                request, "error.html", 404, title="Not found", message="There is no such file."
            )
        content, content_type = found
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"public, max-age=3600")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return content

    @app.route("/theme.css", methods=["GET"])
    async def theme(self, request: IRequest) -> Body:
        page = await self.page_for(request)
        brand = page.brand if page is not None else await self.brand_for_host(request)
        request.setHeader(b"content-type", b"text/css; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return theme_css(brand)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> Body:
        return self.render(
            request, "error.html", 404, title="Not found", message="There is no such page."
        )

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> Body:
        return self.render(
            request, "error.html", 405, title="Not allowed", message="Method not allowed."
        )


_STATIC_TYPES: Final = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}


def load_static() -> dict[str, tuple[bytes, bytes]]:
    """The panel's CSS, script and images, read once (a few KiB): name → (bytes, type).  Only
    these names are served; nothing is read from disk per request."""
    files: dict[str, tuple[bytes, bytes]] = {}
    for item in (resources.files("strata_twisted.admin") / "static").iterdir():
        content_type = _STATIC_TYPES.get(Path(item.name).suffix)
        if content_type is not None and item.is_file():
            files[item.name] = (item.read_bytes(), content_type)
    return files


def format_time(value: float | None) -> str:
    """A moment for people, in UTC (the server's clock; admins sit in many time zones)."""
    if value is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))


def format_age(seconds: float | None) -> str:
    """A duration for people: ``42 s``, ``7 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"
