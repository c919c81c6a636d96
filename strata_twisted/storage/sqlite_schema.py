"""
The SQLite schema: its version and the numbered migrations that build it.

``PRAGMA user_version`` holds the version of a database file.  L{migrate} applies every migration
newer than that, in order, each in its own transaction together with the new ``user_version``, so
a crash mid-upgrade leaves the file at the last complete version.  Migrations are append-only:
never edit one that has shipped; add the next number instead.

This module only knows the schema.  It must never open connections or touch body files (that is
L{strata_twisted.storage.sqlite}'s job).

Layout notes:

- Domain names are stored in their canonical ASCII form (callers pass canonical names).
- ``meta.domains_version`` is bumped in the same transaction as every domain change, so another
  process (the CLI) can tell the server that its configuration changed.
- ``queue.seq`` is AUTOINCREMENT: it only grows, never reuses a number, and gives the arrival
  order across every domain (DESIGN decision 4).  ``queue.id`` is ``"<message_id>.<n>"``, n = 1…
  per recipient.  Sender, size, Message-ID and received time live once, on ``messages``.
- ``messages.body_path`` is relative to the data directory (``messages/<YYYYMMDD>/<id>``), so the
  data directory can be moved.  It is NULL for a body small enough to be kept inline, in
  ``bodies``, committed in the same transaction as its message (one WAL fsync for a whole batch
  instead of a file creation and an fsync per message).
- Migration 2 (the relay and the monitor, #3) adds the domains' relay settings (NULL overrides
  mean "use the global value"), each queue entry's last attempt and delivery, the monitor's
  ``domain_status`` (one row per probed domain) and ``outages`` (``ended_at`` NULL while open; a
  partial unique index allows one open outage per domain).
- Migration 3 (queue administration) adds ``control_requests``: what ``strata queue flush`` asks
  the running server to do.  The CLI appends rows; the server polls for ids above the last one it
  saw (AUTOINCREMENT, so an id is never reused even after old rows are deleted).
- Migration 4 (shadow mailboxes, #4) adds ``mailboxes`` (one row per mailbox of a user: ``owner``
  is the canonical address, ``name`` the canonical Unicode name, compared case-sensitively, INBOX
  always spelled so), ``mailbox_messages`` (one row per message in a mailbox, keyed by
  ``(mailbox_id, uid)``; it points at the shared ``messages`` row, never copies the body) and
  ``message_mime`` (the MIME index, once per stored message, shared by every mailbox copy).
  ``meta.last_uidvalidity`` is the last UIDVALIDITY handed out; ``mailboxes.uidvalidity`` is
  UNIQUE, so no two mailboxes, nor a deleted one and its re-creation, ever share one.  Flags are
  one sorted, space-separated string: flags are atoms (no spaces), and UNSEEN is counted with
  ``instr(flags, '\\Seen') = 0`` (no keyword may contain a backslash).
- Migration 5 (synced credentials, #4) adds ``users``: one row per synced user, keyed by the
  canonical address (model.normalize_user), with its canonical ``domain`` and its password hash
  in the stored form ``{SCHEME}value`` (never a password).  ``meta.credentials_version`` is
  bumped in the same transaction as every change, so the server can drop its login cache when
  the CLI imports a new list.
- Migration 6 adds ``domains.accept_unknown`` (intake's unknown-user check).
- Migration 7 adds ``domains.portal`` (when the webmail/IMAP portal is open: ``outage``, the
  default for existing domains too, ``always``, ``off`` or ``open``) and
  ``domains.retention_days`` (NULL: the global default).
- Migration 8 (alerts, #5) adds ``domains.alert_email``, ``domains.alert_webhook`` (an http(s)
  URL) and ``domains.alert_webhook_auth`` (its Authorization header value, a secret); NULL: none.
- Migration 9 (submission, #5) adds ``queue.outbound`` (1: the entry goes to its domain's MX, not
  to a primary; 0 for every existing entry) and ``queue.delay_notified_at`` (when the sender got
  the RFC 3464 "delayed" notice; NULL: not yet).
- Migration 10 (send-as aliases, #5) adds ``send_as_aliases``: one row per address a user may
  send as besides their own (``alias`` and ``user`` both canonical, model.normalize_user; the
  alias in any domain).  An alias belongs to one user.  Changes bump
  ``meta.credentials_version``, like the users they belong to, and go with their user.
- Migration 11 (the portal within a minute, #11) adds ``domain_status.failing_since``: when the
  first probe of the current run of failures started (NULL after an answer, and for every
  existing row), so an outage starts there, even if the server restarts during the run.
- Migration 12 (mailbox sessions, #12) adds ``mailboxes.first_recent``: the lowest UID no IMAP
  session has claimed as \\Recent yet (RFC 3501 §2.3.2).  Existing mailboxes get their
  ``uidnext``, so the mail they already hold is not recent (else the first session after the
  upgrade would see every old message as new).
- Migration 13 (#12) moves subscriptions into ``subscriptions`` (one row per subscribed name of
  an owner, canonical as in ``mailboxes``), apart from the mailboxes: RFC 3501 §6.3.6 keeps a
  subscription whether or not its mailbox exists, so DELETE must leave it.  The old
  ``mailboxes.subscribed`` column is set to 0 and no longer read; every new row writes 0.  It
  stays because dropping a column needs SQLite 3.35 (and some distributions' Python 3.11
  links an older one).
- Migration 14 (admin core and tenancy, #13) adds ``domains.customer`` (the customer a domain
  belongs to; "" = the operator's, as every existing domain is), ``resellers`` (with their
  branding), ``customers`` (``reseller`` "" = directly under the operator), ``admins`` (argon2id
  password hashes; ``recovery_codes`` a JSON array of hashes), ``api_keys`` (the SHA-256 of each
  secret, never a secret; ``allow_ip`` a JSON array of networks; a key goes with its admin,
  ``ON DELETE CASCADE``) and ``audit`` (append-only, AUTOINCREMENT ids; indexed by tenant and
  id, so each tenant pages through its own records).  It also adds the indexes the admin
  listings page through (``query_entries``: one index walk per domain, state, or pair of both,
  merged by ``seq``): ``queue (state, seq)`` for a state filter across every domain, beside
  migration 1's ``(domain, seq)`` and ``(state, domain, seq)``; events page by
  ``events (domain, id)`` from migration 1.  Tenant references (``customers.reseller``,
  ``domains.customer``, an admin's tenant) are names without foreign keys: core/admin checks
  them, and "" (the operator) has no row to point at.
- Migration 15 (the dashboard, #14) adds ``series``: the dashboard's time series, one row per
  domain and minute (``at`` the minute's start, a whole number of seconds), sparse (no row for a
  domain that is normal with nothing queued or held) and pruned to 30 days by the sampler.
  ``state`` is the rank of the domain's state in ``model.DOMAIN_STATES`` (0 normal, 1 held,
  2 draining, 3 outage), so a bucket's worst state is ``max(state)``.  The primary key
  ``(at, domain)`` (WITHOUT ROWID) makes a time range of every domain one walk and pruning a
  range delete; ``series_domain_at`` serves one domain's range.  Beside it, what the dashboard
  polls: ``series_totals``, each tenant scope's depth a minute (``*`` every domain,
  ``reseller:<name>``, ``customer:<name>``; keyed by ``(scope, at)``, sparse too), and
  ``series_runs``, each domain's runs of minutes in one state other than normal (keyed by
  ``(domain, start_at)``, ``series_runs_end`` for the timeline's range), which the store keeps
  in step with the points as it writes them.  It also adds
  ``queue_delivered_at``, a partial index on the delivered entries' ``delivered_at``, so
  counting the last day's deliveries (``relay_activity``) walks that day only; an entry gets its
  ``delivered_at`` once and never changes again, so the relay pays one index insert per
  delivery.
- Migration 16 (white-label branding, #14) adds ``reseller_hostnames`` (the host names a
  reseller's webmail and panel are served under; the primary key keeps each host one
  reseller's) and ``reseller_logos`` (one uploaded image per reseller, inline as a BLOB).  Both
  go with their reseller when it is removed, in the same transaction.
- No CHECK constraints on states or modes: the code validates them, and SQLite cannot alter a
  CHECK without rebuilding the table, which would make adding a queue state a costly migration.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Final

from strata_twisted.errors import StorageError

Migration = tuple[int, tuple[str, ...]]

MIGRATIONS: Final[tuple[Migration, ...]] = (
    (
        1,
        (
            """
            CREATE TABLE meta (
                key   TEXT PRIMARY KEY,
                value
            )
            """,
            "INSERT INTO meta (key, value) VALUES ('domains_version', 0)",
            """
            CREATE TABLE domains (
                name       TEXT PRIMARY KEY,
                relay_host TEXT NOT NULL,
                relay_port INTEGER NOT NULL,
                mode       TEXT NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            """
            CREATE TABLE messages (
                id                TEXT PRIMARY KEY,
                sender            TEXT NOT NULL,
                recipients        TEXT NOT NULL,  -- JSON array of strings
                client_address    TEXT NOT NULL,
                client_helo       TEXT NOT NULL,
                body_8bitmime     INTEGER NOT NULL,
                smtputf8          INTEGER NOT NULL,
                received_at       REAL NOT NULL,
                size              INTEGER NOT NULL,
                header_message_id TEXT,
                body_path         TEXT  -- NULL: the body is in `bodies`
            )
            """,
            """
            CREATE TABLE bodies (
                message_id TEXT PRIMARY KEY REFERENCES messages (id),
                data       BLOB NOT NULL
            )
            """,
            """
            CREATE TABLE queue (
                seq             INTEGER PRIMARY KEY AUTOINCREMENT,
                id              TEXT NOT NULL UNIQUE,
                message_id      TEXT NOT NULL REFERENCES messages (id),
                domain          TEXT NOT NULL,
                recipient       TEXT NOT NULL,
                state           TEXT NOT NULL,
                attempts        INTEGER NOT NULL DEFAULT 0,
                last_error      TEXT,
                next_attempt_at REAL NOT NULL,
                created_at      REAL NOT NULL
            )
            """,
            "CREATE INDEX queue_domain_seq ON queue (domain, seq)",
            "CREATE INDEX queue_state_domain_seq ON queue (state, domain, seq)",
            "CREATE INDEX queue_message_id ON queue (message_id)",
            """
            CREATE TABLE shadow_copies (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                message_id TEXT NOT NULL REFERENCES messages (id),
                recipient  TEXT NOT NULL,
                mailbox    TEXT NOT NULL,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX shadow_copies_recipient ON shadow_copies (recipient, id)",
            "CREATE INDEX shadow_copies_message_id ON shadow_copies (message_id)",
            """
            CREATE TABLE events (
                id      INTEGER PRIMARY KEY AUTOINCREMENT,
                at      REAL NOT NULL,
                kind    TEXT NOT NULL,
                domain  TEXT,
                message TEXT NOT NULL,
                data    TEXT NOT NULL  -- JSON object
            )
            """,
            "CREATE INDEX events_domain_id ON events (domain, id)",
        ),
    ),
    (
        2,
        (
            # The relay and the monitor (#3): per-domain settings, delivery results, status.
            "ALTER TABLE domains ADD COLUMN tls_policy TEXT NOT NULL DEFAULT 'opportunistic'",
            "ALTER TABLE domains ADD COLUMN hold_rejected INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE domains ADD COLUMN queue_lifetime REAL",
            "ALTER TABLE domains ADD COLUMN probe_interval REAL",
            "ALTER TABLE domains ADD COLUMN down_after INTEGER",
            "ALTER TABLE domains ADD COLUMN up_after INTEGER",
            "ALTER TABLE domains ADD COLUMN monitored INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE queue ADD COLUMN last_attempt_at REAL",
            "ALTER TABLE queue ADD COLUMN delivered_at REAL",
            "ALTER TABLE queue ADD COLUMN delivery_reply TEXT",
            # due_domains: one seek per queued domain for its earliest due entry (see sqlite.py).
            "CREATE INDEX queue_state_domain_due ON queue (state, domain, next_attempt_at)",
            """
            CREATE TABLE domain_status (
                domain                TEXT PRIMARY KEY,
                health                TEXT NOT NULL,
                since                 REAL,
                consecutive_failures  INTEGER NOT NULL,
                consecutive_successes INTEGER NOT NULL,
                last_probe_at         REAL,
                last_probe_error      TEXT,
                last_delivery_at      REAL
            )
            """,
            """
            CREATE TABLE outages (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                domain     TEXT NOT NULL,
                started_at REAL NOT NULL,
                ended_at   REAL,  -- NULL while the outage lasts
                reason     TEXT NOT NULL
            )
            """,
            "CREATE INDEX outages_domain_id ON outages (domain, id)",
            # At most one open outage per domain, whatever the code above it does.
            "CREATE UNIQUE INDEX outages_open ON outages (domain) WHERE ended_at IS NULL",
        ),
    ),
    (
        3,
        (
            # Queue administration: requests from the CLI to the running server.
            """
            CREATE TABLE control_requests (
                id     INTEGER PRIMARY KEY AUTOINCREMENT,
                action TEXT NOT NULL,
                domain TEXT,  -- NULL: every domain
                at     REAL NOT NULL
            )
            """,
        ),
    ),
    (
        4,
        (
            # Shadow mailboxes (#4): users' mailboxes, the messages in them, MIME indexes.
            "INSERT INTO meta (key, value) VALUES ('last_uidvalidity', 0)",
            """
            CREATE TABLE mailboxes (
                id             INTEGER PRIMARY KEY AUTOINCREMENT,
                owner          TEXT NOT NULL,  -- canonical address (model.normalize_user)
                domain         TEXT NOT NULL,  -- the owner's canonical domain, for retention
                name           TEXT NOT NULL,  -- canonical name (model.normalize_mailbox_name)
                uidvalidity    INTEGER NOT NULL UNIQUE,
                uidnext        INTEGER NOT NULL,
                highest_modseq INTEGER NOT NULL,
                special_use    TEXT,
                subscribed     INTEGER NOT NULL,
                UNIQUE (owner, name)
            )
            """,
            "CREATE INDEX mailboxes_domain ON mailboxes (domain)",
            """
            CREATE TABLE mailbox_messages (
                mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id),
                uid           INTEGER NOT NULL,
                message_id    TEXT NOT NULL REFERENCES messages (id),
                flags         TEXT NOT NULL,  -- sorted, space-separated ('' for none)
                internal_date REAL NOT NULL,
                modseq        INTEGER NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX mailbox_messages_modseq ON mailbox_messages (mailbox_id, modseq)",
            "CREATE INDEX mailbox_messages_date ON mailbox_messages (mailbox_id, internal_date)",
            "CREATE INDEX mailbox_messages_message_id ON mailbox_messages (message_id)",
            """
            CREATE TABLE message_mime (
                message_id TEXT PRIMARY KEY REFERENCES messages (id),
                data       BLOB NOT NULL  -- proto.mime.index_to_json
            )
            """,
        ),
    ),
    (
        5,
        (
            # Synced credentials (#4): each protected domain's users, as password hashes.
            "INSERT INTO meta (key, value) VALUES ('credentials_version', 0)",
            """
            CREATE TABLE users (
                address       TEXT PRIMARY KEY,  -- canonical address (model.normalize_user)
                domain        TEXT NOT NULL,     -- its canonical domain
                password_hash TEXT NOT NULL      -- {SCHEME}value, never a password
            ) WITHOUT ROWID
            """,
            "CREATE INDEX users_domain ON users (domain, address)",
        ),
    ),
    (
        6,
        (
            # Intake checks recipients against a domain's user list unless it accepts unknown ones.
            "ALTER TABLE domains ADD COLUMN accept_unknown INTEGER NOT NULL DEFAULT 0",
        ),
    ),
    (
        7,
        (
            # The webmail portal policy and the shadow-mail retention override (#4).
            "ALTER TABLE domains ADD COLUMN portal TEXT NOT NULL DEFAULT 'outage'",
            "ALTER TABLE domains ADD COLUMN retention_days INTEGER",
        ),
    ),
    (
        8,
        (
            # Where a domain's outage alerts go (#5); NULL: nowhere.
            "ALTER TABLE domains ADD COLUMN alert_email TEXT",
            "ALTER TABLE domains ADD COLUMN alert_webhook TEXT",
            "ALTER TABLE domains ADD COLUMN alert_webhook_auth TEXT",
        ),
    ),
    (
        9,
        (
            # Submission (#5): outbound entries (to the recipient domain's MX), and when the
            # sender was told an entry is delayed (NULL: not yet).
            "ALTER TABLE queue ADD COLUMN outbound INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE queue ADD COLUMN delay_notified_at REAL",
        ),
    ),
    (
        10,
        (
            # Send-as aliases (#5): addresses a user may send as besides their own.
            """
            CREATE TABLE send_as_aliases (
                alias TEXT PRIMARY KEY,  -- canonical address (model.normalize_user)
                user  TEXT NOT NULL      -- the synced user (users.address) who may send as it
            ) WITHOUT ROWID
            """,
            "CREATE INDEX send_as_aliases_user ON send_as_aliases (user, alias)",
        ),
    ),
    (
        11,
        (
            # The portal within a minute (#11): when the current run of failed probes began.
            "ALTER TABLE domain_status ADD COLUMN failing_since REAL",
        ),
    ),
    (
        12,
        (
            # Mailbox sessions (#12): the lowest UID not yet claimed as \Recent by a session.
            "ALTER TABLE mailboxes ADD COLUMN first_recent INTEGER NOT NULL DEFAULT 1",
            # Mail already there is not recent (else all of it would look new after the upgrade).
            "UPDATE mailboxes SET first_recent = uidnext",
        ),
    ),
    (
        13,
        (
            # Subscriptions outlive their mailboxes (RFC 3501 §6.3.6), so they get a table.
            """
            CREATE TABLE subscriptions (
                owner TEXT NOT NULL,  -- canonical address (model.normalize_user)
                name  TEXT NOT NULL,  -- canonical name (model.normalize_mailbox_name)
                PRIMARY KEY (owner, name)
            ) WITHOUT ROWID
            """,
            "INSERT INTO subscriptions (owner, name)"
            " SELECT owner, name FROM mailboxes WHERE subscribed != 0",
            # No longer read: one source of truth (see the notes above on why it stays).
            "UPDATE mailboxes SET subscribed = 0",
        ),
    ),
    (
        14,
        (
            # Tenancy (#13): every existing domain belongs to the operator ("").
            "ALTER TABLE domains ADD COLUMN customer TEXT NOT NULL DEFAULT ''",
            """
            CREATE TABLE resellers (
                name          TEXT PRIMARY KEY,
                product_name  TEXT NOT NULL DEFAULT '',
                logo_url      TEXT NOT NULL DEFAULT '',
                primary_color TEXT NOT NULL DEFAULT '',
                accent_color  TEXT NOT NULL DEFAULT '',
                support_email TEXT NOT NULL DEFAULT '',
                support_url   TEXT NOT NULL DEFAULT '',
                created_at    REAL NOT NULL
            )
            """,
            """
            CREATE TABLE customers (
                name       TEXT PRIMARY KEY,
                reseller   TEXT NOT NULL DEFAULT '',  -- '': directly under the operator
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX customers_reseller ON customers (reseller, name)",
            """
            CREATE TABLE admins (
                name           TEXT PRIMARY KEY,
                role           TEXT NOT NULL,
                password_hash  TEXT NOT NULL,  -- argon2id PHC string, never a password
                reseller       TEXT NOT NULL DEFAULT '',
                customer       TEXT NOT NULL DEFAULT '',
                totp_secret    TEXT,           -- NULL: no second factor
                recovery_codes TEXT NOT NULL DEFAULT '[]',  -- JSON array of hashes
                created_at     REAL NOT NULL,
                updated_at     REAL NOT NULL
            )
            """,
            """
            CREATE TABLE api_keys (
                id           TEXT PRIMARY KEY,  -- the key's public part
                admin        TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
                scope        TEXT NOT NULL,
                secret_hash  TEXT NOT NULL,     -- SHA-256 of the secret part
                created_at   REAL NOT NULL,
                expires_at   REAL,              -- NULL: never
                allow_ip     TEXT NOT NULL DEFAULT '[]',  -- JSON array of networks
                last_used_at REAL
            )
            """,
            "CREATE INDEX api_keys_admin ON api_keys (admin, created_at)",
            """
            CREATE TABLE audit (
                id       INTEGER PRIMARY KEY AUTOINCREMENT,
                at       REAL NOT NULL,
                actor    TEXT NOT NULL,
                via      TEXT NOT NULL,
                source   TEXT NOT NULL,
                action   TEXT NOT NULL,
                target   TEXT NOT NULL,
                reseller TEXT NOT NULL DEFAULT '',
                customer TEXT NOT NULL DEFAULT '',
                detail   TEXT NOT NULL DEFAULT '{}'  -- JSON object
            )
            """,
            "CREATE INDEX audit_reseller_id ON audit (reseller, id)",
            "CREATE INDEX audit_customer_id ON audit (customer, id)",
            # The paged queue listing across every domain, by state (#13).
            "CREATE INDEX queue_state_seq ON queue (state, seq)",
        ),
    ),
    (
        15,
        (
            """
            CREATE TABLE series (
                at     INTEGER NOT NULL,  -- the minute's start, Unix seconds
                domain TEXT NOT NULL,
                queued INTEGER NOT NULL,
                held   INTEGER NOT NULL,
                state  INTEGER NOT NULL,  -- rank in model.DOMAIN_STATES: 0 normal .. 3 outage
                PRIMARY KEY (at, domain)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX series_domain_at ON series (domain, at)",
            # Each tenant scope's depth a minute: the dashboard's depth chart reads a scope's
            # range (1,440 rows a day), the prune a range of ``at``.
            """
            CREATE TABLE series_totals (
                scope  TEXT NOT NULL,     -- '*', 'reseller:<name>' or 'customer:<name>'
                at     INTEGER NOT NULL,  -- the minute's start, Unix seconds
                queued INTEGER NOT NULL,
                held   INTEGER NOT NULL,
                PRIMARY KEY (scope, at)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX series_totals_at ON series_totals (at)",
            # Each domain's runs of one state other than normal, derived from the points: the
            # state timeline reads the runs that end after its start (one row a run, not one a
            # minute), the prune those that ended before the 30 days.
            """
            CREATE TABLE series_runs (
                domain   TEXT NOT NULL,
                start_at INTEGER NOT NULL,  -- the run's first minute
                end_at   INTEGER NOT NULL,  -- the end of its last minute
                state    INTEGER NOT NULL,  -- rank in model.DOMAIN_STATES: 1 held .. 3 outage
                PRIMARY KEY (domain, start_at)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX series_runs_end ON series_runs (end_at)",
            "CREATE INDEX queue_delivered_at ON queue (delivered_at, domain)"
            " WHERE delivered_at IS NOT NULL",
        ),
    ),
    (
        16,
        (
            # White-label branding (#14): a reseller's host names, each one reseller's at most
            # (the PRIMARY KEY), looked up by host on every webmail page.
            """
            CREATE TABLE reseller_hostnames (
                hostname TEXT PRIMARY KEY,  -- canonical (lower-case ASCII)
                reseller TEXT NOT NULL
            ) WITHOUT ROWID
            """,
            "CREATE INDEX reseller_hostnames_reseller ON reseller_hostnames (reseller, hostname)",
            # Its uploaded logo (at most 256 KiB, checked by core/admin): small enough to keep
            # inline, and read by host name, never scanned.
            """
            CREATE TABLE reseller_logos (
                reseller     TEXT PRIMARY KEY,
                content_type TEXT NOT NULL,
                data         BLOB NOT NULL,
                updated_at   REAL NOT NULL
            )
            """,
        ),
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)

assert [number for number, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1)), (
    "migrations must be numbered 1, 2, 3, … without gaps"
)


@contextlib.contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """
    ``BEGIN IMMEDIATE`` … ``COMMIT`` around the block; ``ROLLBACK`` if it raises.  ``conn`` must
    be in autocommit mode (``isolation_level=None``).  A rollback that itself fails is ignored:
    the original error is the one that matters, and the next transaction rolls back what is left.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database behind ``conn`` (0 for a new, empty file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, *, to_version: int = SCHEMA_VERSION) -> int:
    """
    Bring the database up to L{SCHEMA_VERSION} (or ``to_version``, for tests that build an old
    database to upgrade); return the version it had before.

    ``conn`` must be in autocommit mode (``isolation_level=None``).  Each migration runs in one
    ``BEGIN IMMEDIATE`` transaction together with its ``PRAGMA user_version``, and re-reads the
    version once it holds the write lock, so two processes opening the same new data directory
    at once do not both apply it.  A database newer than this code is refused with
    L{StorageError} rather than used with a schema we do not understand.
    """
    before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise StorageError(
            f"the database schema is version {before}, newer than this Strata "
            f"understands ({SCHEMA_VERSION}); upgrade Strata"
        )
    for number, statements in MIGRATIONS:
        if number <= before or number > to_version:
            continue
        with immediate_transaction(conn):
            if schema_version(conn) < number:
                for statement in statements:
                    conn.execute(statement)
                # PRAGMA takes no parameters; ``number`` is an int from the list above.
                conn.execute(f"PRAGMA user_version = {int(number)}")
    return before
