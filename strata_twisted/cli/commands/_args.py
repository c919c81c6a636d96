"""Argument values the CLI takes as text, turned into what the operations take."""

from __future__ import annotations

from strata_twisted.cli.context import UsageError
from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.errors import InvalidInput

# Options by the field name the operations report (InvalidInput.field).
_OPTIONS = {
    "relay": "--relay",
    "mode": "--mode",
    "tls_policy": "--tls-policy",
    "queue_lifetime": "--queue-lifetime",
    "probe_interval": "--probe-interval",
    "down_after": "--down-after",
    "up_after": "--up-after",
    "portal": "--portal",
    "retention_days": "--retention-days",
    "alert_email": "--alert-email",
    "alert_webhook": "--alert-webhook",
    "alert_webhook_auth": "--alert-webhook-auth",
    "selector": "--selector",
    "limit": "--limit",
    "customer": "--customer",
    "reseller": "--reseller",
    "scheme": "--scheme",
}
_CLEARABLE = ("alert_email", "alert_webhook", "alert_webhook_auth")


def invalid_text(error: InvalidInput) -> str:
    """An operation's L{InvalidInput}, said in the CLI's terms (the option it came from)."""
    option = _OPTIONS.get(error.field)
    text = f"{option}: {error.message}" if option else error.message
    if error.field in _CLEARABLE:
        text += ' ("" to remove it)'
    return text


def usage(error: InvalidInput) -> UsageError:
    return UsageError(invalid_text(error))


def domain_arg(text: str) -> str:
    """A domain name argument in canonical form, or a usage error."""
    try:
        return domain_name(text)
    except InvalidInput as e:
        raise usage(e) from None
