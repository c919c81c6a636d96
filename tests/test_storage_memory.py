"""The conformance suites, bound to L{MemoryStore}; plus what only the memory store promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from strata_twisted.executor import SyncExecutor
from strata_twisted.proto import mime
from strata_twisted.storage import open_store
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of
from tests.conformance.suites import (
    ALICE,
    BOB,
    BODY,
    CAROL,
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
    deliver,
)


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def store(clock: task.Clock) -> MemoryStore:
    store = MemoryStore(clock, indexer=mime.index_bytes)
    store.open()
    return store


@pytest.fixture
def set_entry_state():
    def set_state(store: MemoryStore, entry_id: str, state: str) -> None:
        store._set_entry_state(entry_id, state)

    return set_state


@pytest.fixture
def body_files():
    return lambda store: []  # bodies live in memory, beside their records


class TestMemoryDomainStore(DomainStoreSuite):
    pass


class TestMemoryMessageStore(MessageStoreSuite):
    pass


class TestMemoryQueueStore(QueueStoreSuite):
    pass


class TestMemoryShadowStore(ShadowStoreSuite):
    pass


class TestMemoryEventStore(EventStoreSuite):
    pass


class TestMemoryQueueQuery(QueueQuerySuite):
    pass


class TestMemoryEventQuery(EventQuerySuite):
    pass


class TestMemoryTenantStore(TenantStoreSuite):
    pass


class TestMemoryAdminStore(AdminStoreSuite):
    pass


class TestMemoryAuditStore(AuditStoreSuite):
    pass


class TestMemoryMonitorStore(MonitorStoreSuite):
    pass


class TestMemoryControlStore(ControlStoreSuite):
    pass


class TestMemoryMailboxStore(MailboxStoreSuite):
    pass


class TestMemoryCredentialStore(CredentialStoreSuite):
    pass


def test_open_store_builds_a_memory_store(tmp_path: Path) -> None:
    store = open_store("memory", tmp_path / "unused", task.Clock(), SyncExecutor())
    assert isinstance(store, MemoryStore)
    store.open(recover=True)
    assert result_of(store.close()) is None
    assert not (tmp_path / "unused").exists()


def test_events_do_not_share_state_with_callers(store: MemoryStore) -> None:
    data: dict[str, object] = {"list": [1]}
    event = result_of(store.record_event("k", "m", data=data))
    data["list"] = "changed"
    event.data["list"].append(2)
    assert result_of(store.list_events())[0].data == {"list": [1]}


def test_a_message_that_cannot_be_indexed_is_still_committed(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(stream: Any, size: int) -> Any:
        raise RuntimeError("indexer bug")

    monkeypatch.setattr(store, "_indexer", broken)
    assert deliver(store, "M1", (BOB,)).id == "M1"
    assert [m.message_id for m in result_of(store.list_messages("bob@example.com", "INBOX"))] == [
        "M1"
    ]
    assert result_of(store.mime_indexes("bob@example.com", "INBOX", [1])) == {}


def test_only_messages_with_shadow_copies_are_indexed(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexed: list[int] = []

    def counting(stream: Any, size: int) -> bytes:
        indexed.append(size)
        return mime.index_bytes(stream, size)

    monkeypatch.setattr(store, "_indexer", counting)
    deliver(store, "M1", (ALICE, CAROL))
    assert indexed == []
    deliver(store, "M2", (ALICE, BOB, BOB))
    assert indexed == [len(BODY)]
