"""
The conformance suites, bound to L{SQLiteStore}; plus what only the disk store promises: layout,
durability settings, schema version, crash recovery, disk-full handling, group commit and its
thread discipline.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.errors import (
    ConfigError,
    InsufficientStorage,
    NoSuchEntry,
    QueueStateError,
    StorageError,
)
from strata_twisted.executor import SyncExecutor
from strata_twisted.model import (
    BOUNCED_OUTCOME,
    DEFERRED_OUTCOME,
    DELIVERED,
    DELIVERED_OUTCOME,
    FLAGS_ADD,
    HELD,
    HELD_OUTCOME,
    QUEUED,
    AdminAccount,
    ApiKey,
    AttemptResult,
    AuditRecord,
    Branding,
    Customer,
    Delivery,
    Domain,
    DomainStatus,
    Envelope,
    Event,
    EventFilter,
    IncomingMessage,
    MailboxHasChildren,
    QueueEntry,
    QueueFilter,
    RelayTarget,
    Reseller,
    ShadowCopy,
    StoredMessage,
    UserCredential,
)
from strata_twisted.proto.mime import index_bytes
from strata_twisted.storage import open_store
from strata_twisted.storage.sqlite import (
    BUFFER_LIMIT,
    INLINE_LIMIT,
    ORPHAN_AGE,
    SQLiteStore,
    translate_error,
)
from strata_twisted.storage.sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    schema_version,
)
from strata_twisted.testing import ManualExecutor, result_of, store_message
from tests.conformance.suites import (
    ALICE,
    BOB,
    BODY,
    CAROL,
    ZOE,
    AdminStoreSuite,
    AuditStoreSuite,
    ControlStoreSuite,
    CredentialStoreSuite,
    DomainStoreSuite,
    EventQuerySuite,
    EventStoreSuite,
    MailboxStoreSuite,
    MessageStoreSuite,
    MonitorStoreSuite,
    QueueQuerySuite,
    QueueStoreSuite,
    ShadowStoreSuite,
    TenantStoreSuite,
    assert_nothing_stored,
    deliver,
    entry,
    fails_with,
)

T = TypeVar("T")

# Most tests here are about body files: inline_limit=0 sends every body to its own file.  The
# default (small bodies inline in the database) has its own conformance bindings and tests below.
FILES = 0

# 2024-01-02 01:00:00 UTC: bodies received now go under messages/20240102/.
JAN_2 = 1704153600.0 + 3600


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path, clock: task.Clock) -> Iterator[SQLiteStore]:
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES, indexer=index_bytes)
    store.open(recover=True)
    yield store
    result_of(store.close())


def sql(store: SQLiteStore, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's own connection, through its executor."""
    rows = store._with_connection("test", lambda c: [tuple(r) for r in c.execute(query, params)])
    return result_of(rows)


@pytest.fixture
def set_entry_state() -> Callable[[SQLiteStore, str, str], None]:
    def set_state(store: SQLiteStore, entry_id: str, state: str) -> None:
        sql(store, "UPDATE queue SET state = ? WHERE id = ?", (state, entry_id))

    return set_state


def body_files(data_dir: Path) -> list[str]:
    """Every file under messages/, as paths relative to the data directory."""
    root = data_dir / "messages"
    return sorted(str(p.relative_to(data_dir)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(name="body_files")
def body_files_fixture() -> Callable[[SQLiteStore], list[str]]:
    """The conformance suites' view of a store's body files."""
    return lambda store: body_files(store.data_dir)


def incoming(*deliveries: Delivery, received_at: float = 1000.0, **kwargs: Any) -> IncomingMessage:
    deliveries = deliveries or (ALICE,)
    envelope = Envelope("sender@example.org", tuple(d.recipient for d in deliveries))
    return IncomingMessage(envelope, received_at, deliveries, **kwargs)


class TestSQLiteDomainStore(DomainStoreSuite):
    pass


class TestSQLiteMessageStore(MessageStoreSuite):
    pass


class TestSQLiteQueueStore(QueueStoreSuite):
    pass


class TestSQLiteShadowStore(ShadowStoreSuite):
    pass


class TestSQLiteEventStore(EventStoreSuite):
    pass


class TestSQLiteQueueQuery(QueueQuerySuite):
    pass


class TestSQLiteEventQuery(EventQuerySuite):
    pass


class TestSQLiteTenantStore(TenantStoreSuite):
    pass


class TestSQLiteAdminStore(AdminStoreSuite):
    pass


class TestSQLiteAuditStore(AuditStoreSuite):
    pass


class TestSQLiteMonitorStore(MonitorStoreSuite):
    pass


class TestSQLiteControlStore(ControlStoreSuite):
    pass


class TestSQLiteMailboxStore(MailboxStoreSuite):
    pass


class TestSQLiteCredentialStore(CredentialStoreSuite):
    pass


class OwnThreadExecutor:
    """
    Runs every call on one dedicated worker thread and waits for it: ThreadExecutor's thread
    discipline with SyncExecutor's already-fired Deferreds.  sqlite3 refuses a connection used
    from a thread other than the one that opened it, so a store that touched its connection
    outside an executor call would fail every test bound to this executor.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        try:
            return succeed(self._pool.submit(f).result())
        except BaseException:
            return fail()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._pool.shutdown()


class OwnThreadStore:
    @pytest.fixture
    def store(self, data_dir: Path, clock: task.Clock) -> Iterator[SQLiteStore]:
        executor = OwnThreadExecutor()
        store = SQLiteStore(data_dir, clock, executor, inline_limit=FILES, indexer=index_bytes)
        store.open(recover=True)
        yield store
        result_of(store.close())
        executor.stop()


class TestSQLiteOnItsThreadMessageStore(OwnThreadStore, MessageStoreSuite):
    pass


class TestSQLiteOnItsThreadQueueStore(OwnThreadStore, QueueStoreSuite):
    pass


class TestSQLiteOnItsThreadQueueQuery(OwnThreadStore, QueueQuerySuite):
    pass


class TestSQLiteOnItsThreadMonitorStore(OwnThreadStore, MonitorStoreSuite):
    pass


class TestSQLiteOnItsThreadMailboxStore(OwnThreadStore, MailboxStoreSuite):
    pass


class TestSQLiteOnItsThreadCredentialStore(OwnThreadStore, CredentialStoreSuite):
    pass


class InlineBodiesStore:
    """The default configuration: bodies up to INLINE_LIMIT live in the database."""

    @pytest.fixture
    def store(self, data_dir: Path, clock: task.Clock) -> Iterator[SQLiteStore]:
        store = SQLiteStore(data_dir, clock, SyncExecutor(), indexer=index_bytes)
        store.open(recover=True)
        yield store
        result_of(store.close())


class TestSQLiteInlineMessageStore(InlineBodiesStore, MessageStoreSuite):
    pass


class TestSQLiteInlineQueueStore(InlineBodiesStore, QueueStoreSuite):
    pass


class TestSQLiteInlineMailboxStore(InlineBodiesStore, MailboxStoreSuite):
    pass


class TestSQLiteInlineCredentialStore(InlineBodiesStore, CredentialStoreSuite):
    pass


# -- persistence, layout and settings


@pytest.mark.parametrize("sync_each_result", [True, False])
def test_results_alone_skip_the_wal_fsync_only_when_configured(
    data_dir: Path, clock: task.Clock, sync_each_result: bool
) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor(), sync_each_result=sync_each_result)
    store.open(recover=True)
    deliver(store, "M1", deliveries=(ALICE, CAROL))
    conn = store._t_conn()

    def mode_during(work: Callable[[], object]) -> int:
        """The connection's synchronous level while ``work`` commits (1 NORMAL, 2 FULL)."""
        levels: list[int] = []

        def trace(statement: str) -> None:
            if statement == "COMMIT":
                levels.append(conn.execute("PRAGMA synchronous").fetchone()[0])

        conn.set_trace_callback(trace)
        try:
            work()
        finally:
            conn.set_trace_callback(None)
        assert len(set(levels)) == 1, levels
        return levels[0]

    def record(entry_id: str) -> object:
        return result_of(
            store.record_result(AttemptResult(entry_id, DELIVERED_OUTCOME, "250 ok", 1001.0))
        )

    lazy = 2 if sync_each_result else 1
    assert mode_during(lambda: record("M1.1")) == lazy
    assert mode_during(lambda: record("M1.2")) == lazy
    # Message commits are always fsync'd, between results too.
    assert mode_during(lambda: deliver(store, "M2", deliveries=(ALICE,))) == 2
    assert mode_during(lambda: record("M2.1")) == lazy
    result_of(store.close())


def test_sync_results_fsyncs_the_wal(
    data_dir: Path, clock: task.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store("sqlite", data_dir, clock, SyncExecutor(), sync_each_result=False)
    assert isinstance(store, SQLiteStore) and not store.sync_each_result
    store.open(recover=True)
    deliver(store, "M1")
    result_of(store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1001.0)))
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result_of(store.sync_results())
    assert synced == [str(data_dir.resolve() / "strata.db-wal")]
    result_of(store.close())


def test_data_survives_close_and_reopen(data_dir: Path, clock: task.Clock) -> None:
    clock.advance(JAN_2)
    first = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    first.open(recover=True)
    domain = result_of(first.add_domain(Domain("example.com", RelayTarget("mx.example.com"))))
    big = BODY + b"x" * (BUFFER_LIMIT * 3)
    stored = deliver(first, "M1", (ALICE, BOB, CAROL), body=big, header_message_id="<1@x>")
    event = result_of(first.record_event("domain.added", "hello", "example.com", {"a": [1]}))
    version = result_of(first.domains_version())
    entries = result_of(first.list_entries())
    copies = result_of(first.list_shadow_copies())
    result_of(first.close())

    second = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    second.open(recover=True)
    try:
        assert result_of(second.list_domains()) == [domain]
        assert result_of(second.domains_version()) == version
        assert result_of(second.get_message("M1")) == stored
        assert result_of(second.read_body("M1")) == big
        assert result_of(second.list_entries()) == entries
        assert (
            result_of(second.list_shadow_copies())
            == copies
            == [ShadowCopy("M1", "bob@example.com", "INBOX", JAN_2)]
        )
        assert result_of(second.list_events()) == [event]
        assert result_of(second.message_count()) == 1
    finally:
        result_of(second.close())


def test_schema_version_is_recorded(store: SQLiteStore) -> None:
    assert [number for number, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    tables = {name for (name,) in sql(store, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "meta",
        "domains",
        "messages",
        "bodies",
        "queue",
        "shadow_copies",
        "events",
        "domain_status",
        "outages",
        "control_requests",
    } <= tables
    indexes = {name for (name,) in sql(store, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "queue_domain_seq",
        "queue_state_domain_seq",
        "queue_state_domain_due",
        "outages_domain_id",
        "outages_open",
    } <= indexes


def test_reopening_does_not_migrate_again(store: SQLiteStore, data_dir: Path) -> None:
    result_of(store.add_domain(Domain("example.com", RelayTarget("mx.example.com"))))
    again = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    again.open()
    assert [d.name for d in result_of(again.list_domains())] == ["example.com"]
    assert sql(again, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    result_of(again.close())


def test_a_newer_schema_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "strata.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES).open()


def test_pragmas(store: SQLiteStore) -> None:
    assert sql(store, "PRAGMA journal_mode") == [("wal",)]
    assert sql(store, "PRAGMA synchronous") == [(2,)]  # FULL
    assert sql(store, "PRAGMA foreign_keys") == [(1,)]
    assert sql(store, "PRAGMA busy_timeout") == [(5000,)]


def test_layout_and_permissions(store: SQLiteStore, data_dir: Path, clock: task.Clock) -> None:
    clock.advance(JAN_2)
    deliver(store, "M1")
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "strata.db").stat().st_mode) == 0o600
    body = data_dir / "messages" / "20240102" / "M1"
    assert body.read_bytes() == BODY
    assert stat.S_IMODE(body.stat().st_mode) == 0o600
    assert sql(store, "SELECT body_path FROM messages") == [("messages/20240102/M1",)]


def test_domain_names_are_stored_as_given_ascii(store: SQLiteStore) -> None:
    result_of(store.add_domain(Domain("xn--bcher-kva.example", RelayTarget("mx.example.com"))))
    assert sql(store, "SELECT name FROM domains") == [("xn--bcher-kva.example",)]


def test_domain_changes_from_another_process_are_seen(store: SQLiteStore, data_dir: Path) -> None:
    # The CLI changes domains in its own process; the server notices through domains_version.
    cli = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    cli.open()
    before = result_of(store.domains_version())
    result_of(cli.add_domain(Domain("example.com", RelayTarget("mx.example.com"))))
    assert result_of(store.domains_version()) != before
    assert [d.name for d in result_of(store.list_domains())] == ["example.com"]
    result_of(cli.close())


def test_open_store_builds_an_unopened_sqlite_store(data_dir: Path) -> None:
    store = open_store("sqlite", data_dir, task.Clock(), SyncExecutor())
    assert isinstance(store, SQLiteStore)
    assert not data_dir.exists()
    fails_with(store.list_domains(), StorageError)  # not open yet
    store.open(recover=True)
    assert result_of(store.list_domains()) == []
    result_of(store.close())
    with pytest.raises(ConfigError):
        open_store("redis", data_dir, task.Clock(), SyncExecutor())


def test_a_closed_store_fails_through_deferreds(store: SQLiteStore) -> None:
    result_of(store.close())
    fails_with(store.list_domains(), StorageError)
    fails_with(store.record_event("k", "m"), StorageError)
    fails_with(store_message(store, "M1", BODY, (ALICE,)), StorageError)


# -- the connection and the files are only touched from executor calls


def test_nothing_touches_the_database_outside_executor_calls(
    data_dir: Path, clock: task.Clock
) -> None:
    executor = ManualExecutor()
    store = SQLiteStore(data_dir, clock, executor, inline_limit=FILES)
    store.open(recover=True)
    assert executor.submitted == 0
    d = store.list_domains()
    assert store._t_db is None and not d.called
    executor.run_next()
    assert result_of(d) == []
    assert store._t_db is not None


def test_body_file_is_created_lazily_and_writes_apply_back_pressure(
    data_dir: Path, clock: task.Clock
) -> None:
    executor = ManualExecutor()
    store = SQLiteStore(data_dir, clock, executor, inline_limit=FILES)
    store.open(recover=True)
    writer = store.begin("M1")
    chunk = b"y" * (64 * 1024)
    for _ in range(4):  # exactly BUFFER_LIMIT: still only buffered
        assert result_of(writer.write(chunk)) is None
    assert executor.submitted == 0
    assert body_files(data_dir) == []

    d = writer.write(b"z")  # over the limit: flushed on the storage thread
    assert not d.called  # the caller waits for the flush
    assert executor.pending == 1
    executor.run_next()
    assert result_of(d) is None
    path = data_dir / "messages" / "19700101" / "M1"
    assert path.stat().st_size == BUFFER_LIMIT + 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    commit = writer.commit(incoming())
    executor.run_all()
    assert result_of(commit).size == BUFFER_LIMIT + 1


def test_abort_deletes_the_body_file(store: SQLiteStore, data_dir: Path) -> None:
    writer = store.begin("M1")
    result_of(writer.write(b"x" * (BUFFER_LIMIT + 1)))
    assert body_files(data_dir) == ["messages/19700101/M1"]
    result_of(writer.abort())
    assert body_files(data_dir) == []
    assert_nothing_stored(store, "M1")


def test_a_failed_write_is_reported_by_write_and_commit(store: SQLiteStore, data_dir: Path) -> None:
    # Someone else's file already has our name: O_EXCL refuses it, and we must not delete it.
    squatter = data_dir / "messages" / "19700101" / "M1"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"not ours")
    writer = store.begin("M1")
    fails_with(writer.write(b"x" * (BUFFER_LIMIT + 1)), StorageError)
    fails_with(writer.write(b"more"), StorageError)
    fails_with(writer.commit(incoming()), StorageError)
    result_of(writer.abort())
    assert squatter.read_bytes() == b"not ours"
    assert_nothing_stored(store, "M1")


# -- crash recovery


def test_recovery_sweep_removes_orphans_and_keeps_committed_bodies(
    data_dir: Path, clock: task.Clock
) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    store.open(recover=True)
    deliver(store, "KEPT")
    crashed = store.begin("CRASHED")  # flushed to disk, never committed: a crash
    result_of(crashed.write(b"x" * (BUFFER_LIMIT + 1)))
    stray = data_dir / "messages" / "20991231" / "STRAY"
    stray.parent.mkdir()
    stray.write_bytes(b"left by a crash")
    assert body_files(data_dir) == [
        "messages/19700101/CRASHED",
        "messages/19700101/KEPT",
        "messages/20991231/STRAY",
    ]
    result_of(store.close())

    reopened = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    reopened.open(recover=True)
    assert body_files(data_dir) == ["messages/19700101/KEPT"]
    assert result_of(reopened.read_body("KEPT")) == BODY
    assert result_of(reopened.get_message("CRASHED")) is None
    result_of(reopened.close())


def test_without_recover_only_old_orphans_are_swept(store: SQLiteStore, data_dir: Path) -> None:
    day = data_dir / "messages" / "19700101"
    day.mkdir()
    fresh, old = day / "FRESH", day / "OLD"
    fresh.write_bytes(b"maybe still being received by the server")
    old.write_bytes(b"left by a crash long ago")
    long_ago = time.time() - ORPHAN_AGE - 60
    os.utime(old, (long_ago, long_ago))
    deliver(store, "KEPT")
    os.utime(day / "KEPT", (long_ago, long_ago))

    cli = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    cli.open(recover=False)
    assert body_files(data_dir) == ["messages/19700101/FRESH", "messages/19700101/KEPT"]
    result_of(cli.close())


def test_the_cli_does_not_sweep_a_body_the_server_is_receiving(
    store: SQLiteStore, data_dir: Path
) -> None:
    writer = store.begin("M1")
    big = b"x" * (BUFFER_LIMIT + 1)
    result_of(writer.write(big))
    cli = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    cli.open()  # recover=False: another process may be writing
    result_of(cli.close())
    result_of(writer.write(b"tail"))
    result_of(writer.commit(incoming()))
    assert result_of(store.read_body("M1")) == big + b"tail"


# -- errors


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), InsufficientStorage),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), InsufficientStorage),
        (OSError(errno.EIO, "Input/output error"), StorageError),
        (PermissionError(errno.EACCES, "Permission denied"), StorageError),
        (sqlite3.OperationalError("database or disk is full"), InsufficientStorage),
        (sqlite3.OperationalError("database is locked"), StorageError),
        (sqlite3.DatabaseError("database disk image is malformed"), StorageError),
        (ValueError("a bug"), StorageError),
    ],
)
def test_translate_error(error: BaseException, expected: type[StorageError]) -> None:
    translated = translate_error(error, "doing it")
    assert type(translated) is expected
    assert str(translated).startswith("doing it: ")
    assert str(error) in str(translated)


def test_translate_error_keeps_strata_errors() -> None:
    error = NoSuchEntry("no message M1")
    assert translate_error(error, "reading") is error


def test_sqlite_full_is_insufficient_storage_and_passes(store: SQLiteStore, data_dir: Path) -> None:
    # Cap the database at its current size: the next transaction that needs a page fails with
    # SQLITE_FULL, exactly as on a full disk, and must be rolled back.
    deliver(store, "M0")
    (pages,) = sql(store, "PRAGMA page_count")[0]
    sql(store, f"PRAGMA max_page_count = {pages}")
    huge = "<" + "x" * 200_000 + "@example.org>"
    d = store_message(store, "M1", BODY, (ALICE, BOB), header_message_id=huge)
    error = fails_with(d, InsufficientStorage)
    assert "full" in str(error)
    assert result_of(store.get_message("M1")) is None
    assert [e.message_id for e in result_of(store.list_entries())] == ["M0"]
    assert body_files(data_dir) == ["messages/19700101/M0"]

    sql(store, "PRAGMA max_page_count = 1073741823")  # space again, same connection
    deliver(store, "M2", (ALICE, BOB), header_message_id=huge)
    assert [e.message_id for e in result_of(store.list_entries())] == ["M0", "M2", "M2"]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """
    A 1 MiB tmpfs: a disk that fills up.  Needs root (mount).  Opening a new database applies
    every migration, and the WAL holds them all until the checkpoint, which then grows the
    database file: with thirteen migrations that peak no longer fits in 512 KiB.
    """
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.fail("no mount command: cannot simulate a full disk with a tiny tmpfs")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            "cannot mount a 1 MiB tmpfs to simulate a full disk (needs root; CI runs as root): "
            + (result.stderr.strip() or f"exit {result.returncode}")
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write to ``path`` until the disk is full."""
    with path.open("wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_disk_full_while_writing_the_body(tiny_fs: Path, clock: task.Clock) -> None:
    data_dir = tiny_fs / "data"
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    store.open(recover=True)
    deliver(store, "M0")  # the WAL and its index exist before the disk fills

    writer = store.begin("M1")
    failures: list[Any] = []
    for _ in range(32):  # 2 MiB: more than the disk holds
        writer.write(b"x" * (64 * 1024)).addErrback(failures.append)
        if failures:
            break
    else:
        pytest.fail("the disk never filled up")
    assert failures[0].check(InsufficientStorage), failures[0]
    fails_with(writer.write(b"more"), InsufficientStorage)
    fails_with(writer.commit(incoming()), InsufficientStorage)
    result_of(writer.abort())
    assert result_of(store.get_message("M1")) is None
    assert [e.message_id for e in result_of(store.list_entries())] == ["M0"]
    assert body_files(data_dir) == ["messages/19700101/M0"]  # the partial body is gone

    # The failed body freed its space: the next message goes through, without reopening.
    deliver(store, "M2", body=BODY * 10)
    assert result_of(store.read_body("M2")) == BODY * 10
    result_of(store.close())


def test_disk_full_at_commit_then_space_freed(tiny_fs: Path, clock: task.Clock) -> None:
    data_dir = tiny_fs / "data"
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    store.open(recover=True)
    deliver(store, "M0")
    ballast = tiny_fs / "ballast"
    fill(ballast)

    d = store_message(store, "M1", BODY, (ALICE, BOB))
    fails_with(d, InsufficientStorage)
    assert result_of(store.get_message("M1")) is None
    assert result_of(store.entries_for_message("M1")) == []
    assert result_of(store.list_shadow_copies()) == []
    assert body_files(data_dir) == ["messages/19700101/M0"]

    ballast.unlink()
    deliver(store, "M2", (ALICE, BOB))
    assert result_of(store.read_body("M2")) == BODY
    assert [e.message_id for e in result_of(store.list_entries())] == ["M0", "M2", "M2"]
    result_of(store.close())


def test_database_full_on_a_full_disk(tiny_fs: Path, clock: task.Clock) -> None:
    # Leave one page free: the small body fits, the transaction's WAL frames do not.
    data_dir = tiny_fs / "data"
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    store.open(recover=True)
    deliver(store, "M0")
    ballast = tiny_fs / "ballast"
    fill(ballast)
    os.truncate(ballast, ballast.stat().st_size - 4096)

    big_header = "<" + "x" * 20_000 + "@example.org>"
    d = store_message(store, "M1", BODY, (ALICE, BOB), header_message_id=big_header)
    error = fails_with(d, InsufficientStorage)
    assert "database or disk is full" in str(error)
    assert result_of(store.get_message("M1")) is None
    assert result_of(store.list_shadow_copies()) == []
    assert body_files(data_dir) == ["messages/19700101/M0"]

    ballast.unlink()
    deliver(store, "M2", (ALICE, BOB), header_message_id=big_header)
    assert result_of(store.message_count()) == 2
    result_of(store.close())


# -- group commit


@pytest.fixture
def manual(data_dir: Path, clock: task.Clock) -> tuple[SQLiteStore, ManualExecutor]:
    executor = ManualExecutor()
    store = SQLiteStore(data_dir, clock, executor, inline_limit=FILES, indexer=index_bytes)
    store.open(recover=True)
    return store, executor


def trace_statements(store: SQLiteStore, executor: ManualExecutor) -> list[str]:
    """Record every SQL statement the store's connection runs from now on."""
    statements: list[str] = []
    d = store._with_connection("trace", lambda c: c.set_trace_callback(statements.append))
    executor.run_all()
    result_of(d)
    statements.clear()
    return statements


def test_commits_requested_during_a_batch_share_the_next_one(
    manual: tuple[SQLiteStore, ManualExecutor],
) -> None:
    store, executor = manual
    statements = trace_statements(store, executor)
    writers = [store.begin(f"M{n}") for n in range(4)]
    for writer in writers:
        result_of(writer.write(BODY))
    submitted = executor.submitted

    first = writers[0].commit(incoming(ALICE))
    assert executor.pending == 1  # the first batch is on its way to the storage thread
    later = [w.commit(incoming(ALICE, CAROL)) for w in writers[1:]]
    assert executor.pending == 1  # the others wait for it, they are not submitted yet

    executor.run_next()  # batch 1: M0 alone
    assert result_of(first).id == "M0"
    assert not any(d.called for d in later)
    assert executor.pending == 1  # batch 2: everything that waited
    statements.clear()

    executor.run_next()
    assert [result_of(d).id for d in later] == ["M1", "M2", "M3"]
    assert executor.submitted == submitted + 2  # two batches, one executor call each
    assert executor.pending == 0
    assert statements.count("COMMIT") == 1  # ... and one transaction for the three
    assert statements.count("BEGIN IMMEDIATE") == 1

    entries = store.list_entries()
    executor.run_all()
    assert [e.id for e in result_of(entries)] == [
        "M0.1",
        "M1.1",
        "M1.2",
        "M2.1",
        "M2.2",
        "M3.1",
        "M3.2",
    ]


def test_a_failed_batch_transaction_fails_every_message_in_it(
    manual: tuple[SQLiteStore, ManualExecutor], data_dir: Path
) -> None:
    store, executor = manual
    boom = Delivery("boom@example.com", "example.com")
    trigger = store._with_connection(
        "trigger",
        lambda c: c.execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON queue"
            " WHEN NEW.recipient = 'boom@example.com' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ),
    )
    executor.run_all()
    result_of(trigger)

    writers = {mid: store.begin(mid) for mid in ("M0", "M1", "M2", "M3")}
    for mid, writer in writers.items():
        size = BUFFER_LIMIT + 1 if mid == "M1" else 100  # M1's body is on disk before commit
        writer.write(b"x" * size)
    executor.run_all()
    assert body_files(data_dir) == ["messages/19700101/M1"]

    first = writers["M0"].commit(incoming(ALICE))
    batch = [
        writers["M1"].commit(incoming(ALICE)),
        writers["M2"].commit(incoming(CAROL, boom)),  # only this one trips the trigger
        writers["M3"].commit(incoming(BOB)),
    ]
    executor.run_next()
    assert result_of(first).id == "M0"
    executor.run_next()
    for d in batch:
        error = fails_with(d, StorageError)
        assert not isinstance(error, InsufficientStorage)
        assert "boom" in str(error)
    assert body_files(data_dir) == ["messages/19700101/M0"]
    for writer in writers.values():
        writer.abort()
    executor.run_all()

    def visible() -> tuple[list[str], list[str], int]:
        entries, copies, count = (
            store.list_entries(),
            store.list_shadow_copies(),
            store.message_count(),
        )
        executor.run_all()
        return (
            [e.id for e in result_of(entries)],
            [c.message_id for c in result_of(copies)],
            result_of(count),
        )

    assert visible() == (["M0.1"], [], 1)

    # The connection was rolled back and keeps working.
    drop = store._with_connection("drop", lambda c: c.execute("DROP TRIGGER boom"))
    writer = store.begin("M4")
    writer.write(BODY)
    commit = writer.commit(incoming(CAROL, boom))
    executor.run_all()
    result_of(drop)
    assert result_of(commit).id == "M4"
    assert visible() == (["M0.1", "M4.1", "M4.2"], [], 2)


def test_a_body_that_fails_fails_alone_in_its_batch(
    manual: tuple[SQLiteStore, ManualExecutor], data_dir: Path
) -> None:
    store, executor = manual
    squatter = data_dir / "messages" / "19700101" / "M2"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"not ours")
    writers = [store.begin(f"M{n}") for n in range(4)]
    for writer in writers:
        writer.write(BODY)
    first = writers[0].commit(incoming())
    batch = [w.commit(incoming()) for w in writers[1:]]
    executor.run_all()
    assert result_of(first).id == "M0"
    assert result_of(batch[0]).id == "M1"
    fails_with(batch[1], StorageError)
    assert result_of(batch[2]).id == "M3"
    assert squatter.read_bytes() == b"not ours"
    assert body_files(data_dir) == [f"messages/19700101/M{n}" for n in range(4)]
    count = store.message_count()
    executor.run_all()
    assert result_of(count) == 3


def test_abort_during_commit_waits_for_it(manual: tuple[SQLiteStore, ManualExecutor]) -> None:
    store, executor = manual
    writer = store.begin("M1")
    writer.write(BODY)
    commit = writer.commit(incoming())
    aborted = writer.abort()
    assert not aborted.called
    executor.run_all()
    assert result_of(aborted) is None
    assert result_of(commit).id == "M1"  # too late to take back: it stays
    body = store.read_body("M1")
    executor.run_all()
    assert result_of(body) == BODY


def test_failures_never_escape_as_raw_exceptions(store: SQLiteStore) -> None:
    sql(store, "DROP TABLE events")
    error = fails_with(store.list_events(), StorageError)
    assert "no such table" in str(error)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsync'd files")
def test_body_and_new_directories_are_fsynced_before_the_transaction(
    store: SQLiteStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        log.append("fsync " + os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), data_dir))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result_of(store._with_connection("trace", lambda c: c.set_trace_callback(log.append)))
    deliver(store, "M1")  # the first message of the day: its directory is new
    commit = log.index("COMMIT")
    assert log.index("fsync messages/19700101/M1") < commit
    assert log.index("fsync messages/19700101") < commit
    assert log.index("fsync messages") < commit
    # The connection's first commit may have created the -wal file: its directory is fsync'd
    # too, once, before the commit is reported.
    assert log.index("fsync .") > commit

    log.clear()
    deliver(store, "M2")  # same day: the body and its directory, nothing above
    assert [line for line in log if line.startswith("fsync")] == [
        "fsync messages/19700101/M2",
        "fsync messages/19700101",
    ]
    assert log.index("fsync messages/19700101") < log.index("COMMIT")


# -- small bodies inline in the database (the default)


def test_a_small_body_is_committed_inline_without_a_file(data_dir: Path, clock: task.Clock) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    clock.advance(JAN_2)
    deliver(store, "M1")
    assert body_files(data_dir) == []
    assert sql(store, "SELECT body_path FROM messages") == [(None,)]
    assert sql(store, "SELECT message_id, data FROM bodies") == [("M1", BODY)]
    assert result_of(store.read_body("M1")) == BODY
    assert result_of(store.read_headers("M1")) == BODY.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    result_of(store.close())
    reopened = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    reopened.open(recover=True)  # nothing to sweep, nothing lost
    assert result_of(reopened.read_body("M1")) == BODY
    result_of(reopened.close())


def test_a_body_that_outgrows_the_buffer_streams_to_its_file(
    data_dir: Path, clock: task.Clock
) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    clock.advance(JAN_2)
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * (INLINE_LIMIT // 40)
    small = b"Subject: small\r\n\r\n" + b"y" * 100 + b"\r\n"
    deliver(store, "BIG", body=big)
    deliver(store, "SMALL", body=small)
    assert body_files(data_dir) == ["messages/20240102/BIG"]
    assert sql(store, "SELECT id, body_path FROM messages ORDER BY id") == [
        ("BIG", "messages/20240102/BIG"),
        ("SMALL", None),
    ]
    assert result_of(store.read_body("BIG")) == big
    assert result_of(store.read_body("SMALL")) == small
    result_of(store.close())


def test_inline_commits_share_one_transaction_and_an_aborted_one_leaves_nothing(
    data_dir: Path, clock: task.Clock
) -> None:
    executor = ManualExecutor()
    store = SQLiteStore(data_dir, clock, executor)
    store.open(recover=True)
    statements = trace_statements(store, executor)
    writers = [store.begin(f"M{n}") for n in range(4)]
    for writer in writers:
        result_of(writer.write(BODY))
    result_of(writers[3].abort())
    first = writers[0].commit(incoming(ALICE))
    later = [w.commit(incoming(ALICE)) for w in writers[1:3]]
    executor.run_next()
    statements.clear()
    executor.run_next()
    assert [result_of(d).id for d in [first, *later]] == ["M0", "M1", "M2"]
    assert statements.count("COMMIT") == 1
    assert sum(s.startswith("INSERT INTO bodies") for s in statements) == 2
    count = store._with_connection(
        "count", lambda c: c.execute("SELECT count(*) FROM bodies").fetchone()[0]
    )
    executor.run_all()
    assert result_of(count) == 3
    assert body_files(data_dir) == []


# -- schema version 2: the relay and the monitor (#3)


def build_v1_database(data_dir: Path) -> None:
    """A data directory as Strata with schema version 1 left it, with a row in every table."""
    (data_dir / "messages").mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=1) == 0
        assert schema_version(conn) == 1
        columns = {row[1] for row in conn.execute("PRAGMA table_info(domains)")}
        assert "tls_policy" not in columns  # really version 1
        conn.executescript(
            """
            BEGIN;
            INSERT INTO domains VALUES ('example.com', 'mx.example.com', 2525, 'both', 10.0, 20.0);
            UPDATE meta SET value = 7 WHERE key = 'domains_version';
            INSERT INTO messages VALUES ('M1', 'sender@example.org',
                '["alice@example.com", "bob@example.com"]', '192.0.2.1', 'client.example',
                1, 0, 1000.0, 9, '<1@example.org>', NULL);
            INSERT INTO bodies VALUES ('M1', X'413A20310D0A0D0A78');
            INSERT INTO queue (id, message_id, domain, recipient, state, attempts, last_error,
                next_attempt_at, created_at)
                VALUES ('M1.1', 'M1', 'example.com', 'alice@example.com', 'queued', 2,
                        '421 busy', 1300.0, 1000.5),
                       ('M1.2', 'M1', 'example.com', 'bob@example.com', 'held', 1,
                        '550 no', 1000.0, 1000.5);
            INSERT INTO shadow_copies (message_id, recipient, mailbox, created_at)
                VALUES ('M1', 'bob@example.com', 'INBOX', 1000.5);
            INSERT INTO events (at, kind, domain, message, data)
                VALUES (30.0, 'domain.added', 'example.com', 'protecting', '{"a": 1}');
            COMMIT;
            """
        )
    finally:
        conn.close()


def test_a_v1_database_upgrades_to_v2_keeping_its_data(data_dir: Path, clock: task.Clock) -> None:
    build_v1_database(data_dir)
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open()
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        # Old rows get the defaults of the new columns.
        assert result_of(store.list_domains()) == [
            Domain("example.com", RelayTarget("mx.example.com", 2525), "both", 10.0, 20.0)
        ]
        assert result_of(store.domains_version()) == 7
        assert result_of(store.get_message("M1")) == StoredMessage(
            "M1",
            Envelope(
                "sender@example.org",
                ("alice@example.com", "bob@example.com"),
                "192.0.2.1",
                "client.example",
                body_8bitmime=True,
            ),
            1000.0,
            9,
            "<1@example.org>",
        )
        assert result_of(store.read_body("M1")) == b"A: 1\r\n\r\nx"
        assert result_of(store.read_body_range("M1", 3, 3)) == b"1\r\n"
        alice = QueueEntry(
            id="M1.1",
            seq=1,
            message_id="M1",
            domain="example.com",
            recipient="alice@example.com",
            sender="sender@example.org",
            header_message_id="<1@example.org>",
            size=9,
            received_at=1000.0,
            state=QUEUED,
            attempts=2,
            last_error="421 busy",
            next_attempt_at=1300.0,
        )
        bob = replace(
            alice,
            id="M1.2",
            seq=2,
            recipient="bob@example.com",
            state=HELD,
            attempts=1,
            last_error="550 no",
            next_attempt_at=1000.0,
        )
        old_entries = [alice, bob]
        assert result_of(store.list_entries()) == old_entries
        assert result_of(store.list_shadow_copies()) == [
            ShadowCopy("M1", "bob@example.com", "INBOX", 1000.5)
        ]
        assert result_of(store.list_events()) == [
            Event(1, 30.0, "domain.added", "protecting", "example.com", {"a": 1})
        ]
        assert result_of(store.list_statuses()) == []
        assert result_of(store.list_outages()) == []

        # ... and every new method works on them.
        assert result_of(store.due_domains(1300.0)) == ["example.com"]
        assert result_of(store.due_entries("example.com", 1300.0, 10)) == old_entries[:1]
        delivered = result_of(
            store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1400.0))
        )
        assert (delivered.state, delivered.attempts, delivered.delivered_at) == (
            DELIVERED,
            3,
            1400.0,
        )
        updated = result_of(
            store.update_domain(
                Domain("example.com", RelayTarget("mx.example.com", 2525), "both", monitored=False)
            )
        )
        assert result_of(store.get_domain("example.com")) == updated
        assert updated.created_at == 10.0
    finally:
        result_of(store.close())

    # Once upgraded, opening again changes nothing.
    again = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    again.open()
    assert sql(again, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert entry(again, "M1.1").state == DELIVERED
    result_of(again.close())


# -- schema version 3: queue administration


def test_a_v2_database_upgrades_to_v3_and_takes_control_requests(data_dir: Path) -> None:
    build_v1_database(data_dir)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=2) == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "control_requests" not in tables  # really version 2
    finally:
        conn.close()
    store = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    store.open()
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert [e.id for e in result_of(store.list_entries())] == ["M1.1", "M1.2"]
        assert result_of(store.last_request_id()) == 0
        first = result_of(store.request("flush", "example.com", 2000.0))
        assert [r.domain for r in result_of(store.requests_after(0))] == ["example.com"]
    finally:
        result_of(store.close())
    # Another process (the server) sees the CLI's request, and ids keep growing after reopening.
    again = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    again.open()
    try:
        assert result_of(again.last_request_id()) == first
        assert result_of(again.request("flush", None, 2001.0)) > first
    finally:
        result_of(again.close())


def test_at_most_one_open_outage_per_domain(store: SQLiteStore) -> None:
    # The schema enforces it, not just the code: a second open row for a domain is refused.
    result_of(store.open_outage("example.com", 100.0, "down"))
    with pytest.raises(StorageError, match="UNIQUE"):
        sql(
            store, "INSERT INTO outages (domain, started_at, reason) VALUES ('example.com', 1, 'x')"
        )
    # Closed ones may be many.
    result_of(store.close_outage("example.com", 200.0))
    result_of(store.open_outage("example.com", 300.0, "down again"))
    result_of(store.close_outage("example.com", 400.0))
    assert len(result_of(store.list_outages("example.com"))) == 2


def test_results_statuses_and_outages_survive_reopening(data_dir: Path, clock: task.Clock) -> None:
    first = SQLiteStore(data_dir, clock, SyncExecutor())
    first.open(recover=True)
    deliver(first, "M1", (ALICE, BOB))
    result_of(first.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1100.0)))
    result_of(first.record_result(AttemptResult("M1.2", DEFERRED_OUTCOME, "421", 1100.0, 1500.0)))
    status = result_of(first.save_status(DomainStatus("example.com", "down", 1000.0, 3)))
    outage = result_of(first.open_outage("example.com", 1000.0, "3 probes failed"))
    entries = result_of(first.list_entries())
    result_of(first.close())

    second = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    second.open(recover=True)
    try:
        assert result_of(second.list_entries()) == entries
        assert [e.state for e in entries] == [DELIVERED, QUEUED]
        assert result_of(second.list_statuses()) == [status]
        assert result_of(second.list_outages()) == [outage]
        assert result_of(second.open_outage("example.com", 2000.0, "again")) == outage
    finally:
        result_of(second.close())


def test_read_body_range_of_inline_and_file_bodies(data_dir: Path, clock: task.Clock) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    clock.advance(JAN_2)
    big = BODY + bytes(range(256)) * (INLINE_LIMIT // 128)
    deliver(store, "SMALL")
    deliver(store, "BIG", body=big)
    assert sql(store, "SELECT id, body_path IS NULL FROM messages ORDER BY id") == [
        ("BIG", 0),
        ("SMALL", 1),
    ]
    for message_id, body in (("SMALL", BODY), ("BIG", big)):
        for offset, length in ((0, 7), (len(body) // 2, 1000), (len(body) - 3, 10), (len(body), 5)):
            got = result_of(store.read_body_range(message_id, offset, length))
            assert got == body[offset : offset + length], (message_id, offset, length)
    # An inline body is sliced by the database: only the range leaves it.
    statements: list[str] = []
    result_of(store._with_connection("trace", lambda c: c.set_trace_callback(statements.append)))
    result_of(store.read_body_range("SMALL", 10, 5))
    assert any("substr(b.data, 11, 5)" in s for s in statements), statements
    result_of(store.close())


def test_due_queries_use_the_due_index(store: SQLiteStore) -> None:
    deliver(store, "M1", (ALICE, CAROL))
    statements: list[str] = []
    result_of(store._with_connection("trace", lambda c: c.set_trace_callback(statements.append)))
    result_of(store.due_domains(5000.0))
    result_of(store.due_entries("example.com", 5000.0, 10))
    result_of(store._with_connection("untrace", lambda c: c.set_trace_callback(None)))
    assert len(statements) == 2
    for statement in statements:
        plan = [str(row[-1]) for row in sql(store, "EXPLAIN QUERY PLAN " + statement)]
        assert any("USING COVERING INDEX queue_state_domain_due" in step for step in plan), plan
        # No full scan of a table (``SCAN queued`` is the CTE that walks the domains).
        scanned = {step.split()[1] for step in plan if step.startswith("SCAN ")}
        assert scanned <= {"queued"}, plan


def test_record_result_on_a_closed_store_fails_through_the_deferred(store: SQLiteStore) -> None:
    deliver(store, "M1")
    result_of(store.close())
    d = store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1100.0))
    fails_with(d, StorageError)
    fails_with(store.change_state("M1.1", (QUEUED,), HELD, 1100.0, ""), StorageError)
    fails_with(store.read_body_range("M1", 0, 10), StorageError)
    fails_with(store.save_status(DomainStatus("example.com")), StorageError)


# -- delivery results go through group commit


def settle(executor: ManualExecutor, d: Deferred[T]) -> T:
    executor.run_all()
    return result_of(d)


def test_results_requested_during_a_batch_share_the_next_one_with_commits(
    manual: tuple[SQLiteStore, ManualExecutor], data_dir: Path
) -> None:
    store, executor = manual
    settle(executor, store_message(store, "M0", BODY, (ALICE, CAROL), received_at=1000.0))
    statements = trace_statements(store, executor)
    submitted = executor.submitted

    first = store.record_result(AttemptResult("M0.1", DEFERRED_OUTCOME, "421 a", 1100.0, 1200.0))
    assert executor.pending == 1  # batch 1 is on its way to the storage thread
    writer = store.begin("M1")
    result_of(writer.write(BODY))
    later = [
        store.record_result(AttemptResult("M0.1", DELIVERED_OUTCOME, "250 ok", 1300.0)),
        store.record_result(AttemptResult("M0.2", DEFERRED_OUTCOME, "421 b", 1300.0, 1400.0)),
        store.record_result(AttemptResult("M0.2", HELD_OUTCOME, "550 no", 1350.0)),
    ]
    commit = writer.commit(incoming(ALICE))
    assert executor.pending == 1  # the others wait for it, they are not submitted yet

    executor.run_next()  # batch 1: the first result alone
    assert result_of(first).attempts == 1
    assert not commit.called and not any(d.called for d in later)  # not durable yet: not fired
    assert executor.pending == 1  # batch 2: everything that waited
    statements.clear()

    executor.run_next()
    assert executor.pending == 0
    assert executor.submitted == submitted + 2  # two batches, one executor call each
    assert statements.count("BEGIN IMMEDIATE") == 1  # ... and one transaction for all four
    assert statements.count("COMMIT") == 1
    assert result_of(commit).id == "M1"
    delivered, deferred, held = (result_of(d) for d in later)
    assert (delivered.state, delivered.attempts, delivered.delivered_at) == (DELIVERED, 2, 1300.0)
    assert (deferred.state, deferred.attempts, deferred.next_attempt_at) == (QUEUED, 1, 1400.0)
    assert (held.state, held.attempts, held.last_error) == (HELD, 2, "550 no")  # in request order

    # Committed when the Deferreds fired: another process sees all of it.
    cli = SQLiteStore(data_dir, task.Clock(), SyncExecutor(), inline_limit=FILES)
    cli.open()
    assert entry(cli, "M0.1") == delivered
    assert entry(cli, "M0.2") == held
    assert [e.id for e in result_of(cli.list_entries())] == ["M0.1", "M0.2", "M1.1"]
    result_of(cli.close())


def test_a_refused_result_fails_alone_in_its_batch(
    manual: tuple[SQLiteStore, ManualExecutor],
) -> None:
    store, executor = manual
    settle(executor, store_message(store, "M0", BODY, (ALICE, CAROL)))
    done = settle(
        executor, store.record_result(AttemptResult("M0.2", DELIVERED_OUTCOME, "250", 1100.0))
    )
    statements = trace_statements(store, executor)

    blocker = store.record_result(AttemptResult("M0.1", DEFERRED_OUTCOME, "421", 1200.0, 1300.0))
    writer = store.begin("M1")
    result_of(writer.write(BODY))
    unknown = store.record_result(AttemptResult("M9.1", DELIVERED_OUTCOME, "250", 1200.0))
    again = store.record_result(AttemptResult("M0.2", BOUNCED_OUTCOME, "550", 1200.0))
    fine = store.record_result(AttemptResult("M0.1", DELIVERED_OUTCOME, "250 ok", 1250.0))
    commit = writer.commit(incoming(ALICE))
    executor.run_next()
    result_of(blocker)
    statements.clear()
    executor.run_next()
    assert statements.count("COMMIT") == 1
    fails_with(unknown, NoSuchEntry)
    fails_with(again, QueueStateError)
    assert result_of(fine).state == DELIVERED
    assert result_of(commit).id == "M1"
    final = store.get_entry("M0.2")
    assert settle(executor, final) == done  # delivered stays delivered


def test_a_failed_batch_transaction_fails_its_results_and_commits(
    manual: tuple[SQLiteStore, ManualExecutor], data_dir: Path
) -> None:
    store, executor = manual
    settle(executor, store_message(store, "M0", BODY, (ALICE, CAROL)))
    before = settle(executor, store.list_entries())
    trigger = store._with_connection(
        "trigger",
        lambda c: c.execute(
            "CREATE TEMP TRIGGER boom BEFORE UPDATE ON queue"
            " WHEN NEW.last_error = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ),
    )
    settle(executor, trigger)

    blocker = store.record_result(AttemptResult("M0.1", DEFERRED_OUTCOME, "421", 1100.0, 1200.0))
    writer = store.begin("M1")
    result_of(writer.write(BODY))
    fine = store.record_result(AttemptResult("M0.2", DELIVERED_OUTCOME, "250 ok", 1150.0))
    commit = writer.commit(incoming(ALICE))
    boom = store.record_result(AttemptResult("M0.1", BOUNCED_OUTCOME, "boom", 1160.0))
    executor.run_next()
    blocked = result_of(blocker)
    executor.run_next()
    for d in (fine, commit, boom):
        error = fails_with(d, StorageError)
        assert "boom" in str(error)
    assert settle(executor, store.list_entries()) == [blocked, before[1]]  # nothing of batch 2
    assert settle(executor, store.get_message("M1")) is None
    assert body_files(data_dir) == ["messages/19700101/M0"]
    result_of(writer.abort())

    # Rolled back: the store keeps working.
    again = store.record_result(AttemptResult("M0.2", DELIVERED_OUTCOME, "250 ok", 1170.0))
    assert settle(executor, again).state == DELIVERED


# -- schema version 4: shadow mailboxes (#4)

ALICE_USER = "alice@example.com"


def test_a_v3_database_upgrades_to_v4_and_serves_mailboxes(data_dir: Path) -> None:
    build_v1_database(data_dir)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=3) == 1
        conn.execute("INSERT INTO control_requests (action, domain, at) VALUES ('flush', NULL, 5)")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "mailboxes" not in tables  # really version 3
    finally:
        conn.close()
    store = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    store.open()
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        tables = {n for (n,) in sql(store, "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"mailboxes", "mailbox_messages", "message_mime"} <= tables
        indexes = {n for (n,) in sql(store, "SELECT name FROM sqlite_master WHERE type='index'")}
        assert {
            "mailboxes_domain",
            "mailbox_messages_modseq",
            "mailbox_messages_date",
            "mailbox_messages_message_id",
        } <= indexes
        # The old data is all there ...
        assert [e.id for e in result_of(store.list_entries())] == ["M1.1", "M1.2"]
        assert result_of(store.read_body("M1")) == b"A: 1\r\n\r\nx"
        assert [c.recipient for c in result_of(store.list_shadow_copies())] == ["bob@example.com"]
        assert result_of(store.last_request_id()) == 1
        # ... and the message stored before the upgrade can go into a mailbox.
        result_of(store.ensure_user("bob@example.com"))
        added = result_of(store.add_message("bob@example.com", "INBOX", "M1", 1000.0))
        assert (added.uid, added.size) == (1, 9)
        assert result_of(store.unreferenced_messages()) == []  # M1.1 is still queued
    finally:
        result_of(store.close())


def test_mailboxes_survive_close_and_reopen(data_dir: Path, clock: task.Clock) -> None:
    clock.advance(1_700_000_000)
    first = SQLiteStore(data_dir, clock, SyncExecutor())
    first.open(recover=True)
    deliver(first, "M1", ())
    deliver(first, "M2", ())
    result_of(first.ensure_user(ALICE_USER))
    result_of(first.create_mailbox(ALICE_USER, "Work/2024"))
    result_of(first.subscribe(ALICE_USER, "Work/2024"))
    result_of(first.add_message(ALICE_USER, "INBOX", "M1", 100.0, ["\\Seen"], b'{"i": 1}'))
    result_of(first.add_message(ALICE_USER, "INBOX", "M2", 200.0, ["$Label1"]))
    result_of(first.store_flags(ALICE_USER, "INBOX", [2], FLAGS_ADD, ["\\Flagged"]))
    result_of(first.move_messages(ALICE_USER, "INBOX", [1], "Work/2024"))
    result_of(first.claim_recent(ALICE_USER, "INBOX"))
    result_of(first.create_mailbox(ALICE_USER, "Gone"))
    result_of(first.subscribe(ALICE_USER, "Gone"))
    result_of(first.delete_mailbox(ALICE_USER, "Gone"))
    boxes = result_of(first.list_mailboxes(ALICE_USER))
    assert [(b.name, b.first_recent) for b in boxes if b.name in ("INBOX", "Work/2024")] == [
        ("INBOX", 3),
        ("Work/2024", 1),
    ]
    inbox = result_of(first.list_messages(ALICE_USER, "INBOX"))
    work = result_of(first.list_messages(ALICE_USER, "Work/2024"))
    result_of(first.close())

    # A clock that went back (or a restarted test clock) must not bring a UIDVALIDITY back.
    second = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    second.open(recover=True)
    try:
        assert result_of(second.list_mailboxes(ALICE_USER)) == boxes  # first_recent too
        assert result_of(second.list_subscriptions(ALICE_USER)) == [
            "Drafts",
            "Gone",
            "INBOX",
            "Junk",
            "Sent",
            "Trash",
            "Work/2024",
        ]
        assert result_of(second.list_messages(ALICE_USER, "INBOX")) == inbox
        assert result_of(second.list_messages(ALICE_USER, "Work/2024")) == work
        assert inbox[0].flags == frozenset({"$Label1", "\\Flagged"})
        assert result_of(second.mime_indexes(ALICE_USER, "Work/2024", [1])) == {1: b'{"i": 1}'}
        new = result_of(second.create_mailbox(ALICE_USER, "Later"))
        assert new.uidvalidity > max(b.uidvalidity for b in boxes)
        assert result_of(second.add_message(ALICE_USER, "INBOX", "M1", 300.0)).uid == 3
    finally:
        result_of(second.close())


def test_a_failed_mailbox_transaction_changes_nothing(store: SQLiteStore) -> None:
    result_of(store.ensure_user(ALICE_USER))
    deliver(store, "M1", ())
    result_of(store.add_message(ALICE_USER, "INBOX", "M1", 100.0))
    before = (result_of(store.list_mailboxes(ALICE_USER)), sql(store, "SELECT * FROM meta"))
    # MOVE inserts into Trash first, then deletes from INBOX: make the delete fail.
    sql(
        store,
        "CREATE TRIGGER no_delete BEFORE DELETE ON mailbox_messages"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    fails_with(store.move_messages(ALICE_USER, "INBOX", [1], "Trash"), StorageError)
    fails_with(store.move_messages(ALICE_USER, "INBOX", [1], "INBOX"), StorageError)
    # Renaming INBOX creates a mailbox (a new UIDVALIDITY in meta), then empties INBOX.
    fails_with(store.rename_mailbox(ALICE_USER, "INBOX", "Old"), StorageError)
    assert (result_of(store.list_mailboxes(ALICE_USER)), sql(store, "SELECT * FROM meta")) == before
    assert result_of(store.list_messages(ALICE_USER, "Trash")) == []
    assert [m.uid for m in result_of(store.list_messages(ALICE_USER, "INBOX"))] == [1]
    sql(store, "DROP TRIGGER no_delete")
    assert result_of(store.move_messages(ALICE_USER, "INBOX", [1], "Trash")).pairs == ((1, 1),)


def test_rows_of_other_users_are_never_touched(store: SQLiteStore) -> None:
    # Names with LIKE wildcards, and users whose addresses share a prefix: the queries compare
    # exact strings, so nothing leaks across users or across names that merely look alike.
    users = ["al@example.com", "alice@example.com", "alice@example.com.test"]
    for user in users:
        result_of(store.ensure_user(user))
        result_of(store.create_mailbox(user, "a_c/x"))
        result_of(store.create_mailbox(user, "abc/x"))
        result_of(store.create_mailbox(user, "a_cd"))
        for name in ("a_c", "a_c/x", "a_cd"):
            result_of(store.subscribe(user, name))
    deliver(store, "M1", ())
    for user in users:
        result_of(store.add_message(user, "abc/x", "M1", 100.0, ["\\Deleted"]))

    def rows_of(user: str) -> list[tuple[Any, ...]]:
        return sql(
            store,
            "SELECT b.*, mm.uid, mm.flags, mm.modseq FROM mailboxes AS b"
            " LEFT JOIN mailbox_messages AS mm ON mm.mailbox_id = b.id"
            " WHERE b.owner = ? ORDER BY b.name, mm.uid",
            (user,),
        ) + sql(store, "SELECT * FROM subscriptions WHERE owner = ? ORDER BY name", (user,))

    others = {user: rows_of(user) for user in users[1:]}
    actor = users[0]
    result_of(store.rename_mailbox(actor, "a_c", "renamed"))
    fails_with(store.delete_mailbox(actor, "abc"), MailboxHasChildren)  # a real child
    result_of(store.delete_mailbox(actor, "a_cd"))  # a_c/... is not a child of a_cd
    result_of(store.unsubscribe(actor, "a_cd"))
    result_of(store.store_flags(actor, "abc/x", [1], FLAGS_ADD, ["\\Seen"]))
    result_of(store.expunge(actor, "abc/x"))
    assert result_of(store.purge_older_than("com.test", 1e9)) == []  # no user is in com.test
    assert result_of(store.list_messages(actor, "abc/x")) == []
    assert [b.name for b in result_of(store.list_mailboxes(actor))] == [
        "Drafts",
        "INBOX",
        "Junk",
        "Sent",
        "Trash",
        "abc",
        "abc/x",
        "renamed",
        "renamed/x",
    ]
    assert result_of(store.list_subscriptions(actor)) == [
        "Drafts",
        "INBOX",
        "Junk",
        "Sent",
        "Trash",
        "renamed",
        "renamed/x",
    ]
    assert {user: rows_of(user) for user in users[1:]} == others
    # Each user's mailboxes carry the user's own domain, which is what retention selects on.
    assert sql(store, "SELECT DISTINCT owner, domain FROM mailboxes ORDER BY owner") == [
        ("al@example.com", "example.com"),
        ("alice@example.com", "example.com"),
        ("alice@example.com.test", "example.com.test"),
    ]


def test_mailbox_queries_use_their_indexes(store: SQLiteStore) -> None:
    def plan(query: str, params: tuple[Any, ...]) -> str:
        return " ".join(str(row[-1]) for row in sql(store, "EXPLAIN QUERY PLAN " + query, params))

    assert "mailbox_messages_modseq" in plan(
        "SELECT uid FROM mailbox_messages WHERE mailbox_id = ? AND modseq > ?", (1, 5)
    )
    assert "mailbox_messages_message_id" in plan(
        "SELECT 1 FROM mailbox_messages WHERE message_id = ?", ("M1",)
    )
    assert "mailboxes_domain" in plan("SELECT id FROM mailboxes WHERE domain = ?", ("x.test",))
    # Every mailbox read looks its subscription up by primary key, never by a scan.
    subscribed = plan(
        "SELECT 1 FROM subscriptions WHERE owner = ? AND name = ?", ("a@x.test", "INBOX")
    )
    assert "USING PRIMARY KEY" in subscribed and "SCAN" not in subscribed
    listed = plan("SELECT name FROM subscriptions WHERE owner = ? ORDER BY name", ("a@x.test",))
    assert "USING PRIMARY KEY" in listed and "TEMP B-TREE" not in listed


# -- schema version 5: synced credentials (#4)

SHA512_HASH = "{SHA512-CRYPT}$6$salt$hash"
BLF_HASH = "{BLF-CRYPT}$2y$05$hash"


def test_a_v4_database_upgrades_to_v5_and_keeps_its_mailboxes(data_dir: Path) -> None:
    build_v1_database(data_dir)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=4) == 1
        conn.execute(
            "INSERT INTO mailboxes (owner, domain, name, uidvalidity, uidnext, highest_modseq,"
            " special_use, subscribed) VALUES ('bob@example.com', 'example.com', 'INBOX',"
            " 7, 1, 1, NULL, 1)"
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "users" not in tables  # really version 4
        assert schema_version(conn) == 4
    finally:
        conn.close()
    store = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    store.open()
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        indexes = {n for (n,) in sql(store, "SELECT name FROM sqlite_master WHERE type='index'")}
        assert "users_domain" in indexes
        # The old data is all there ...
        assert [e.id for e in result_of(store.list_entries())] == ["M1.1", "M1.2"]
        assert [
            (b.name, b.uidvalidity) for b in result_of(store.list_mailboxes("bob@example.com"))
        ] == [("INBOX", 7)]
        # ... and users can be synced, with a version that starts at 0.
        assert result_of(store.credentials_version()) == 0
        assert result_of(store.has_user_list("example.com")) is False
        result_of(store.set_user("bob@example.com", SHA512_HASH))
        assert result_of(store.credentials_version()) == 1
        assert result_of(store.get_user("bob@example.com")) == SHA512_HASH
    finally:
        result_of(store.close())


def test_users_survive_close_and_reopen(data_dir: Path, clock: task.Clock) -> None:
    first = SQLiteStore(data_dir, clock, SyncExecutor())
    first.open(recover=True)
    result_of(
        first.replace_users(
            "example.com",
            [
                UserCredential("alice@example.com", SHA512_HASH),
                UserCredential("bob@example.com", BLF_HASH),
            ],
        )
    )
    result_of(first.set_user("carol@example.net", BLF_HASH))
    result_of(first.remove_user("bob@example.com"))
    version = result_of(first.credentials_version())
    result_of(first.close())

    second = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    second.open(recover=True)
    try:
        assert result_of(second.list_users("example.com")) == [
            UserCredential("alice@example.com", SHA512_HASH)
        ]
        assert result_of(second.list_users("example.net")) == [
            UserCredential("carol@example.net", BLF_HASH)
        ]
        assert result_of(second.credentials_version()) == version == 3
        # Stored as given: the hash text only, keyed by canonical address and domain.
        assert sql(second, "SELECT * FROM users ORDER BY address") == [
            ("alice@example.com", "example.com", SHA512_HASH),
            ("carol@example.net", "example.net", BLF_HASH),
        ]
    finally:
        result_of(second.close())


def test_a_failed_replace_changes_nothing(store: SQLiteStore) -> None:
    result_of(store.replace_users("example.com", [UserCredential("alice@example.com", BLF_HASH)]))
    # Make the transaction fail after the deletes: the rollback must bring alice back.
    sql(
        store,
        "CREATE TRIGGER no_bob BEFORE INSERT ON users WHEN NEW.address = 'bob@example.com'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    d = store.replace_users("example.com", [UserCredential("bob@example.com", SHA512_HASH)])
    fails_with(d, StorageError)
    assert result_of(store.list_users("example.com")) == [
        UserCredential("alice@example.com", BLF_HASH)
    ]
    assert result_of(store.credentials_version()) == 1


def test_user_queries_use_their_indexes(store: SQLiteStore) -> None:
    plan = " ".join(
        str(row[-1])
        for row in sql(
            store, "EXPLAIN QUERY PLAN SELECT address FROM users WHERE domain = ? LIMIT 1", ("x",)
        )
    )
    assert "users_domain" in plan


def test_a_v5_database_upgrades_to_v6_and_its_domains_refuse_unknown_users(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=5) == 0  # the version it had: a new database
    assert schema_version(conn) == 5
    conn.execute(
        "INSERT INTO domains (name, created_at, updated_at, relay_host, relay_port, mode)"
        " VALUES ('old.test', 1, 1, 'mx.old.test', 25, 'relay')"
    )
    conn.close()
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    (old,) = result_of(store.list_domains())
    assert (old.name, old.accept_unknown) == ("old.test", False)
    result_of(store.update_domain(replace(old, accept_unknown=True)))
    updated = result_of(store.get_domain("old.test"))
    assert updated is not None and updated.accept_unknown is True
    result_of(store.close())


# -- intake in delivery mode "both": the INBOX copy is part of the message's commit

BOB_USER = "bob@example.com"
DAVE = Delivery("dave@example.net", "example.net", shadow=True)


def test_a_failed_inbox_insert_leaves_neither_the_message_nor_the_inbox(
    store: SQLiteStore, data_dir: Path
) -> None:
    # A crash-like failure at the very last statement of the commit: the INBOX row.
    sql(
        store,
        "CREATE TRIGGER no_inbox BEFORE INSERT ON mailbox_messages"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    error = fails_with(
        store_message(store, "M1", BODY, (ALICE, BOB, DAVE), received_at=1000.0), StorageError
    )
    assert "refused by test" in str(error)
    assert_nothing_stored(store, "M1")
    assert body_files(data_dir) == []
    # The mailboxes made for the commit and the MIME index went with it.
    assert sql(store, "SELECT count(*) FROM mailboxes") == [(0,)]
    assert sql(store, "SELECT count(*) FROM message_mime") == [(0,)]
    assert sql(store, "SELECT value FROM meta WHERE key = 'last_uidvalidity'") == [(0,)]
    sql(store, "DROP TRIGGER no_inbox")
    deliver(store, "M1", (ALICE, BOB, DAVE))
    assert [m.uid for m in result_of(store.list_messages(BOB_USER, "INBOX"))] == [1]


def test_shadow_copies_in_one_batch_share_its_transaction(
    manual: tuple[SQLiteStore, ManualExecutor],
) -> None:
    store, executor = manual
    statements = trace_statements(store, executor)
    writers = [store.begin(f"M{n}") for n in range(3)]
    for writer in writers:
        writer.write(BODY)
    executor.run_all()
    statements.clear()
    commits = [
        writer.commit(incoming(BOB, DAVE, received_at=1000.0 + n))
        for n, writer in enumerate(writers)
    ]
    executor.run_next()  # M0 alone, then M1 and M2 together
    executor.run_next()
    assert [result_of(d).id for d in commits] == ["M0", "M1", "M2"]
    assert statements.count("COMMIT") == 2  # one transaction per batch, INBOX rows included
    for user in (BOB_USER, "dave@example.net"):
        listing = store.list_messages(user, "INBOX")
        executor.run_all()
        assert [(m.uid, m.message_id, m.internal_date) for m in result_of(listing)] == [
            (1, "M0", 1000.0),
            (2, "M1", 1001.0),
            (3, "M2", 1002.0),
        ]
    indexes = store.mime_indexes(BOB_USER, "INBOX", [1, 2, 3])
    executor.run_all()
    found: dict[int, bytes] = result_of(indexes)
    assert sorted(found) == [1, 2, 3]


def test_a_message_that_cannot_be_indexed_is_still_committed(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(stream: Any, size: int) -> Any:
        raise RuntimeError("indexer bug")

    monkeypatch.setattr(store, "_indexer", broken)
    assert deliver(store, "M1", (BOB,)).id == "M1"
    assert [m.message_id for m in result_of(store.list_messages(BOB_USER, "INBOX"))] == ["M1"]
    assert result_of(store.mime_indexes(BOB_USER, "INBOX", [1])) == {}  # IMAP indexes it later


def test_only_messages_with_shadow_copies_are_indexed(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strata_twisted.proto import mime

    indexed: list[int] = []

    def counting(stream: Any, size: int) -> bytes:
        indexed.append(size)
        return mime.index_bytes(stream, size)

    monkeypatch.setattr(store, "_indexer", counting)
    deliver(store, "M1", (ALICE, CAROL))
    assert indexed == []
    big = BODY + b"z" * (300 * 1024)
    deliver(store, "M2", (ALICE, BOB, DAVE), body=big)  # a body file: indexed from the file
    assert indexed == [len(big)]  # once, for both INBOX copies
    assert sql(store, "SELECT message_id FROM message_mime") == [("M2",)]
    assert sql(store, "SELECT body_path IS NOT NULL FROM messages WHERE id = 'M2'") == [(1,)]


# -- the portal policy and retention (#4): migration 7 and delete_messages


def test_a_v6_database_upgrades_to_v7_and_its_domains_get_the_default_portal(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=6) == 0
    conn.execute(
        "INSERT INTO domains (name, created_at, updated_at, relay_host, relay_port, mode)"
        " VALUES ('old.test', 1, 1, 'mx.old.test', 25, 'both')"
    )
    conn.close()
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    (old,) = result_of(store.list_domains())
    assert (old.name, old.portal, old.retention_days) == ("old.test", "outage", None)
    result_of(store.update_domain(replace(old, portal="open", retention_days=7)))
    updated = result_of(store.get_domain("old.test"))
    assert updated is not None and (updated.portal, updated.retention_days) == ("open", 7)
    assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    result_of(store.close())


def test_a_v7_database_upgrades_to_v8_and_its_domains_have_no_alert_targets(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=7) == 0
    conn.execute(
        "INSERT INTO domains (name, created_at, updated_at, relay_host, relay_port, mode)"
        " VALUES ('old.test', 1, 1, 'mx.old.test', 25, 'relay')"
    )
    conn.close()
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    (old,) = result_of(store.list_domains())
    assert (old.alert_email, old.alert_webhook, old.alert_webhook_auth) == (None, None, None)
    result_of(
        store.update_domain(
            replace(old, alert_webhook="https://sms.example/hook", alert_webhook_auth="Bearer x")
        )
    )
    updated = result_of(store.get_domain("old.test"))
    assert updated is not None
    assert (updated.alert_webhook, updated.alert_webhook_auth) == (
        "https://sms.example/hook",
        "Bearer x",
    )
    assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    result_of(store.close())


# -- submission (#5): migration 9, outbound entries and delay notices


def test_a_v8_database_upgrades_to_v9_and_its_entries_are_inbound_and_never_notified(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "messages").mkdir()
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=8) == 0
    columns = {row[1] for row in conn.execute("PRAGMA table_info(queue)")}
    assert "outbound" not in columns and "delay_notified_at" not in columns  # really version 8
    conn.executescript(
        """
        BEGIN;
        INSERT INTO messages VALUES ('M1', 'sender@example.org',
            '["alice@example.com", "carol@example.net"]', '192.0.2.1', 'client.example',
            0, 0, 1000.0, 9, '<1@example.org>', NULL);
        INSERT INTO bodies VALUES ('M1', X'413A20310D0A0D0A78');
        INSERT INTO queue (id, message_id, domain, recipient, state, attempts, last_error,
            next_attempt_at, created_at, delivered_at, delivery_reply)
            VALUES ('M1.1', 'M1', 'example.com', 'alice@example.com', 'delivered', 1, NULL,
                    1000.0, 1000.5, 1100.0, '250 ok'),
                   ('M1.2', 'M1', 'example.net', 'carol@example.net', 'queued', 2,
                    '421 busy', 1300.0, 1000.5, NULL, NULL);
        COMMIT;
        """
    )
    conn.close()

    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        old = result_of(store.list_entries())
        assert [(e.id, e.outbound, e.delay_notified_at) for e in old] == [
            ("M1.1", False, None),
            ("M1.2", False, None),
        ]
        assert (old[1].state, old[1].attempts, old[1].last_error) == (QUEUED, 2, "421 busy")
        assert result_of(store.received_since("example.com", 1000.0)) == (1, 1)
        # The new methods and columns work on the old rows, and beside new outbound ones.
        result_of(store.mark_delay_notified(["M1.2"], 2000.0))
        assert entry(store, "M1.2") == replace(old[1], delay_notified_at=2000.0)
        deliver(store, "M2", (ZOE,), received_at=3000.0)
        assert entry(store, "M2.1").outbound
        assert sql(store, "SELECT id, outbound FROM queue ORDER BY seq") == [
            ("M1.1", 0),
            ("M1.2", 0),
            ("M2.1", 1),
        ]
    finally:
        result_of(store.close())


def _delivered(store: SQLiteStore, *message_ids: str) -> None:
    for message_id in message_ids:
        sql(store, "UPDATE queue SET state = ? WHERE message_id = ?", (DELIVERED, message_id))


def test_delete_messages_checks_and_deletes_in_one_transaction(
    manual: tuple[SQLiteStore, ManualExecutor],
) -> None:
    # The re-check and the deletes run under one write lock, so a change to the queue from the
    # CLI (another process) cannot land between them; the file goes after the COMMIT.
    store, executor = manual
    stored = store_message(store, "M1", BODY, (ALICE,), received_at=1000.0)
    executor.run_all()
    result_of(stored)
    updated = store._with_connection(
        "test", lambda c: c.execute("UPDATE queue SET state = ?", (DELIVERED,)).rowcount
    )
    executor.run_all()
    assert result_of(updated) == 1
    statements = trace_statements(store, executor)
    deleted = store.delete_messages(["M1"])
    assert executor.run_all() == 1
    assert result_of(deleted) == 1
    begin = statements.index("BEGIN IMMEDIATE")
    commit = statements.index("COMMIT")
    checks = [i for i, s in enumerate(statements) if s.startswith("SELECT m.id, m.body_path")]
    deletes = [i for i, s in enumerate(statements) if s.startswith("DELETE FROM")]
    assert len(checks) == 1 and len(deletes) == 5
    assert begin < checks[0] < min(deletes) and max(deletes) < commit
    assert body_files(store.data_dir) == []


def test_a_failed_delete_deletes_nothing(store: SQLiteStore, data_dir: Path) -> None:
    deliver(store, "M1", (ALICE, BOB))
    _delivered(store, "M1")
    result_of(store.purge_older_than("example.com", 2000.0))
    sql(
        store,
        "CREATE TRIGGER no_delete BEFORE DELETE ON messages"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    error = fails_with(store.delete_messages(["M1"]), StorageError)
    assert "refused by test" in str(error)
    # Rolled back as a whole: the record, its entries, its copy record and its file all stay.
    assert result_of(store.read_body("M1")) == BODY
    assert len(result_of(store.entries_for_message("M1"))) == 2
    assert len(result_of(store.list_shadow_copies())) == 1
    assert sql(store, "SELECT count(*) FROM message_mime") == [(1,)]
    assert body_files(data_dir) == ["messages/19700101/M1"]
    sql(store, "DROP TRIGGER no_delete")
    assert result_of(store.delete_messages(["M1"])) == 1
    assert body_files(data_dir) == []


def test_a_body_file_that_cannot_be_unlinked_is_swept_later(
    data_dir: Path, clock: task.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    store.open(recover=True)
    deliver(store, "M1")
    deliver(store, "M2")
    _delivered(store, "M1", "M2")
    real_unlink = Path.unlink

    def refuse(path: Path, missing_ok: bool = False) -> None:
        if path.name == "M1":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    # The records are gone (the deletion counts); the file is an orphan, the other one went.
    assert result_of(store.delete_messages(["M1", "M2"])) == 2
    assert result_of(store.get_message("M1")) is None
    assert body_files(data_dir) == ["messages/19700101/M1"]
    monkeypatch.undo()
    result_of(store.close())
    reopened = SQLiteStore(data_dir, clock, SyncExecutor(), inline_limit=FILES)
    reopened.open(recover=True)
    assert body_files(data_dir) == []
    result_of(reopened.close())


def test_delete_messages_uses_the_indexes(store: SQLiteStore) -> None:
    from strata_twisted.storage.sqlite import _DELETE_MESSAGE_ROWS, _UNREFERENCED

    plans = [
        " ".join(row[-1] for row in sql(store, "EXPLAIN QUERY PLAN " + statement, params))
        for statement, params in [
            (_UNREFERENCED, ('["M1"]', QUEUED, HELD)),
            *((statement, ('["M1"]',)) for statement in _DELETE_MESSAGE_ROWS),
        ]
    ]
    # Only the list of ids asked for (json_each, j) is scanned; every table is searched by key.
    scanned = {name for plan in plans for name in re.findall(r"SCAN (\w+)", plan)}
    assert scanned <= {"json_each", "j"}, plans
    assert "SEARCH m USING INDEX sqlite_autoindex_messages_1 (id=?)" in plans[0]


# -- send-as aliases (#5): migration 10


def test_a_v9_database_upgrades_to_v10_and_its_users_get_send_as_aliases(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=9) == 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "send_as_aliases" not in tables  # really version 9
    conn.executemany(
        "INSERT INTO users VALUES (?, 'example.com', ?)",
        [("alice@example.com", SHA512_HASH), ("bob@example.com", BLF_HASH)],
    )
    conn.execute("UPDATE meta SET value = 2 WHERE key = 'credentials_version'")
    conn.close()

    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        indexes = {n for (n,) in sql(store, "SELECT name FROM sqlite_master WHERE type='index'")}
        assert "send_as_aliases_user" in indexes
        # The users are all there, with no aliases and the version they had ...
        assert [u.address for u in result_of(store.list_users("example.com"))] == [
            "alice@example.com",
            "bob@example.com",
        ]
        assert result_of(store.list_aliases()) == []
        assert result_of(store.credentials_version()) == 2
        # ... and the old users take aliases, which move the version and go with their user.
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        result_of(store.add_alias("alice@example.net", "alice@example.com"))
        result_of(store.add_alias("help@example.com", "bob@example.com"))
        assert result_of(store.credentials_version()) == 5
        result_of(store.remove_user("bob@example.com"))
        assert sql(store, "SELECT alias, user FROM send_as_aliases ORDER BY alias") == [
            ("alice@example.net", "alice@example.com"),
            ("sales@example.com", "alice@example.com"),
        ]
    finally:
        result_of(store.close())


def test_aliases_survive_close_and_reopen(data_dir: Path, clock: task.Clock) -> None:
    first = SQLiteStore(data_dir, clock, SyncExecutor())
    first.open(recover=True)
    result_of(first.set_user("alice@example.com", SHA512_HASH))
    result_of(first.add_alias("Sales@Example.com", "alice@example.com"))
    result_of(first.close())
    second = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    second.open(recover=True)
    try:
        assert result_of(second.list_aliases()) == [("sales@example.com", "alice@example.com")]
    finally:
        result_of(second.close())


def test_a_failed_user_removal_keeps_its_aliases(store: SQLiteStore) -> None:
    result_of(store.set_user("alice@example.com", SHA512_HASH))
    result_of(store.add_alias("sales@example.com", "alice@example.com"))
    version = result_of(store.credentials_version())
    sql(
        store,
        "CREATE TRIGGER keep_aliases BEFORE DELETE ON send_as_aliases"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    fails_with(store.remove_user("alice@example.com"), StorageError)
    # One transaction: the user is still there, and so is the alias.
    assert result_of(store.get_user("alice@example.com")) == SHA512_HASH
    assert result_of(store.list_aliases()) == [("sales@example.com", "alice@example.com")]
    assert result_of(store.credentials_version()) == version


def test_alias_queries_use_their_indexes(store: SQLiteStore) -> None:
    plan = " ".join(
        str(row[-1])
        for row in sql(
            store,
            "EXPLAIN QUERY PLAN SELECT alias, user FROM send_as_aliases WHERE user = ?"
            " ORDER BY alias",
            ("x",),
        )
    )
    assert "send_as_aliases_user" in plan


# -- the portal within a minute (#11): migration 11


def test_a_v10_database_upgrades_to_v11_and_its_statuses_have_no_run_of_failures(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    assert migrate(conn, to_version=10) == 0
    columns = {row[1] for row in conn.execute("PRAGMA table_info(domain_status)")}
    assert "failing_since" not in columns  # really version 10
    conn.execute(
        "INSERT INTO domain_status VALUES ('old.test', 'up', 100.0, 2, 0, 160.0, 'refused', NULL)"
    )
    conn.close()

    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        old = DomainStatus("old.test", "up", 100.0, 2, 0, 160.0, "refused", None, None)
        assert result_of(store.list_statuses()) == [old]
        # The monitor's next failure starts a known run on the old row.
        failing = replace(old, consecutive_failures=3, failing_since=190.0)
        result_of(store.save_status(failing))
        assert result_of(store.get_status("old.test")) == failing
    finally:
        result_of(store.close())


# -- mailbox sessions (#12): migrations 12 (\Recent) and 13 (subscriptions apart)


def test_a_v11_database_upgrades_to_v13_keeping_subscriptions_and_old_mail_not_recent(
    data_dir: Path,
) -> None:
    build_v1_database(data_dir)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=11) == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "subscriptions" not in tables  # really version 11
        conn.executescript(
            """
            BEGIN;
            INSERT INTO mailboxes (id, owner, domain, name, uidvalidity, uidnext, highest_modseq,
                special_use, subscribed)
                VALUES (1, 'bob@example.com', 'example.com', 'INBOX', 7, 4, 3, NULL, 1),
                       (2, 'bob@example.com', 'example.com', 'Work', 8, 1, 1, NULL, 0),
                       (3, 'bob@example.com', 'example.com', 'Trash', 9, 2, 2, '\\Trash', 1),
                       (4, 'al@example.com', 'example.com', 'INBOX', 10, 1, 1, NULL, 1);
            INSERT INTO mailbox_messages VALUES (1, 3, 'M1', '', 1000.0, 3);
            COMMIT;
            """
        )
    finally:
        conn.close()
    store = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    store.open()
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        bob = "bob@example.com"
        boxes = result_of(store.list_mailboxes(bob))
        assert [(b.name, b.uidnext, b.first_recent, b.subscribed) for b in boxes] == [
            ("INBOX", 4, 4, True),
            ("Trash", 2, 2, True),
            ("Work", 1, 1, False),
        ]
        # Mail from before the upgrade is not recent; what arrives after it is.
        assert result_of(store.mailbox_status(bob, "INBOX")).recent == 0
        assert result_of(store.add_message(bob, "INBOX", "M1", 2000.0)).uid == 4
        assert result_of(store.mailbox_status(bob, "INBOX")).recent == 1
        # The subscriptions moved to their own table, and outlive their mailbox from now on.
        assert sql(store, "SELECT owner, name FROM subscriptions ORDER BY owner, name") == [
            ("al@example.com", "INBOX"),
            ("bob@example.com", "INBOX"),
            ("bob@example.com", "Trash"),
        ]
        assert sql(store, "SELECT DISTINCT subscribed FROM mailboxes") == [(0,)]  # not read
        result_of(store.delete_mailbox(bob, "Trash"))
        assert result_of(store.list_subscriptions(bob)) == ["INBOX", "Trash"]
    finally:
        result_of(store.close())


def test_a_failed_claim_changes_nothing(store: SQLiteStore) -> None:
    result_of(store.ensure_user(ALICE_USER))
    deliver(store, "M1", ())
    result_of(store.add_message(ALICE_USER, "INBOX", "M1", 100.0))
    sql(
        store,
        "CREATE TRIGGER no_claim BEFORE UPDATE OF first_recent ON mailboxes"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    fails_with(store.claim_recent(ALICE_USER, "INBOX"), StorageError)
    assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).recent == 1
    sql(store, "DROP TRIGGER no_claim")
    assert result_of(store.claim_recent(ALICE_USER, "INBOX")).first_recent == 1
    assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).recent == 0


# -- schema version 14: tenancy, admin accounts, API keys, the audit log, paged listings (#13)


def test_a_v13_database_upgrades_to_v14_and_its_domains_belong_to_the_operator(
    data_dir: Path, clock: task.Clock
) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=13) == 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "resellers" not in tables  # really version 13
        conn.execute(
            "INSERT INTO domains (name, created_at, updated_at, relay_host, relay_port, mode)"
            " VALUES ('old.test', 1, 1, 'mx.old.test', 25, 'both'),"
            " ('older.test', 1, 1, 'mx.older.test', 25, 'relay')"
        )
    finally:
        conn.close()
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    try:
        assert sql(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        domains = result_of(store.list_domains())
        assert [(d.name, d.customer) for d in domains] == [("old.test", ""), ("older.test", "")]
        result_of(store.update_domain(replace(domains[0], customer="shop")))
        assert [(d.name, d.customer) for d in result_of(store.list_domains())] == [
            ("old.test", "shop"),
            ("older.test", ""),
        ]
        # The new roles work on the upgraded file.
        result_of(store.add_reseller(Reseller("acme")))
        result_of(store.add_customer(Customer("shop", "acme")))
        result_of(store.add_admin(AdminAccount("root", "operator", "$argon2id$x")))
        result_of(store.add_api_key(ApiKey("k1", "root", "read", "ab" * 32)))
        result_of(store.record_audit(AuditRecord(0, 1.0, "root", "cli", "local", "x", "y")))
        assert [c.name for c in result_of(store.list_customers("acme"))] == ["shop"]
        assert [r.id for r in result_of(store.list_audit())] == [1]
    finally:
        result_of(store.close())


def test_admin_records_survive_close_and_reopen(data_dir: Path, clock: task.Clock) -> None:
    store = SQLiteStore(data_dir, clock, SyncExecutor())
    store.open(recover=True)
    reseller = result_of(store.add_reseller(Reseller("acme", Branding(product_name="Acme"))))
    admin = result_of(
        store.add_admin(
            AdminAccount("root", "operator", "$argon2id$x", totp_secret=None, recovery_codes=("h",))
        )
    )
    key = result_of(store.add_api_key(ApiKey("k1", "root", "admin", "ab" * 32, allow_ip=("::1",))))
    record = result_of(store.record_audit(AuditRecord(0, 1.0, "root", "api", "::1", "x", "y")))
    result_of(store.close())
    again = SQLiteStore(data_dir, clock, SyncExecutor())
    again.open()
    try:
        assert result_of(again.list_resellers()) == [reseller]
        assert result_of(again.list_admins()) == [admin]
        assert result_of(again.list_api_keys()) == [key]
        assert result_of(again.list_audit()) == [record]
    finally:
        result_of(again.close())


def test_removing_an_admin_row_cascades_to_its_keys(store: SQLiteStore) -> None:
    """The schema itself keeps no key without its admin, whoever deletes the row."""
    result_of(store.add_admin(AdminAccount("root", "operator", "$argon2id$x")))
    result_of(store.add_api_key(ApiKey("k1", "root", "read", "ab" * 32)))
    sql(store, "DELETE FROM admins WHERE name = 'root'")
    assert sql(store, "SELECT id FROM api_keys") == []


def traced(store: SQLiteStore, call: Callable[[], object]) -> list[str]:
    """The statements ``call`` runs on the store's connection (parameters filled in)."""
    statements: list[str] = []
    result_of(store._with_connection("trace", lambda c: c.set_trace_callback(statements.append)))
    try:
        call()
    finally:
        result_of(store._with_connection("untrace", lambda c: c.set_trace_callback(None)))
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def plan_of(store: SQLiteStore, statement: str) -> list[str]:
    return [str(row[-1]) for row in sql(store, "EXPLAIN QUERY PLAN " + statement)]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (QueueFilter(), "INTEGER PRIMARY KEY (rowid>?)"),
        (
            QueueFilter(domains=("example.com", "example.net")),
            "queue_domain_seq (domain=? AND seq>?)",
        ),
        (QueueFilter(states=(QUEUED, HELD)), "queue_state_seq (state=? AND seq>?)"),
        (
            QueueFilter(domains=("example.com",), states=(HELD,)),
            "queue_state_domain_seq (state=? AND domain=? AND seq>?)",
        ),
        (
            QueueFilter(domains=("example.com",), sender="x", received_before=5.0),
            "queue_domain_seq (domain=? AND seq>?)",
        ),
    ],
    ids=["all", "domains", "states", "domain-and-state", "domain-and-sender"],
)
def test_a_queue_page_is_an_index_walk(store: SQLiteStore, query: QueueFilter, index: str) -> None:
    deliver(store, "M1", (ALICE, CAROL))
    statements = traced(store, lambda: result_of(store.query_entries(query, after_seq=1, limit=5)))
    walks = 1
    walks *= len(query.domains) if query.domains is not None else 1
    walks *= len(query.states) if query.states is not None else 1
    assert len(statements) == walks
    for statement in statements:
        plan = plan_of(store, statement)
        assert any(
            step == f"SEARCH q USING INDEX {index}" or step.endswith(index) for step in plan
        ), plan
        assert any("SEARCH m USING INDEX sqlite_autoindex_messages_1 (id=?)" in s for s in plan), (
            plan
        )
        assert not any(s.startswith("SCAN") or "TEMP B-TREE" in s for s in plan), plan


def vm_steps(store: SQLiteStore, call: Callable[[], object]) -> int:
    """How many SQLite virtual-machine instructions ``call`` costs: what it reads."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    result_of(store._with_connection("count", lambda c: c.set_progress_handler(count, 1)))
    try:
        call()
    finally:
        result_of(store._with_connection("uncount", lambda c: c.set_progress_handler(None, 1)))
    return steps[0]


@pytest.mark.parametrize(
    "query",
    [
        QueueFilter(),
        QueueFilter(domains=("example.com",)),
        QueueFilter(domains=("example.com", "example.net", "a.example")),
        QueueFilter(states=(QUEUED,)),
        QueueFilter(domains=("example.com", "example.net"), states=(QUEUED, HELD)),
    ],
    ids=["all", "domain", "three-domains", "state", "domains-and-states"],
)
def test_a_queue_page_costs_the_same_however_long_the_queue(
    store: SQLiteStore, query: QueueFilter
) -> None:
    def many(domain: str, n: int) -> tuple[Delivery, ...]:
        return tuple(Delivery(f"u{i}@{domain}", domain) for i in range(n))

    deliver(store, "M1", many("example.com", 20) + many("example.net", 20))
    deliver(store, "M2", many("a.example", 20))
    short = vm_steps(store, lambda: result_of(store.query_entries(query, limit=10)))
    deliver(store, "M3", many("example.com", 1000) + many("example.net", 1000))
    deliver(store, "M4", many("a.example", 1000))
    long = vm_steps(store, lambda: result_of(store.query_entries(query, limit=10)))
    assert len(result_of(store.query_entries(query, limit=10))) == 10
    # 50 times the entries; the same page, read through the same few index steps.
    assert long < short * 1.2, (short, long)


def test_event_and_audit_pages_are_index_walks(store: SQLiteStore) -> None:
    for n in range(5):
        result_of(store.record_event("queue.held", f"m{n}", "example.com"))
        result_of(store.record_audit(AuditRecord(0, 1.0, "a", "api", "::1", "x", "y", "r", "c")))
    statements = traced(
        store,
        lambda: result_of(
            store.query_events(
                EventFilter(domains=("example.com", "example.net"), kinds=("queue.",)),
                before_id=4,
                limit=2,
            )
        ),
    )
    assert len(statements) == 2
    for statement in statements:
        plan = plan_of(store, statement)
        assert plan == ["SEARCH events USING INDEX events_domain_id (domain=? AND id<?)"], plan
    everything = traced(store, lambda: result_of(store.query_events(EventFilter(), before_id=4)))
    assert plan_of(store, everything[0]) == ["SEARCH events USING INTEGER PRIMARY KEY (rowid<?)"]
    (by_reseller,) = traced(store, partial(store.list_audit, reseller="r", before_id=4))
    assert plan_of(store, by_reseller) == [
        "SEARCH audit USING INDEX audit_reseller_id (reseller=? AND id<?)"
    ]
    (by_customer,) = traced(store, partial(store.list_audit, customer="c", before_id=4))
    assert plan_of(store, by_customer) == [
        "SEARCH audit USING INDEX audit_customer_id (customer=? AND id<?)"
    ]
