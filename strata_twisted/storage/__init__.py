"""
Storage backends for the roles in L{strata_twisted.interfaces}.

- L{strata_twisted.storage.sqlite}: the embedded default, SQLite (WAL) plus one file per body.
- L{strata_twisted.storage.memory}: everything in memory, for tests and throwaway instances.

Only the composition root (``service.py``) and the CLI name a backend, through L{open_store};
everything else sees the interfaces.  This package must never be imported by ``proto/`` or
``core/``.
"""

from __future__ import annotations

from pathlib import Path

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import ConfigError
from strata_twisted.executor import Executor
from strata_twisted.storage._mailboxes import Indexer
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.storage.sqlite import SQLiteStore


def open_store(
    backend: str,
    data_dir: Path,
    clock: SecondsClock,
    executor: Executor,
    *,
    sync_each_result: bool = True,
    indexer: Indexer | None = None,
) -> MemoryStore | SQLiteStore:
    """
    The store named by ``storage.backend`` (``"sqlite"`` or ``"memory"``), not yet opened.

    Call its ``open(recover=...)`` before use (synchronous: before the reactor runs).
    ``recover=True`` says this process is the only one using ``data_dir`` (the server at startup),
    so every uncommitted body file a crash left behind is deleted; the CLI passes False.  Raises
    L{ConfigError} for an unknown backend.  ``sync_each_result``: ``relay.sync_each_result``.
    ``indexer``: the MIME indexer for shadow copies (L{Indexer}; None keeps no index).
    """
    if backend == "sqlite":
        return SQLiteStore(
            data_dir, clock, executor, sync_each_result=sync_each_result, indexer=indexer
        )
    if backend == "memory":
        return MemoryStore(clock, indexer=indexer)
    raise ConfigError("storage.backend", f'expected "sqlite" or "memory", got {backend!r}')
