"""
The OpenAPI 3.1 document of the admin API, served at ``/api/v1/openapi.json``.

The paths and shapes are a contract outside clients rely on (#13): extend them, never rename
them.  Schemathesis checks every answer of the live server against this document in CI.
"""

from __future__ import annotations

from typing import Any, Final

from strata_twisted import __version__
from strata_twisted.core.admin.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from strata_twisted.core.admin.dashboard import MAX_HOURS
from strata_twisted.core.admin.domains import MAX_PROBES_IN_A_ROW, MAX_SECONDS
from strata_twisted.model import (
    DELIVERY_MODES,
    DOMAIN_STATES,
    PORTAL_POLICIES,
    ROLES,
    SCOPES,
    TLS_POLICIES,
)

QUEUE_STATES: Final = ("queued", "held", "delivered", "bounced", "deleted")
QUEUE_ACTIONS: Final = ("hold", "release", "retry", "delete", "bounce")

JsonSchema = dict[str, Any]


def _ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, JsonSchema], required: list[str] | None = None) -> JsonSchema:
    """An object schema, open: answers may gain fields (never breaking a client); inputs are
    closed below (L{_INPUTS})."""
    schema: JsonSchema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _page(key: str, item: str) -> JsonSchema:
    return _obj(
        {key: {"type": "array", "items": _ref(item)}, "next": _nullable({"type": "string"})},
        [key, "next"],
    )


def _list(key: str, item: str) -> JsonSchema:
    return _obj({key: {"type": "array", "items": _ref(item)}}, [key])


_STR: Final[JsonSchema] = {"type": "string"}
_NUM: Final[JsonSchema] = {"type": "number"}
_INT: Final[JsonSchema] = {"type": "integer"}
_BOOL: Final[JsonSchema] = {"type": "boolean"}
_NAME: Final[JsonSchema] = {
    "type": "string",
    "pattern": "^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$",
}
# A domain name in ASCII (A-label) form; the server takes U-labels (bücher.example) and any
# case too.  Described this narrowly so that generated requests reach the domain logic instead
# of stopping at the name check.
_LABEL_RE: Final = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_NAME: Final[JsonSchema] = {
    "type": "string",
    "pattern": f"^({_LABEL_RE}\\.)+[a-z]([a-z0-9-]{{0,61}}[a-z0-9])?$",
    "maxLength": 253,
}
_OCTET_RE: Final = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE: Final = f"({_OCTET_RE}\\.){{3}}{_OCTET_RE}"
# The primary: host[:port] (port 25 when left out; [v6]:port is accepted too).
_RELAY: Final[JsonSchema] = {
    "type": "string",
    "pattern": f"^({_IPV4_RE}|({_LABEL_RE}\\.)*[a-z]([a-z0-9-]{{0,61}}[a-z0-9])?)"
    "(:[1-9][0-9]{0,3})?$",
    "maxLength": 253,
}
_URL: Final[JsonSchema] = {"type": "string", "maxLength": 2048, "pattern": "^(https?://.*)?$"}
# Printable text (the server takes any printable Unicode; this is the part a pattern can say).
_TEXT: Final[JsonSchema] = {
    "type": "string",
    "maxLength": 2048,
    "pattern": "^[ -~\\u00a1-\\u00ac\\u00ae-\\u024f]*$",
}

# A reseller's host names (#14): unique across resellers, at most 20.
_HOSTNAMES: Final[JsonSchema] = {"type": "array", "items": _DOMAIN_NAME, "maxItems": 20}
# A logo: PNG, JPEG, GIF or WebP (recognised by its bytes), at most 256 KiB.
_IMAGE_TYPES: Final = ("image/png", "image/jpeg", "image/gif", "image/webp")
_IMAGE: Final[JsonSchema] = {"type": "string", "format": "binary"}

# A DKIM selector: labels of letters, digits and hyphens, separated by dots.
_LABEL: Final = "[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_SELECTOR: Final = rf"^{_LABEL}(\.{_LABEL})*$"

# What an admin may set on a domain, when adding it and when changing it.
_DOMAIN_SETTINGS: Final[dict[str, JsonSchema]] = {
    "mode": {"enum": list(DELIVERY_MODES)},
    "relay": _RELAY,
    "monitoring": _BOOL,
    "alert_emails": {"type": "array", "items": _STR},
    "tls_policy": {"enum": list(TLS_POLICIES)},
    "portal": {"enum": list(PORTAL_POLICIES)},
    "retention_days": _nullable({"type": "integer", "minimum": 1, "maximum": 36500}),
    "queue_lifetime": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS}),
    "hold_rejected": _BOOL,
    "accept_unknown": _BOOL,
    "probe_interval": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS}),
    "down_after": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_PROBES_IN_A_ROW}),
    "up_after": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_PROBES_IN_A_ROW}),
    "alert_webhook": _nullable(_STR),
    "alert_webhook_auth": _nullable(_STR),
}

SCHEMAS: Final[dict[str, JsonSchema]] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": _STR,
                    "message": _STR,
                    "field": _STR,
                    "details": {"type": "array", "items": _STR},
                },
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "Domain": _obj(
        {
            "name": _STR,
            "display_name": _STR,
            "customer": _nullable(_STR),
            "mode": {"enum": list(DELIVERY_MODES)},
            "relay": _STR,
            "monitoring": _BOOL,
            "alert_emails": {"type": "array", "items": _STR},
            "tls_policy": {"enum": list(TLS_POLICIES)},
            "portal": {"enum": list(PORTAL_POLICIES)},
            "retention_days": _nullable(_INT),
            "queue_lifetime": _nullable(_NUM),
            "hold_rejected": _BOOL,
            "accept_unknown": _BOOL,
            "health": _STR,
            "queue_depth": _INT,
            "held": _INT,
            "oldest_age_s": _nullable(_NUM),
            "portal_open": _BOOL,
            "created_at": _NUM,
            "updated_at": _NUM,
        },
        [
            "name",
            "customer",
            "mode",
            "relay",
            "monitoring",
            "alert_emails",
            "tls_policy",
            "portal",
            "retention_days",
            "queue_lifetime",
            "health",
            "queue_depth",
            "oldest_age_s",
            "portal_open",
        ],
    ),
    "DomainInput": _obj(
        {"name": _DOMAIN_NAME, "customer": _nullable(_STR), **_DOMAIN_SETTINGS},
        ["name", "relay"],
    ),
    "DomainUpdate": _obj(dict(_DOMAIN_SETTINGS)),
    "User": _obj({"address": _STR, "aliases": {"type": "array", "items": _STR}}, ["address"]),
    "UserInput": _obj(
        {"address": _STR, "password": _STR, "password_hash": _STR},
        ["address"],
    ),
    "UserListChange": _obj(
        {
            "users": _INT,
            "merged": _BOOL,
            "added": _INT,
            "updated": _INT,
            "removed": _INT,
            "unchanged": _INT,
        },
        ["users", "merged", "added", "updated", "removed", "unchanged"],
    ),
    "QueueEntry": _obj(
        {
            "id": _STR,
            "seq": _INT,
            "queue_id": _STR,
            "domain": _STR,
            "recipient": _STR,
            "sender": _STR,
            "message_id": _nullable(_STR),
            "size": _INT,
            "received_at": _NUM,
            "state": _STR,
            "attempts": _INT,
            "last_error": _nullable(_STR),
            "next_attempt_at": _NUM,
            "last_attempt_at": _nullable(_NUM),
            "delivered_at": _nullable(_NUM),
            "delivery_reply": _nullable(_STR),
            "outbound": _BOOL,
            "delay_notified_at": _nullable(_NUM),
        },
        ["id", "domain", "recipient", "sender", "size", "received_at", "state", "attempts"],
    ),
    "QueueEntryDetail": _obj(
        {
            "queue_id": _STR,
            "sender": _STR,
            "recipients": {"type": "array", "items": _STR},
            "client_address": _STR,
            "client_helo": _STR,
            "received_at": _NUM,
            "size": _INT,
            "message_id": _nullable(_STR),
            "entries": {"type": "array", "items": _ref("QueueEntry")},
            "headers": _STR,
        },
        ["queue_id", "sender", "recipients", "received_at", "size", "entries", "headers"],
    ),
    "QueueFilter": _obj(
        {
            "domain": _STR,
            "state": {"enum": list(QUEUE_STATES)},
            "sender": _STR,
            "recipient": _STR,
            "older_than": {"type": "number", "minimum": 0},
        }
    ),
    "QueueAction": {
        "type": "object",
        "properties": {
            "action": {"enum": list(QUEUE_ACTIONS)},
            "ids": {"type": "array", "items": _STR, "minItems": 1},
            "filter": _ref("QueueFilter"),
        },
        "required": ["action"],
        # Either the entries by id, or a filter that selects them; never both.
        "oneOf": [{"required": ["ids"]}, {"required": ["filter"]}],
        "additionalProperties": False,
    },
    "QueueActionResult": _obj(
        {
            "action": _STR,
            "changed": {"type": "array", "items": _STR},
            "skipped": {
                "type": "array",
                "items": _obj({"id": _STR, "state": _STR}, ["id", "state"]),
            },
            "dsns": {"type": "array", "items": {"type": "object"}},
            "flush_requested": {"type": "array", "items": _STR},
            "changed_count": _INT,
            "skipped_count": _INT,
        },
        ["action", "changed", "skipped", "changed_count", "skipped_count"],
    ),
    "Event": _obj(
        {
            "id": _INT,
            "at": _NUM,
            "kind": _STR,
            "domain": _nullable(_STR),
            "message": _STR,
            "data": {"type": "object"},
        },
        ["id", "at", "kind", "domain", "message", "data"],
    ),
    "AuditRecord": _obj(
        {
            "id": _INT,
            "at": _NUM,
            "actor": _STR,
            "via": _STR,
            "source": _STR,
            "action": _STR,
            "target": _STR,
            "reseller": _nullable(_STR),
            "customer": _nullable(_STR),
            "detail": {"type": "object"},
        },
        ["id", "at", "actor", "via", "source", "action", "target"],
    ),
    "Status": _obj(
        {
            "version": _STR,
            "time": _NUM,
            "domains": _INT,
            "messages": _nullable(_INT),
            "queued": _INT,
            "held": _INT,
            "queues": {"type": "array", "items": {"type": "object"}},
            "health": {"type": "array", "items": {"type": "object"}},
        },
        ["version", "time", "domains", "queued", "held"],
    ),
    # The Dashboard (#14): core/admin/dashboard.py.
    "DashboardOutage": _obj(
        {
            "id": _INT,
            "domain": _STR,
            "started_at": _NUM,
            "ended_at": _nullable(_NUM),
            "duration": _NUM,
            "reason": _STR,
        },
        ["id", "domain", "started_at", "duration"],
    ),
    "RelayActivity": _obj(
        {
            "delivered": _INT,
            "deferred": _INT,
            "held": _INT,
            "bounced": _INT,
            "last_delivered_at": _nullable(_NUM),
        },
        ["delivered", "deferred", "held", "bounced"],
    ),
    "DashboardDomain": _obj(
        {
            "name": _STR,
            "display_name": _STR,
            "customer": _nullable(_STR),
            "reseller": _nullable(_STR),
            "state": {"enum": list(DOMAIN_STATES)},
            "health": {"enum": ["unknown", "up", "down"]},
            "monitored": _BOOL,
            "queued": _INT,
            "held": _INT,
            "oldest_received_at": _nullable(_NUM),
            "oldest_age": _nullable(_NUM),
            "outage": _nullable(_ref("DashboardOutage")),
            "last_outage_ended_at": _nullable(_NUM),
            "drain_estimate": _nullable(_NUM),
            "delivered_recently": _INT,
            "activity_24h": _ref("RelayActivity"),
            "portal_open": _BOOL,
            "portal_reason": _STR,
        },
        [
            "name",
            "state",
            "queued",
            "held",
            "outage",
            "drain_estimate",
            "activity_24h",
            "portal_open",
        ],
    ),
    "Dashboard": _obj(
        {
            "generated_at": _NUM,
            "refresh_after": _INT,
            "totals": _obj(
                {
                    "domains": _INT,
                    "states": _obj({state: _INT for state in DOMAIN_STATES}),
                    "queued": _INT,
                    "held": _INT,
                    "outages": _INT,
                    "activity_24h": _ref("RelayActivity"),
                },
                ["domains", "states", "queued", "held", "outages", "activity_24h"],
            ),
            "outages": {"type": "array", "items": _ref("DashboardOutage")},
            "domains": {"type": "array", "items": _ref("DashboardDomain")},
        },
        ["generated_at", "refresh_after", "totals", "outages", "domains"],
    ),
    "DashboardSeries": _obj(
        {
            "since": _INT,
            "until": _INT,
            "step": _INT,
            "domain": _nullable(_STR),
            "depth": {
                "type": "array",
                "items": _obj({"at": _INT, "queued": _INT, "held": _INT}, ["at", "queued", "held"]),
            },
            "timeline": {
                "type": "array",
                "items": _obj(
                    {
                        "domain": _STR,
                        "spans": {
                            "type": "array",
                            "items": _obj(
                                {
                                    "start": _INT,
                                    "end": _INT,
                                    "state": {"enum": list(DOMAIN_STATES)},
                                },
                                ["start", "end", "state"],
                            ),
                        },
                    },
                    ["domain", "spans"],
                ),
            },
        },
        ["since", "until", "step", "depth", "timeline"],
    ),
    "Reseller": _obj(
        {
            "name": _STR,
            "created_at": _NUM,
            "product_name": _STR,
            "logo_url": _STR,
            "primary_color": _STR,
            "accent_color": _STR,
            "support_email": _STR,
            "support_url": _STR,
            "hostnames": {"type": "array", "items": _STR},
        },
        ["name"],
    ),
    "ResellerInput": _obj(
        {
            "name": _NAME,
            "product_name": _TEXT,
            "logo_url": _URL,
            "primary_color": _TEXT,
            "accent_color": _TEXT,
            "support_email": _TEXT,
            "support_url": _URL,
            "hostnames": _HOSTNAMES,
        },
        ["name"],
    ),
    "Branding": _obj(
        {
            "product_name": _TEXT,
            "logo_url": _URL,
            "primary_color": _TEXT,
            "accent_color": _TEXT,
            "support_email": _TEXT,
            "support_url": _URL,
            "hostnames": _HOSTNAMES,
        }
    ),
    # What anyone may see of a brand (the panel's and webmail's login pages show it).
    "BrandingView": _obj(
        {
            "product_name": _STR,
            "primary_color": _STR,
            "accent_color": _STR,
            "support_email": _STR,
            "support_url": _STR,
            "logo_url": _nullable(_STR),
            "has_logo": _BOOL,
        },
        ["product_name", "logo_url", "has_logo"],
    ),
    "OwnBranding": _obj({"branding": _nullable(_ref("BrandingView"))}, ["branding"]),
    "LogoStored": _obj({"content_type": _STR, "size": _INT}, ["content_type", "size"]),
    "FlushInput": _obj({"domain": _STR}),
    "FlushResult": _obj(
        {
            "domain": _nullable(_STR),
            "requests": {"type": "array", "items": _INT},
            "queued": _INT,
            "held": _INT,
        },
        ["domain", "requests", "queued", "held"],
    ),
    "Dkim": _obj(
        {
            "domain": _STR,
            "selector": _nullable(_STR),
            "algorithm": _nullable(_STR),
            "name": _nullable(_STR),
            "record": _nullable(_STR),
        },
        ["domain", "selector", "algorithm", "name", "record"],
    ),
    "DkimInput": _obj(
        {
            "selector": {
                "type": "string",
                "maxLength": 63,
                "pattern": _SELECTOR,
            },
            "algorithm": {"enum": ["rsa", "ed25519"]},
            "replace": _BOOL,
        }
    ),
    "PasswordInput": _obj(
        {"current_password": _STR, "new_password": _STR},
        ["current_password", "new_password"],
    ),
    "TotpEnrolment": _obj({"secret": _STR, "uri": _STR}, ["secret", "uri"]),
    "TotpConfirm": _obj({"secret": _STR, "code": _STR}, ["secret", "code"]),
    "TotpCode": _obj({"code": _STR}),
    "RecoveryCodes": _obj({"recovery_codes": {"type": "array", "items": _STR}}, ["recovery_codes"]),
    "Customer": _obj({"name": _STR, "reseller": _nullable(_STR), "created_at": _NUM}, ["name"]),
    "CustomerInput": _obj({"name": _NAME, "reseller": _nullable(_STR)}, ["name"]),
    "Admin": _obj(
        {
            "name": _STR,
            "role": {"enum": list(ROLES)},
            "reseller": _nullable(_STR),
            "customer": _nullable(_STR),
            "totp": _BOOL,
            "created_at": _NUM,
            "updated_at": _NUM,
        },
        ["name", "role"],
    ),
    "AdminInput": _obj(
        {
            "name": _NAME,
            "role": {"enum": list(ROLES)},
            "reseller": _nullable(_STR),
            "customer": _nullable(_STR),
            "password": {
                "type": "string",
                "minLength": MIN_PASSWORD_LENGTH,
                "maxLength": MAX_PASSWORD_LENGTH,
            },
        },
        ["name", "role", "password"],
    ),
    "ApiKey": _obj(
        {
            "id": _STR,
            "admin": _STR,
            "scope": {"enum": list(SCOPES)},
            "created_at": _NUM,
            "expires_at": _nullable(_NUM),
            "allow_ip": {"type": "array", "items": _STR},
            "last_used_at": _nullable(_NUM),
            "key": _STR,
        },
        ["id", "admin", "scope"],
    ),
    "ApiKeyInput": _obj(
        {
            "admin": _STR,
            "scope": {"enum": list(SCOPES)},
            "expires_days": _nullable({"type": "integer", "minimum": 1, "maximum": 3650}),
            "allow_ip": {"type": "array", "items": _STR},
        },
        ["admin", "scope"],
    ),
    "LoginInput": _obj(
        {"name": _STR, "password": _STR, "totp": _STR},
        ["name", "password"],
    ),
    "Session": _obj(
        {"admin": _STR, "role": {"enum": list(ROLES)}, "csrf_token": _STR},
        ["admin", "role", "csrf_token"],
    ),
}

# Request bodies: an unknown field is refused (400), as the server does: a typo must not be
# silently ignored.
_INPUTS: Final = (
    "DomainInput",
    "DomainUpdate",
    "UserInput",
    "QueueFilter",
    "QueueAction",
    "ResellerInput",
    "Branding",
    "CustomerInput",
    "AdminInput",
    "ApiKeyInput",
    "LoginInput",
    "FlushInput",
    "DkimInput",
    "PasswordInput",
    "TotpConfirm",
    "TotpCode",
)
for _name in _INPUTS:
    SCHEMAS[_name]["additionalProperties"] = False


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


_ERRORS: Final = {
    "400": _error("bad input (the field at fault is named)"),
    "401": _error("no valid credentials, or a key whose scope does not allow this"),
    "403": _error("a browser request without its CSRF token, or from another origin"),
    "404": _error("no such object, or none the caller may see"),
    "405": _error("method not allowed"),
    "409": _error("the name is taken, or the object is not in a state that allows this"),
    "413": _error("the body is too large"),
    "415": _error("the body is not JSON"),
    "503": _error("Strata cannot do it now (storage unavailable); try again"),
}


def _ok(schema: JsonSchema, status: str = "200", description: str = "success") -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: JsonSchema | None = None,
    params: list[dict[str, Any]] | None = None,
    security: bool = True,
    body_type: str = "application/json",
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {body_type: {"schema": body}}}
    if params:
        operation["parameters"] = params
    if not security:
        operation["security"] = []
    return operation


def _image(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": dict.fromkeys(_IMAGE_TYPES, {"schema": _IMAGE}),
        }
    }


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STR}


def _query(name: str, schema: JsonSchema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_PAGING: Final = [
    _query("cursor", {"type": "string", "pattern": "^[0-9]{0,18}$"}, "the next of the page before"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (100)"),
]


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    name = _path_param("name")
    domain = {**_path_param("name"), "schema": _DOMAIN_NAME}
    empty = {"204": {"description": "done"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Strata admin API",
            "version": __version__,
            "description": (
                "Manage protected domains, their users and queue, tenants, admin accounts and "
                "API keys.  Authenticate with `Authorization: Bearer KEY` (strata api-key "
                "create) or a session cookie from POST /api/v1/session, whose state-changing "
                "requests carry the session's token in an X-CSRF-Token header."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "strata_session"},
            },
        },
        "paths": {
            "/api/v1/session": {
                "get": _op("who is logged in", _ok(_ref("Session"))),
                "post": _op(
                    "log in (password, then TOTP when set): sets the session cookie",
                    _ok(_ref("Session")),
                    body=_ref("LoginInput"),
                    security=False,
                ),
                "delete": _op("log out", empty),
            },
            "/api/v1/domains": {
                "get": _op("domains the caller may see", _ok(_list("domains", "Domain"))),
                "post": _op(
                    "protect a domain", _ok(_ref("Domain"), "201"), body=_ref("DomainInput")
                ),
            },
            "/api/v1/domains/{name}": {
                "parameters": [domain],
                "get": _op("one domain", _ok(_ref("Domain"))),
                "patch": _op("change a domain", _ok(_ref("Domain")), body=_ref("DomainUpdate")),
                "delete": _op("stop protecting a domain (its queued mail stays)", empty),
            },
            "/api/v1/domains/{name}/users": {
                "parameters": [domain],
                "get": _op("a domain's synced users", _ok(_list("users", "User"))),
                "post": _op("add a user", _ok(_ref("User"), "201"), body=_ref("UserInput")),
                "put": _op(
                    "replace (or with merge=true, merge) the user list with a Dovecot passwd-file",
                    _ok(_ref("UserListChange")),
                    body={"type": "string"},
                    body_type="text/plain",
                    params=[_query("merge", {"type": "boolean"}, "merge instead of replacing")],
                ),
            },
            "/api/v1/domains/{name}/users/{address}": {
                "parameters": [domain, _path_param("address")],
                "delete": _op("remove a user", empty),
            },
            "/api/v1/queue": {
                "get": _op(
                    "queue entries in arrival order, one page at a time",
                    _ok(_page("entries", "QueueEntry")),
                    params=[
                        _query("domain", _STR, "only this domain's"),
                        _query("state", {"enum": list(QUEUE_STATES)}, "only in this state"),
                        _query("sender", _STR, "sender contains this (any case)"),
                        _query("recipient", _STR, "recipient contains this (any case)"),
                        _query(
                            "older_than", {"type": "number", "minimum": 0}, "received > N s ago"
                        ),
                        *_PAGING,
                    ],
                ),
            },
            "/api/v1/queue/flush": {
                "post": _op(
                    "deliver a domain's queue (or everything the caller sees) now",
                    _ok(_ref("FlushResult")),
                    body=_ref("FlushInput"),
                ),
            },
            "/api/v1/domains/{name}/dkim": {
                "parameters": [name],
                "get": _op("the domain's signing key and its TXT record", _ok(_ref("Dkim"))),
                "post": _op(
                    "make a new signing key (it signs from now on)",
                    _ok(_ref("Dkim"), "201"),
                    body=_ref("DkimInput"),
                ),
            },
            "/api/v1/session/password": {
                "post": _op(
                    "change one's own password (every session of the account ends)",
                    empty,
                    body=_ref("PasswordInput"),
                ),
            },
            "/api/v1/session/totp": {
                "post": _op(
                    "begin TOTP enrolment: a secret and its otpauth URI", _ok(_ref("TotpEnrolment"))
                ),
            },
            "/api/v1/session/totp/confirm": {
                "post": _op(
                    "turn TOTP on with a code from the app: ten recovery codes, shown once",
                    _ok(_ref("RecoveryCodes")),
                    body=_ref("TotpConfirm"),
                ),
            },
            "/api/v1/session/totp/disable": {
                "post": _op(
                    "turn TOTP off (a code or a recovery code)", empty, body=_ref("TotpCode")
                ),
            },
            "/api/v1/queue/{id}": {
                "parameters": [_path_param("id")],
                "get": _op("one entry, with its message's headers", _ok(_ref("QueueEntryDetail"))),
            },
            "/api/v1/queue/actions": {
                "post": _op(
                    "hold, release, retry, delete or bounce entries by id or by filter (no cap)",
                    _ok(_ref("QueueActionResult")),
                    body=_ref("QueueAction"),
                ),
            },
            "/api/v1/events": {
                "get": _op(
                    "outage, relay and admin events, newest first",
                    _ok(_page("events", "Event")),
                    params=[
                        _query("domain", _STR, "only this domain's"),
                        _query(
                            "kind", _STR, "this kind, or kinds starting with it if it ends in ."
                        ),
                        _query(
                            "since", {"type": "number", "minimum": 0}, "at or after (Unix time)"
                        ),
                        *_PAGING,
                    ],
                ),
            },
            "/api/v1/status": {"get": _op("the installation at a glance", _ok(_ref("Status")))},
            "/api/v1/dashboard": {
                "get": _op(
                    "every domain the caller sees with its state, queue, outage, drain estimate "
                    "and last 24 hours of relay activity; the active outages; totals (poll it: "
                    "refresh_after says how soon)",
                    _ok(_ref("Dashboard")),
                ),
            },
            "/api/v1/dashboard/series": {
                "get": _op(
                    "the charts: queue depth over time and each domain's state timeline",
                    _ok(_ref("DashboardSeries")),
                    params=[
                        _query(
                            "hours",
                            {"type": "integer", "minimum": 1, "maximum": MAX_HOURS},
                            "how far back (24)",
                        ),
                        _query("domain", _STR, "only this domain's"),
                    ],
                ),
            },
            "/api/v1/audit": {
                "get": _op(
                    "the audit log, newest first",
                    _ok(_page("records", "AuditRecord")),
                    params=list(_PAGING),
                ),
            },
            "/api/v1/resellers": {
                "get": _op("resellers", _ok(_list("resellers", "Reseller"))),
                "post": _op(
                    "add a reseller", _ok(_ref("Reseller"), "201"), body=_ref("ResellerInput")
                ),
            },
            "/api/v1/resellers/{name}": {
                "parameters": [name],
                "get": _op("one reseller", _ok(_ref("Reseller"))),
                "patch": _op(
                    "change a reseller's branding", _ok(_ref("Reseller")), body=_ref("Branding")
                ),
                "delete": _op("remove a reseller with nothing under it", empty),
            },
            "/api/v1/resellers/{name}/logo": {
                "parameters": [name],
                "get": _op("the reseller's uploaded logo", _image("the image")),
                "put": {
                    **_op(
                        "upload the reseller's logo: PNG, JPEG, GIF or WebP, at most 256 KiB "
                        "(SVG is refused); the operator, or the reseller's own admin",
                        _ok(_ref("LogoStored")),
                    ),
                    "requestBody": {
                        "required": True,
                        "content": dict.fromkeys(_IMAGE_TYPES, {"schema": _IMAGE}),
                    },
                },
                "delete": _op("remove the reseller's uploaded logo", empty),
            },
            "/api/v1/branding": {
                "get": _op(
                    "the brand the caller's pages show (null: Strata's own)",
                    _ok(_ref("OwnBranding")),
                ),
            },
            "/api/v1/branding/logo": {
                "get": _op(
                    "the uploaded logo of the brand the caller's pages show", _image("the image")
                ),
            },
            "/api/v1/customers": {
                "get": _op("customers", _ok(_list("customers", "Customer"))),
                "post": _op(
                    "add a customer", _ok(_ref("Customer"), "201"), body=_ref("CustomerInput")
                ),
            },
            "/api/v1/customers/{name}": {
                "parameters": [name],
                "get": _op("one customer", _ok(_ref("Customer"))),
                "delete": _op("remove a customer with nothing under it", empty),
            },
            "/api/v1/admins": {
                "get": _op("admin accounts", _ok(_list("admins", "Admin"))),
                "post": _op(
                    "add an admin account", _ok(_ref("Admin"), "201"), body=_ref("AdminInput")
                ),
            },
            "/api/v1/admins/{name}": {
                "parameters": [name],
                "get": _op("one admin account", _ok(_ref("Admin"))),
                "delete": _op("remove an admin account and its keys", empty),
            },
            "/api/v1/api-keys": {
                "get": _op("API keys", _ok(_list("api_keys", "ApiKey"))),
                "post": _op(
                    "create a key: the answer carries it once, as key",
                    _ok(_ref("ApiKey"), "201"),
                    body=_ref("ApiKeyInput"),
                ),
                "delete": _op(
                    "revoke a key",
                    empty,
                    params=[{"name": "id", "in": "query", "required": True, "schema": _STR}],
                ),
            },
            "/api/v1/api-keys/{id}": {
                "parameters": [_path_param("id")],
                "delete": _op("revoke a key", empty),
            },
        },
    }
