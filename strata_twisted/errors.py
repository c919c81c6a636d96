"""
Errors that carry their protocol meaning.

Every error a client can see has an SMTP code, an enhanced status code (RFC 3463) and a public text;
the detail that helps an operator goes to the log, never to the client.  Our own failures (disk
full,
database error) are always temporary (4xx): a sender that gets 4xx tries again, one that gets 5xx
bounces the mail, and a bounce caused by our storage would lose mail we could have kept.
"""

from __future__ import annotations


class StrataError(Exception):
    """Base class for every error Strata raises on purpose."""


class MailError(StrataError):
    """An error with an SMTP reply: code, enhanced code and a public text."""

    code: int = 451
    enhanced: str = "4.3.0"
    public_text: str = "Error: internal error, try again later"

    def __init__(
        self,
        detail: str = "",
        *,
        code: int | None = None,
        enhanced: str | None = None,
        public_text: str | None = None,
    ) -> None:
        super().__init__(detail or public_text or self.public_text)
        if code is not None:
            self.code = code
        if enhanced is not None:
            self.enhanced = enhanced
        if public_text is not None:
            self.public_text = public_text
        self.detail = detail

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


class RelayDenied(MailError):
    """RCPT for a domain Strata does not protect: we are not an open relay."""

    code = 550
    enhanced = "5.7.1"
    public_text = "Relay access denied"


class UnknownUser(MailError):
    """RCPT of an address that is not on its domain's synced user list (Postfix's wording)."""

    code = 550
    enhanced = "5.1.1"
    public_text = "Recipient address rejected: User unknown"


class StorageError(MailError):
    """Our storage failed (database error, I/O error).  Always 451 4.3.0: the sender retries."""

    code = 451
    enhanced = "4.3.0"
    public_text = "Error: queue file write error, try again later"


class InsufficientStorage(StorageError):
    """The data directory is full.  452 4.3.1 (RFC 3463: mail system full)."""

    code = 452
    enhanced = "4.3.1"
    public_text = "Insufficient system storage, try again later"


class ConfigError(StrataError):
    """An invalid configuration value; ``key`` names the setting (``intake.max_recipients``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class DomainError(StrataError):
    """Base for admin errors about protected domains."""


class InvalidDomainName(DomainError):
    """The name is not a valid (IDNA) domain name."""


class DomainExists(DomainError):
    """The domain is already protected."""


class NoSuchDomain(DomainError):
    """The domain is not protected."""


class NoSuchEntry(StrataError):
    """No queue entry or message has this id."""


class QueueStateError(StrataError):
    """A queue entry is not in a state that allows this change (e.g. releasing a delivered one)."""


class NotFound(StrataError):
    """
    No such object, or none the caller may see (another tenant's objects are "not found", never
    "forbidden": #13).  ``kind`` names what was looked up ("domain", "reseller", "entry", ...).
    """

    def __init__(self, kind: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"no {kind} {name!r}")
        self.kind = kind
        self.name = name


class AlreadyExists(StrataError):
    """An object with this name exists already (a reseller, customer, admin account, key)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} exists already")
        self.kind = kind
        self.name = name
