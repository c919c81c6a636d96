# -*- test-case-name: tests.test_core_signing -*-
"""
DKIM signing of outbound mail (issue 5, point 4): the relay's L{OutboundSigner}.

A message that leaves for another domain is signed for the domain of its ``From:`` address when
that domain has an active key (``strata dkim generate``), relaxed/relaxed, once: a message that
already carries a signature of that domain is left alone, and mail relayed to a primary is never
signed (the relay asks only for outbound entries).  The ``DKIM-Signature:`` field goes before the
stored bytes, as the first header field; the stored message is not changed.

The body is hashed as it is read from the store in ranges (L{BodyHasher}), so signing never
holds a whole message in memory; hashing and signing run in a worker pool, not on the reactor
thread (a large attachment takes a while in Python).  Keys are read from the keyring where file
I/O goes and kept for ``key_ttl`` seconds, so a key made or replaced with the CLI is used within
a minute.
A message that cannot be signed goes unsigned (and is logged): delivery matters more.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from functools import partial
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from strata_twisted.clock import SecondsClock
from strata_twisted.core.dkim import (
    BodyHasher,
    DkimKey,
    DkimKeyring,
    already_signed,
    sign_streamed,
    split_header,
)
from strata_twisted.core.relay import RelayedMessage
from strata_twisted.executor import Executor
from strata_twisted.interfaces import IMessageStore
from strata_twisted.model import recipient_domain

CHUNK: Final = 256 * 1024


def from_domain(header: bytes) -> str | None:
    """The canonical domain of the (first) ``From:`` address of a header section."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)
    values = [str(v) for v in parsed.get_all("From", [])]
    for _, address in email.utils.getaddresses(values):
        domain = recipient_domain(address)
        if domain is not None:
            return domain
    return None


class DkimSigner:
    """Signs outbound messages with their From: domain's active DKIM key."""

    log = Logger()

    def __init__(
        self,
        clock: SecondsClock,
        messages: IMessageStore,
        keyring: DkimKeyring,
        files: Executor,
        work: Executor,
        key_ttl: float = 60.0,
    ) -> None:
        """``files``: where key files are read; ``work``: where bodies are hashed and
        signatures made (CPU work, off the reactor thread)."""
        self._clock = clock
        self._messages = messages
        self._keyring = keyring
        self._files = files
        self._work = work
        self._key_ttl = key_ttl
        self._keys: dict[str, tuple[float, DkimKey | None]] = {}

    def signature(self, message: RelayedMessage) -> Deferred[bytes]:
        """The DKIM-Signature field to put before ``message``, or b"".  Never fails."""

        async def sign() -> bytes:
            try:
                return await self._sign(message)
            except Exception:
                self.log.failure("cannot DKIM-sign {id}; it goes unsigned", id=message.message.id)
                return b""

        return Deferred.fromCoroutine(sign())

    async def _sign(self, relayed: RelayedMessage) -> bytes:
        split = split_header(relayed.head)
        if split is None:
            self.log.warn("{id}: no header section in its first {n} bytes; not signed",
                          id=relayed.message.id, n=len(relayed.head))  # fmt: skip
            return b""
        header, body_start = split
        domain = from_domain(header)
        if domain is None:
            return b""
        key = await self._key(domain)
        if key is None or already_signed(header, domain):
            return b""
        hasher = BodyHasher()
        await self._work.run(partial(hasher.update, relayed.head[body_start:]))
        message = relayed.message
        offset = len(relayed.head)
        while offset < message.size:
            chunk = await self._messages.read_body_range(message.id, offset, CHUNK)
            if not chunk:
                raise OSError(f"the body of {message.id} ends at {offset} of {message.size}")
            await self._work.run(partial(hasher.update, chunk))
            offset += len(chunk)
        now = self._clock.seconds()
        return await self._work.run(
            lambda: sign_streamed(header, hasher.digest(), key, domain, now)
        )

    async def _key(self, domain: str) -> DkimKey | None:
        now = self._clock.seconds()
        cached = self._keys.get(domain)
        if cached is not None and now - cached[0] < self._key_ttl:
            return cached[1]
        key = await self._files.run(lambda: self._keyring.active(domain))
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[domain] = (now, key)
        return key
