"""
The CLI's view of one data directory: its settings, its SQLite store on a synchronous executor
(every Deferred it returns has already fired), and an L{AdminContext} over that store for the
operations in L{strata_twisted.core.admin}, which the CLI calls as the local operator
(L{cli_caller}).  Whether a server runs on the data dir is known from the lock it holds there
(L{strata_twisted.runlock}).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

from twisted.internet.defer import Deferred

from strata_twisted.cli.output import Output
from strata_twisted.clock import WallClock
from strata_twisted.config import Settings
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller, cli_caller
from strata_twisted.errors import ConfigError
from strata_twisted.executor import SyncExecutor
from strata_twisted.fired import result_of
from strata_twisted.runlock import RunningServer, running_server
from strata_twisted.storage import open_store
from strata_twisted.storage.sqlite import DB_NAME, SQLiteStore

T = TypeVar("T")


class CommandError(Exception):
    """A failed admin operation: printed as ``strata: <message>``, exit status 1."""


class UsageError(CommandError):
    """An argument the parser could not check (a domain name, a duration): exit status 2."""


class Context(Output):
    """One command's data directory, store, admin context and output."""

    def __init__(self, settings: Settings, out: TextIO, create: bool = False) -> None:
        super().__init__(out)
        if settings.storage.backend != "sqlite":
            raise ConfigError(
                "storage.backend",
                f"the CLI needs a persistent backend; {settings.storage.backend!r} keeps nothing "
                "between processes",
            )
        # Opening the store creates it.  Run from the wrong directory, every command would then
        # report a brand-new, empty store ("the queue is empty") instead of the server's.
        self.created = not (settings.data_dir / DB_NAME).exists()
        if self.created and not create:
            raise UsageError(
                f"no Strata data in {settings.data_dir}: run strata in the directory the server "
                "runs in, or give it the server's config with --config PATH (only "
                "'strata domain add' starts a new data dir)"
            )
        self.settings = settings
        self.clock = WallClock()
        store = open_store("sqlite", settings.data_dir, self.clock, SyncExecutor())
        assert isinstance(store, SQLiteStore)
        store.open(recover=False)
        self.store = store
        self.admin = AdminContext(
            domains=store,
            queue=store,
            messages=store,
            events=store,
            monitor=store,
            control=store,
            credentials=store,
            tenants=store,
            admins=store,
            audit=store,
            series=store,
            clock=self.clock,
            settings=settings,
            server_running=lambda: self.server() is not None,
        )
        self.caller: Caller = cli_caller()

    def close(self) -> None:
        self.store.close()

    def run(self, operation: Coroutine[Any, Any, T]) -> T:
        """The result of an admin operation: on the synchronous store it has finished when
        this returns (or raised its error)."""
        return result_of(Deferred.fromCoroutine(operation))

    def server(self) -> RunningServer | None:
        """The server running on this data dir (it holds the data dir's lock), or None."""
        return running_server(self.settings.data_dir)
