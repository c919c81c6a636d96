"""
SQLite schema version 16 (#14): a database from before white-label host names and logos
upgrades, keeps its resellers, and gives them none of either until they are set.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet import task

from strata_twisted.executor import SyncExecutor
from strata_twisted.model import Branding, Reseller, ResellerLogo
from strata_twisted.storage.sqlite import SQLiteStore
from strata_twisted.storage.sqlite_schema import migrate
from strata_twisted.testing import result_of


def test_a_v14_database_upgrades_to_v16_and_its_resellers_have_no_hosts_nor_logo(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "strata.db", isolation_level=None)
    try:
        assert migrate(conn, to_version=14) == 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "reseller_hostnames" not in tables  # really before 16
        conn.execute(
            "INSERT INTO resellers (name, product_name, created_at) VALUES ('acme', 'Acme', 5)"
        )
    finally:
        conn.close()
    store = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    store.open(recover=True)
    try:
        old = Reseller("acme", Branding(product_name="Acme"), created_at=5.0)
        assert result_of(store.get_reseller("acme")) == old
        assert result_of(store.get_reseller_logo("acme")) is None
        hosted = Reseller("acme", Branding(product_name="Acme", hostnames=("webmail.acme.test",)))
        result_of(store.update_reseller(hosted))
        result_of(store.set_reseller_logo("acme", ResellerLogo(b"GIF89a", "image/gif", 1.0)))
        assert result_of(store.reseller_for_hostname("webmail.acme.test")) is not None
    finally:
        result_of(store.close())
    again = SQLiteStore(data_dir, task.Clock(), SyncExecutor())
    again.open()
    try:
        found = result_of(again.reseller_for_hostname("webmail.acme.test"))
        assert found is not None and found.branding.hostnames == ("webmail.acme.test",)
        assert result_of(again.get_reseller_logo("acme")) == ResellerLogo(
            b"GIF89a", "image/gif", 1.0
        )
    finally:
        result_of(again.close())
