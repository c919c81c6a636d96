"""
Rules every storage backend applies when intake fills shadow mailboxes, kept in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, TypeAlias

from twisted.logger import Logger

from strata_twisted.model import IncomingMessage, InvalidUser, normalize_user

_log = Logger()

Indexer: TypeAlias = Callable[[BinaryIO, int], bytes]
"""
Computes the MIME index kept beside a message with shadow copies, from its body stream and size
(C{strata_twisted.proto.mime.index_bytes} in the server).  Storage never imports the protocol
layer: the composition root hands the indexer in, and a store without one keeps no index (the
IMAP layer indexes on demand).
"""


def shadow_owners(incoming: IncomingMessage) -> list[str]:
    """
    The canonical users whose INBOX gets this message (mode ``both``), each once.  A recipient
    that is not a mailbox user (L{InvalidUser}) keeps its queue entry and shadow-copy record but
    gets no mailbox: that must never fail intake.
    """
    owners: list[str] = []
    for delivery in incoming.deliveries:
        if not delivery.shadow:
            continue
        try:
            owner = normalize_user(delivery.recipient)
        except InvalidUser:
            _log.warn("No shadow mailbox for {recipient!r}", recipient=delivery.recipient)
            continue
        if owner not in owners:
            owners.append(owner)
    return owners
