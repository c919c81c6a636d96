"""pytest fixtures that hand out private Postfix instances and stop them all at teardown.

Load them from a conftest or test module with ``pytest_plugins = ["tests.peers.fixtures"]`` or
``from tests.peers.fixtures import postfix_factory``.

A missing Postfix is a failure, never a skip: CI installs the real peers, and a test that cannot
meet its peer has not passed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.net import free_port
from tests.peers.postfix import (
    INSTALL_HINT,
    PostfixInstance,
    SmtpSink,
    postfix_installed,
)


class PostfixFactory:
    """Builds instances (and smtp-sinks) under one directory; `close` stops every one of them.

    The directory is a fresh one under ``/tmp``, not pytest's ``tmp_path``: Postfix daemons run
    as the ``postfix`` user and cannot search pytest's ``0700`` base directory.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._started: list[PostfixInstance | SmtpSink] = []
        self._count = 0

    def path(self, name: str) -> Path:
        """A fresh directory under the factory's base (searchable by the postfix user)."""
        self._count += 1
        d = self.base / f"{self._count:02d}-{name}"
        d.mkdir(parents=True)
        d.chmod(0o755)
        return d

    def _build(
        self, maker: Callable[..., PostfixInstance], name: str, **kw: Any
    ) -> PostfixInstance:
        port = kw.pop("smtpd_port", None) or free_port()
        start = kw.pop("start", True)
        instance = maker(self.path(name), port, **kw)
        self._started.append(instance)
        if start:
            instance.start()
        return instance

    def relay_to(self, domains: list[str], nexthop: str, **kw: Any) -> PostfixInstance:
        """A started `PostfixInstance.relay_to` on a free port."""
        return self._build(
            PostfixInstance.relay_to, "relay", domains=domains, nexthop=nexthop, **kw
        )

    def backup_mx(self, domains: list[str], **kw: Any) -> PostfixInstance:
        """A started `PostfixInstance.backup_mx` on a free port."""
        return self._build(PostfixInstance.backup_mx, "backup-mx", domains=domains, **kw)

    def primary(self, domains: list[str], **kw: Any) -> PostfixInstance:
        """A started `PostfixInstance.primary` on a free port; its Maildir is ``.maildir``."""
        return self._build(PostfixInstance.primary, "primary", domains=domains, **kw)

    def custom(self, main_cf: dict[str, str], **kw: Any) -> PostfixInstance:
        """A started plain `PostfixInstance` with `main_cf` on top of the base settings."""

        def make(root: Path, port: int, **rest: Any) -> PostfixInstance:
            return PostfixInstance(root, smtpd_port=port, main_cf=main_cf, **rest)

        return self._build(make, "custom", **kw)

    def smtp_sink(self, port: int | None = None) -> SmtpSink:
        """A started ``smtp-sink`` on 127.0.0.1 dumping one file per message."""
        sink = SmtpSink(self.path("sink"), port or free_port())
        self._started.append(sink)
        sink.start()
        return sink

    def close(self) -> None:
        """Stop every peer; print each Postfix log tail (pytest shows it when a test failed)."""
        errors: list[BaseException] = []
        for peer in reversed(self._started):
            if isinstance(peer, PostfixInstance):
                print(f"--- maillog tail of {peer.root} ---\n{peer.maillog_tail()}")
            try:
                peer.stop()
            except Exception as e:  # noqa: BLE001 - stop every peer, report afterwards
                errors.append(e)
        self._started.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def postfix_factory() -> Iterator[PostfixFactory]:
    """A `PostfixFactory`; fails (never skips) when Postfix is not installed."""
    if not postfix_installed() or shutil.which("smtp-sink", path="/usr/sbin") is None:
        pytest.fail(f"Postfix is required for interop tests: {INSTALL_HINT}", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="strata-postfix-"))
    base.chmod(0o755)
    factory = PostfixFactory(base)
    try:
        yield factory
    finally:
        try:
            factory.close()
        finally:
            shutil.rmtree(base, ignore_errors=True)
