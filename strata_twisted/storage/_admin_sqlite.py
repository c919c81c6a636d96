"""
The administration roles (#13) on SQLite: L{ITenantStore}, L{IAdminStore}, L{IAuditStore}.

A mixin of L{strata_twisted.storage.sqlite.SQLiteStore}, with its threading rule: methods named
``_t_…`` and the callables handed to ``_run``/``_t_transaction`` run on the storage thread, and
only there; the rest runs on the caller's thread and never touches the connection.  Times are
read from the clock on the caller's thread, as the other roles do.  The tables are migration 14
(sqlite_schema.py); resellers' host names and logos are migration 16.

Every change is one transaction, checked under its write lock: "exists already" and "not found"
are decided there, so two processes (the server and the CLI) cannot both add the same name.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import AlreadyExists, NotFound, StorageError
from strata_twisted.model import (
    AdminAccount,
    ApiKey,
    AuditRecord,
    Branding,
    Customer,
    Reseller,
    ResellerLogo,
    Role,
    Scope,
)

T = TypeVar("T")


def _reseller(row: sqlite3.Row, hostnames: tuple[str, ...] = ()) -> Reseller:
    return Reseller(
        name=row["name"],
        branding=Branding(
            product_name=row["product_name"],
            logo_url=row["logo_url"],
            primary_color=row["primary_color"],
            accent_color=row["accent_color"],
            support_email=row["support_email"],
            support_url=row["support_url"],
            hostnames=hostnames,
        ),
        created_at=float(row["created_at"]),
    )


def _t_hostnames(conn: sqlite3.Connection, reseller: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT hostname FROM reseller_hostnames WHERE reseller = ? ORDER BY hostname",
        (reseller,),
    )
    return tuple(r["hostname"] for r in rows)


def _t_set_hostnames(conn: sqlite3.Connection, reseller: Reseller) -> None:
    """Replace ``reseller``'s host names; L{AlreadyExists} (kind ``hostname``) for the first
    that another reseller has.  Runs inside the caller's transaction."""
    for host in sorted(reseller.branding.hostnames):
        row = conn.execute(
            "SELECT reseller FROM reseller_hostnames WHERE hostname = ?", (host,)
        ).fetchone()
        if row is not None and row["reseller"] != reseller.name:
            raise AlreadyExists("hostname", host)
    conn.execute("DELETE FROM reseller_hostnames WHERE reseller = ?", (reseller.name,))
    conn.executemany(
        "INSERT INTO reseller_hostnames (hostname, reseller) VALUES (?, ?)",
        [(host, reseller.name) for host in reseller.branding.hostnames],
    )


def _branding(branding: Branding) -> tuple[str, ...]:
    """A reseller's branding, in the order of the SQL below."""
    return (
        branding.product_name,
        branding.logo_url,
        branding.primary_color,
        branding.accent_color,
        branding.support_email,
        branding.support_url,
    )


def _customer(row: sqlite3.Row) -> Customer:
    return Customer(name=row["name"], reseller=row["reseller"], created_at=float(row["created_at"]))


def _admin(row: sqlite3.Row) -> AdminAccount:
    return AdminAccount(
        name=row["name"],
        role=cast(Role, row["role"]),
        password_hash=row["password_hash"],
        reseller=row["reseller"],
        customer=row["customer"],
        totp_secret=row["totp_secret"],
        recovery_codes=tuple(json.loads(row["recovery_codes"])),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def _admin_fields(account: AdminAccount) -> tuple[object, ...]:
    """An account's fields but its name and times, in the order of the SQL below."""
    return (
        account.role,
        account.password_hash,
        account.reseller,
        account.customer,
        account.totp_secret,
        json.dumps(list(account.recovery_codes)),
    )


def _api_key(row: sqlite3.Row) -> ApiKey:
    expires_at = row["expires_at"]
    last_used_at = row["last_used_at"]
    return ApiKey(
        id=row["id"],
        admin=row["admin"],
        scope=cast(Scope, row["scope"]),
        secret_hash=row["secret_hash"],
        created_at=float(row["created_at"]),
        expires_at=None if expires_at is None else float(expires_at),
        allow_ip=tuple(json.loads(row["allow_ip"])),
        last_used_at=None if last_used_at is None else float(last_used_at),
    )


def _audit(row: sqlite3.Row) -> AuditRecord:
    return AuditRecord(
        id=int(row["id"]),
        at=float(row["at"]),
        actor=row["actor"],
        via=row["via"],
        source=row["source"],
        action=row["action"],
        target=row["target"],
        reseller=row["reseller"],
        customer=row["customer"],
        detail=json.loads(row["detail"]),
    )


def _t_exists(conn: sqlite3.Connection, table: str, key: str, value: str) -> bool:
    # ``table`` and ``key`` are names from this module, never input; the value is a parameter.
    statement = f"SELECT 1 FROM {table} WHERE {key} = ?"  # noqa: S608
    return conn.execute(statement, (value,)).fetchone() is not None


# list_audit's statement: these fixed fragments and nothing else; every value is a parameter.
_AUDIT_SELECT: Final = "SELECT * FROM audit"


class SQLiteAdminRoles:
    """Resellers, customers, admin accounts, API keys and the audit log, on SQLite."""

    clock: SecondsClock

    if TYPE_CHECKING:  # provided by SQLiteStore

        def _run(self, doing: str, f: Callable[[], T]) -> Deferred[T]: ...

        def _t_conn(self) -> sqlite3.Connection: ...

        def _t_transaction(
            self, f: Callable[[sqlite3.Connection], T], *, sync: bool = True
        ) -> T: ...

    def _query(self, doing: str, f: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        return self._run(doing, lambda: f(self._t_conn()))

    def _change(self, doing: str, f: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        return self._run(doing, lambda: self._t_transaction(f))

    # -- ITenantStore

    def list_resellers(self) -> Deferred[list[Reseller]]:
        def listing(conn: sqlite3.Connection) -> list[Reseller]:
            hosts: dict[str, list[str]] = {}
            for row in conn.execute(
                "SELECT hostname, reseller FROM reseller_hostnames ORDER BY hostname"
            ):
                hosts.setdefault(row["reseller"], []).append(row["hostname"])
            return [
                _reseller(r, tuple(hosts.get(r["name"], ())))
                for r in conn.execute("SELECT * FROM resellers ORDER BY name")
            ]

        return self._query("listing resellers", listing)

    def get_reseller(self, name: str) -> Deferred[Reseller | None]:
        def get(conn: sqlite3.Connection) -> Reseller | None:
            row = conn.execute("SELECT * FROM resellers WHERE name = ?", (name,)).fetchone()
            return None if row is None else _reseller(row, _t_hostnames(conn, name))

        return self._query(f"reading reseller {name}", get)

    def add_reseller(self, reseller: Reseller) -> Deferred[Reseller]:
        added = replace(reseller, created_at=reseller.created_at or self.clock.seconds())

        def insert(conn: sqlite3.Connection) -> Reseller:
            if _t_exists(conn, "resellers", "name", added.name):
                raise AlreadyExists("reseller", added.name)
            _t_set_hostnames(conn, added)
            conn.execute(
                "INSERT INTO resellers (name, product_name, logo_url, primary_color,"
                " accent_color, support_email, support_url, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (added.name, *_branding(added.branding), added.created_at),
            )
            return added

        return self._change(f"adding reseller {added.name}", insert)

    def update_reseller(self, reseller: Reseller) -> Deferred[Reseller]:
        def update(conn: sqlite3.Connection) -> Reseller:
            row = conn.execute(
                "SELECT created_at FROM resellers WHERE name = ?", (reseller.name,)
            ).fetchone()
            if row is None:
                raise NotFound("reseller", reseller.name)
            _t_set_hostnames(conn, reseller)
            conn.execute(
                "UPDATE resellers SET product_name = ?, logo_url = ?, primary_color = ?,"
                " accent_color = ?, support_email = ?, support_url = ? WHERE name = ?",
                (*_branding(reseller.branding), reseller.name),
            )
            return replace(reseller, created_at=float(row["created_at"]))

        return self._change(f"updating reseller {reseller.name}", update)

    def remove_reseller(self, name: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM resellers WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound("reseller", name)
            conn.execute("DELETE FROM reseller_hostnames WHERE reseller = ?", (name,))
            conn.execute("DELETE FROM reseller_logos WHERE reseller = ?", (name,))

        return self._change(f"removing reseller {name}", delete)

    def reseller_for_hostname(self, hostname: str) -> Deferred[Reseller | None]:
        def get(conn: sqlite3.Connection) -> Reseller | None:
            row = conn.execute(
                "SELECT r.* FROM reseller_hostnames h JOIN resellers r ON r.name = h.reseller"
                " WHERE h.hostname = ?",
                (hostname,),
            ).fetchone()
            return None if row is None else _reseller(row, _t_hostnames(conn, row["name"]))

        return self._query(f"looking up host name {hostname}", get)

    def set_reseller_logo(self, name: str, logo: ResellerLogo) -> Deferred[None]:
        def store(conn: sqlite3.Connection) -> None:
            if not _t_exists(conn, "resellers", "name", name):
                raise NotFound("reseller", name)
            conn.execute(
                "INSERT OR REPLACE INTO reseller_logos (reseller, content_type, data, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (name, logo.content_type, logo.data, logo.updated_at),
            )

        return self._change(f"storing the logo of reseller {name}", store)

    def get_reseller_logo(self, name: str) -> Deferred[ResellerLogo | None]:
        def get(conn: sqlite3.Connection) -> ResellerLogo | None:
            row = conn.execute(
                "SELECT content_type, data, updated_at FROM reseller_logos WHERE reseller = ?",
                (name,),
            ).fetchone()
            if row is None:
                return None
            return ResellerLogo(bytes(row["data"]), row["content_type"], float(row["updated_at"]))

        return self._query(f"reading the logo of reseller {name}", get)

    def clear_reseller_logo(self, name: str) -> Deferred[bool]:
        def clear(conn: sqlite3.Connection) -> bool:
            if not _t_exists(conn, "resellers", "name", name):
                raise NotFound("reseller", name)
            deleted = conn.execute("DELETE FROM reseller_logos WHERE reseller = ?", (name,))
            return deleted.rowcount > 0

        return self._change(f"removing the logo of reseller {name}", clear)

    def list_customers(self, reseller: str | None = None) -> Deferred[list[Customer]]:
        def listing(conn: sqlite3.Connection) -> list[Customer]:
            if reseller is None:
                rows = conn.execute("SELECT * FROM customers ORDER BY name")
            else:
                rows = conn.execute(
                    "SELECT * FROM customers WHERE reseller = ? ORDER BY name", (reseller,)
                )
            return [_customer(row) for row in rows]

        return self._query("listing customers", listing)

    def get_customer(self, name: str) -> Deferred[Customer | None]:
        def get(conn: sqlite3.Connection) -> Customer | None:
            row = conn.execute("SELECT * FROM customers WHERE name = ?", (name,)).fetchone()
            return None if row is None else _customer(row)

        return self._query(f"reading customer {name}", get)

    def add_customer(self, customer: Customer) -> Deferred[Customer]:
        added = replace(customer, created_at=customer.created_at or self.clock.seconds())

        def insert(conn: sqlite3.Connection) -> Customer:
            if _t_exists(conn, "customers", "name", added.name):
                raise AlreadyExists("customer", added.name)
            conn.execute(
                "INSERT INTO customers (name, reseller, created_at) VALUES (?, ?, ?)",
                (added.name, added.reseller, added.created_at),
            )
            return added

        return self._change(f"adding customer {added.name}", insert)

    def remove_customer(self, name: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM customers WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound("customer", name)

        return self._change(f"removing customer {name}", delete)

    # -- IAdminStore

    def list_admins(self) -> Deferred[list[AdminAccount]]:
        return self._query(
            "listing admin accounts",
            lambda conn: [_admin(r) for r in conn.execute("SELECT * FROM admins ORDER BY name")],
        )

    def get_admin(self, name: str) -> Deferred[AdminAccount | None]:
        def get(conn: sqlite3.Connection) -> AdminAccount | None:
            row = conn.execute("SELECT * FROM admins WHERE name = ?", (name,)).fetchone()
            return None if row is None else _admin(row)

        return self._query(f"reading admin account {name}", get)

    def add_admin(self, account: AdminAccount) -> Deferred[AdminAccount]:
        now = self.clock.seconds()
        added = replace(
            account,
            created_at=account.created_at or now,
            updated_at=account.updated_at or now,
        )

        def insert(conn: sqlite3.Connection) -> AdminAccount:
            if _t_exists(conn, "admins", "name", added.name):
                raise AlreadyExists("admin", added.name)
            conn.execute(
                "INSERT INTO admins (name, role, password_hash, reseller, customer, totp_secret,"
                " recovery_codes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (added.name, *_admin_fields(added), added.created_at, added.updated_at),
            )
            return added

        return self._change(f"adding admin account {added.name}", insert)

    def update_admin(self, account: AdminAccount) -> Deferred[AdminAccount]:
        now = self.clock.seconds()

        def update(conn: sqlite3.Connection) -> AdminAccount:
            row = conn.execute(
                "SELECT created_at FROM admins WHERE name = ?", (account.name,)
            ).fetchone()
            if row is None:
                raise NotFound("admin", account.name)
            conn.execute(
                "UPDATE admins SET role = ?, password_hash = ?, reseller = ?, customer = ?,"
                " totp_secret = ?, recovery_codes = ?, updated_at = ? WHERE name = ?",
                (*_admin_fields(account), now, account.name),
            )
            return replace(account, created_at=float(row["created_at"]), updated_at=now)

        return self._change(f"updating admin account {account.name}", update)

    def remove_admin(self, name: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM admins WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound("admin", name)
            # Its keys go in the same transaction.  The schema's ON DELETE CASCADE has already
            # done it on our connections (foreign_keys = ON); this does not depend on that.
            conn.execute("DELETE FROM api_keys WHERE admin = ?", (name,))

        return self._change(f"removing admin account {name}", delete)

    def list_api_keys(self, admin: str | None = None) -> Deferred[list[ApiKey]]:
        def listing(conn: sqlite3.Connection) -> list[ApiKey]:
            # rowid breaks ties in insertion order (keys made within one clock tick).
            if admin is None:
                rows = conn.execute("SELECT * FROM api_keys ORDER BY created_at, rowid")
            else:
                rows = conn.execute(
                    "SELECT * FROM api_keys WHERE admin = ? ORDER BY created_at, rowid", (admin,)
                )
            return [_api_key(row) for row in rows]

        return self._query("listing API keys", listing)

    def get_api_key(self, key_id: str) -> Deferred[ApiKey | None]:
        def get(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else _api_key(row)

        return self._query(f"reading API key {key_id}", get)

    def add_api_key(self, key: ApiKey) -> Deferred[ApiKey]:
        added = replace(key, created_at=key.created_at or self.clock.seconds())

        def insert(conn: sqlite3.Connection) -> ApiKey:
            if _t_exists(conn, "api_keys", "id", added.id):
                raise AlreadyExists("api key", added.id)
            if not _t_exists(conn, "admins", "name", added.admin):
                raise NotFound("admin", added.admin)
            conn.execute(
                "INSERT INTO api_keys (id, admin, scope, secret_hash, created_at, expires_at,"
                " allow_ip, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    added.id,
                    added.admin,
                    added.scope,
                    added.secret_hash,
                    added.created_at,
                    added.expires_at,
                    json.dumps(list(added.allow_ip)),
                    added.last_used_at,
                ),
            )
            return added

        return self._change(f"adding API key {added.id}", insert)

    def remove_api_key(self, key_id: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount == 0:
                raise NotFound("api key", key_id)

        return self._change(f"revoking API key {key_id}", delete)

    def touch_api_key(self, key_id: str, at: float) -> Deferred[None]:
        def touch(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (at, key_id))

        # Every API request touches its key: without the WAL fsync (the next durable commit
        # carries it), since a lost "last used" time after a power failure harms nobody.
        return self._run(
            f"touching API key {key_id}", lambda: self._t_transaction(touch, sync=False)
        )

    # -- IAuditStore

    def record_audit(self, record: AuditRecord) -> Deferred[AuditRecord]:
        try:
            detail = json.dumps(record.detail)
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"audit detail is not JSON: {e}"))

        def insert(conn: sqlite3.Connection) -> AuditRecord:
            cursor = conn.execute(
                "INSERT INTO audit (at, actor, via, source, action, target, reseller, customer,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.at,
                    record.actor,
                    record.via,
                    record.source,
                    record.action,
                    record.target,
                    record.reseller,
                    record.customer,
                    detail,
                ),
            )
            assert cursor.lastrowid is not None
            return replace(record, id=cursor.lastrowid, detail=json.loads(detail))

        return self._change(f"recording audit {record.action}", insert)

    def list_audit(
        self,
        reseller: str | None = None,
        customer: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Deferred[list[AuditRecord]]:
        if limit <= 0:
            return succeed([])
        conditions: list[str] = []
        params: list[Any] = []
        # Each tenant filter walks its index (audit_reseller_id, audit_customer_id) by id.
        for column, value in (("reseller", reseller), ("customer", customer)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            conditions.append("id < ?")
            params.append(before_id)
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        statement = _AUDIT_SELECT + where + " ORDER BY id DESC LIMIT ?"

        def listing(conn: sqlite3.Connection) -> list[AuditRecord]:
            return [_audit(row) for row in conn.execute(statement, (*params, limit))]

        return self._query("reading the audit log", listing)
