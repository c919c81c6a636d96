"""
Delivery status notifications (RFC 3464) for mail the relay could not deliver.

A DSN is a ``multipart/report; report-type=delivery-status`` message from the null sender
(RFC 5321 §4.5.5: so that it never causes another DSN) to the original envelope sender, with a
human explanation, one machine-readable block per failed recipient, and the original headers
(``text/rfc822-headers``, not the body: the sender has it, and it may be large).  Built with the
stdlib ``email`` package.  This module only builds bytes; the relay queues them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime

from strata_twisted.model import QueueEntry, StoredMessage, parse_host_port

_ENHANCED = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient the DSN reports on."""

    entry: QueueEntry
    diagnostic: str  # the primary's reply ("550 5.1.1 <u@x>: user unknown") or our reason
    status: str  # RFC 3463 code, e.g. "5.1.1"
    remote_mta: str | None = None  # the host that answered, when one did


def status_of(reply: str, default: str = "5.0.0") -> str:
    """The enhanced status code of an SMTP reply (RFC 3463), or ``default`` when it has none."""
    match = _ENHANCED.match(reply.strip())
    return match.group(1) if match else default


def _mta_name(remote: str) -> str:
    """The host of "host:port" (RFC 3464 §2.3.5: a dns-type MTA name is a host name)."""
    try:
        return parse_host_port(remote, 25)[0]
    except ValueError:
        return remote


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, tz=UTC))


def build_dsn(
    *,
    reporting_mta: str,
    message: StoredMessage,
    headers: bytes,
    failed: list[FailedRecipient],
    when: float,
    dsn_message_id: str,
    action: str = "failed",
) -> bytes:
    """
    The DSN for ``failed`` recipients of ``message``, as CRLF-terminated bytes.  ``action``
    "delayed" makes it a delay notice (RFC 3464 §2.3.3): the mail is still being retried.
    """
    sender = message.envelope.sender
    delayed = action == "delayed"
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if delayed:
        lines += [
            "Your message could not be delivered yet to one or more recipients.",
            "It is still queued, and delivery will be tried again; you do not need",
            "to send it again.",
            "",
        ]
    else:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients.",
            "",
        ]
    for f in failed:
        lines.append(f"<{f.entry.recipient}>: {f.diagnostic}")
    human = MIMEText("\r\n".join(lines) + "\r\n", "plain", "us-ascii")
    human["Content-Description"] = "Notification"

    status = MIMEBase("message", "delivery-status")
    status["Content-Description"] = "Delivery report"
    # RFC 3464 §2.1: one block of per-message fields, then one block per recipient.  The email
    # package writes a delivery-status payload as a list of header-only messages.
    status.attach(_fields([
        ("Reporting-MTA", f"dns; {reporting_mta}"),
        ("X-Strata-Queue-ID", message.id),
        ("Arrival-Date", _date(message.received_at)),
    ]))  # fmt: skip
    for f in failed:
        fields = [
            ("Final-Recipient", f"rfc822; {f.entry.recipient}"),
            ("Action", "delayed" if delayed else "failed"),
            ("Status", f.status),
        ]
        if f.remote_mta:
            fields.append(("Remote-MTA", f"dns; {_mta_name(f.remote_mta)}"))
        fields.append(("Diagnostic-Code", "smtp; " + " ".join(f.diagnostic.split())))
        if f.entry.last_attempt_at:
            fields.append(("Last-Attempt-Date", _date(f.entry.last_attempt_at)))
        status.attach(_fields(fields))

    original = MIMEBase("text", "rfc822-headers")
    original.set_payload(headers.decode("ascii", "replace").replace("\r\n", "\n"))
    original["Content-Description"] = "Undelivered Message Headers"

    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = f"<{sender}>"
    report["Subject"] = (
        "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    )
    report["Date"] = _date(when)
    report["Message-ID"] = f"<{dsn_message_id}@{reporting_mta}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834
    report.attach(human)
    report.attach(status)
    report.attach(original)
    return _to_crlf(report)


def _fields(fields: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in fields:
        block[name] = value
    return block


def _to_crlf(message: Message) -> bytes:
    data = message.as_bytes()
    return re.sub(rb"\r?\n", b"\r\n", data)
