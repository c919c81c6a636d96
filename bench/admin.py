"""Admin API benchmark (#13): listing and bulk moves on a deep queue, through the real server.

A data directory gets ``--domains`` protected domains and ``--entries`` queued entries (the same
number per domain), then a real ``twistd -n strata`` serves its admin API on loopback, and this
times, over HTTP with an operator's API key:

- (a) the first page (``limit=100``) of ``GET /api/v1/queue?domain=D`` for the domain that arrived
  first and the one that arrived last, ``--repeat`` times each (median, p95);
- (b) the first page of ``GET /api/v1/queue`` with no filter;
- (c) the next ten pages of (b), following ``next``;
- (d) ``POST /api/v1/queue/actions`` ``hold`` with ``{"domain": D}`` (every entry of one domain),
  then ``release`` of the same;
- (e) that each changed exactly the domain's entries: the answers' counts, the domain's
  queued/held counts before and after, and the held entries listed page by page.

The server's resident memory (``VmRSS``, and its peak ``VmHWM``, from ``/proc/PID/status``) is
read before and after the listings and after every page walk: a listing must read one page of
the queue, never the whole of it.  For comparison, the bench process itself then loads the whole
queue with ``IQueueStore.list_entries`` (what a listing without paging would do) and prints the
growth of its own RSS, and prints SQLite's plan for the statement a domain's page runs.

How the queue is built: through the store itself, not over SMTP (100,000 SMTP transactions
would take minutes and time the intake, which ``bench.intake`` does).  The bench opens the data
directory with L{SQLiteStore} and commits messages with the intake's own writer API
(``begin``/``write``/``commit``), through an executor that holds the calls until it is drained,
so that a thousand commits share one transaction the way concurrent SMTP sessions share the
intake's group commit.  One message per entry (a backup MX mostly sees one recipient per
message), with a small body (inline in the database); domain ``d000`` gets all its mail first,
then ``d001``, ..., ``d099`` last, so the early and the late domain are as far apart in arrival
order as can be.

Nothing drains: every domain relays to a loopback port nobody listens on, with probing off, and
``relay.interval`` is a day.  The relay's pass at start finds every domain unreachable and defers
its mail (one statement per domain); the timing starts once it has done so for every domain.

    python -m bench.admin [--entries 100000] [--domains 100] [--repeat 20]

It prints the figures and writes JSON to ``bench/results/admin-<timestamp>.json``.  It is not a
timed test; the server listens on 127.0.0.1 only and is stopped before the bench exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred

from bench.intake import RESULTS_DIR
from strata_twisted.clock import WallClock
from strata_twisted.config import Settings
from strata_twisted.core.admin import dashboard
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.series import SeriesSampler, scope_totals
from strata_twisted.executor import SyncExecutor
from strata_twisted.fired import result_of
from strata_twisted.model import (
    DELIVERED_OUTCOME,
    AttemptResult,
    Customer,
    Delivery,
    Domain,
    DomainSample,
    DomainStatus,
    Envelope,
    IncomingMessage,
    QueueFilter,
    RelayTarget,
    Reseller,
)
from strata_twisted.storage.sqlite import SQLiteStore
from tests.peers.admin_api import AdminClient, Answer
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess

T = TypeVar("T")
PAGE = 100
COMMIT_GROUP = 1000  # commits that share one transaction while building


class HeldExecutor:
    """An executor that runs nothing until drained: the store's group commit then finds every
    commit requested meanwhile pending, and writes them in one transaction."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, f: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._calls.append((f, d))
        return d

    def drain(self) -> None:
        while self._calls:
            f, d = self._calls.pop(0)
            maybeDeferred(f).chainDeferred(d)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.drain()


def domain_name(i: int) -> str:
    return f"d{i:03d}.bench.test"


def build(data_dir: Path, entries: int, domains: int, relay_port: int) -> float:
    """Fill ``data_dir`` with ``domains`` domains and ``entries`` queued entries; seconds taken."""
    started = time.monotonic()
    executor = HeldExecutor()
    clock = WallClock()
    store = SQLiteStore(data_dir, clock, executor)
    store.open(recover=True)
    now = clock.seconds()
    added = [
        store.add_domain(
            Domain(
                domain_name(i),
                RelayTarget("127.0.0.1", relay_port),
                monitored=False,
                created_at=now,
                updated_at=now,
            )
        )  # fmt: skip
        for i in range(domains)
    ]
    executor.drain()
    for d in added:
        result_of(d)
    per_domain = entries // domains
    committed: list[Deferred[Any]] = []
    n = 0
    for i in range(domains):
        domain = domain_name(i)
        for k in range(per_domain):
            n += 1
            message_id = f"BENCH{n:07d}"
            recipient = f"user{k % 50}@{domain}"
            header_id = f"<{message_id}@sender.test>"
            body = (
                f"Received: from sender.test\r\nFrom: <alice@sender.test>\r\n"
                f"To: <{recipient}>\r\nSubject: backlog message {n}\r\n"
                f"Message-ID: {header_id}\r\n\r\n"
            ).encode() + b"Mail that waits for its primary.\r\n" * 10
            writer = store.begin(message_id)
            writer.write(body)
            committed.append(
                writer.commit(
                    IncomingMessage(
                        Envelope("alice@sender.test", (recipient,), "192.0.2.1", "sender.test"),
                        # Arrival order is entry order, a hundredth of a second apart.
                        received_at=now - (entries - n) * 0.01,
                        deliveries=(Delivery(recipient, domain),),
                        header_message_id=header_id,
                    )
                )
            )
            if len(committed) >= COMMIT_GROUP:
                executor.drain()
                for d in committed:
                    result_of(d)
                committed = []
    executor.drain()
    for d in committed:
        result_of(d)
    closed = store.close()
    executor.drain()
    result_of(closed)
    return time.monotonic() - started


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def timed(call: Callable[[], Answer]) -> tuple[float, Answer]:
    started = time.perf_counter()
    answer = call()
    return (time.perf_counter() - started) * 1000, answer


def timed_get(client: AdminClient, **query: Any) -> tuple[float, Answer]:
    """One page of the queue listing, and how long the request took (ms)."""
    return timed(lambda: client.get("/api/v1/queue", limit=PAGE, **query))


def expect(answer: Answer, status: int, what: str) -> Any:
    if answer.status != status:
        raise RuntimeError(f"{what}: HTTP {answer.status} {answer.raw[:500]!r}")
    return answer.body


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"median_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}


def wait_for_relay_pass(strata: StrataProcess, domains: int, timeout: float) -> None:
    """Wait until the relay's pass at start has found every domain unreachable."""
    pattern = re.compile(r"relay for (\S+): .*mail stays queued")
    deadline = time.monotonic() + timeout
    while True:
        seen = set(pattern.findall(strata.log_text()))
        if len(seen) >= domains:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay deferred {len(seen)} of {domains} domains in time")
        time.sleep(0.5)


def first_page(client: AdminClient, repeat: int, **query: Any) -> tuple[list[float], Any]:
    samples: list[float] = []
    body: Any = None
    for _ in range(repeat):
        ms, answer = timed_get(client, **query)
        body = expect(answer, 200, f"GET /api/v1/queue {query}")
        samples.append(ms)
    return samples, body


def counts(client: AdminClient, domain: str) -> tuple[int, int]:
    body = expect(client.get(f"/api/v1/domains/{domain}"), 200, f"GET domain {domain}")
    return int(body["queued"]), int(body["held"])


def listed(client: AdminClient, **query: Any) -> list[dict[str, Any]]:
    """Every entry the listing gives, page by page (limit 1000)."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        body = expect(
            client.get("/api/v1/queue", limit=1000, cursor=cursor, **query), 200, "listing"
        )
        entries += body["entries"]
        cursor = body["next"]
        if cursor is None:
            return entries


def move(client: AdminClient, action: str, domain: str) -> tuple[float, Any]:
    body = {"action": action, "filter": {"domain": domain}}
    ms, answer = timed(lambda: client.post("/api/v1/queue/actions", body))
    return ms, expect(answer, 200, f"{action} {domain}")


def whole_queue_cost(data_dir: Path, domain: str) -> dict[str, Any]:
    """What loading every entry costs this process, beside one page; and the page's plan."""
    store = SQLiteStore(data_dir, WallClock(), SyncExecutor())
    store.open()
    statements: list[str] = []
    result_of(store._with_connection("tracing", lambda c: c.set_trace_callback(statements.append)))
    before = rss_kib_self()
    page = result_of(store.query_entries(QueueFilter(domains=(domain,)), 0, PAGE))
    after_page = rss_kib_self()
    plan_of = next(s for s in statements if s.lstrip().upper().startswith("SELECT"))
    result_of(store._with_connection("untracing", lambda c: c.set_trace_callback(None)))
    plan = result_of(
        store._with_connection(
            "explaining", lambda c: [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + plan_of)]
        )
    )
    started = time.perf_counter()
    everything = result_of(store.list_entries())
    load_s = time.perf_counter() - started
    after_all = rss_kib_self()
    result = {
        "page_entries": len(page),
        "rss_growth_page_kib": after_page - before,
        "whole_queue_entries": len(everything),
        "rss_growth_whole_queue_kib": after_all - after_page,
        "whole_queue_load_s": load_s,
        "page_statement": plan_of,
        "page_plan": plan,
    }
    del everything
    result_of(store.close())
    return result


def rss_kib_self() -> int:
    return rss_kib(os.getpid())[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="strata-bench-admin-", dir=args.work_dir))
    results: dict[str, Any] = {
        "entries": args.entries,
        "domains": args.domains,
        "repeat": args.repeat,
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    strata: StrataProcess | None = None
    try:
        data_dir = work / "strata-data"
        build_s = build(data_dir, args.entries, args.domains, free_port())
        results["build_s"] = build_s
        print(f"built {args.entries} entries in {args.domains} domains in {build_s:.1f} s")
        strata = StrataProcess(
            work,
            data_dir=data_dir,
            admin_port=free_port(),
            extra_config="[relay]\ninterval = 86400\n",
        )
        started = time.monotonic()
        strata.start(timeout=120)
        wait_for_relay_pass(strata, args.domains, timeout=300)
        print(f"server up, relay pass done in {time.monotonic() - started:.1f} s")
        assert strata.admin_port is not None
        before_login = rss_kib(strata.pid)  # logging in hashes with argon2: 64 MiB at peak
        password = (data_dir / "admin-password").read_text().strip()
        session = AdminClient(strata.admin_port)
        expect(session.login("admin", password), 200, "login")
        created = expect(
            session.post("/api/v1/api-keys", {"admin": "admin", "scope": "admin"}), 201, "key"
        )
        client = AdminClient(strata.admin_port, key=created["key"])
        pid = strata.pid
        rss = {"before_login": before_login, "after_login": rss_kib(pid)}

        early, late = domain_name(0), domain_name(args.domains - 1)
        per_domain = args.entries // args.domains
        listing: dict[str, Any] = {}
        for label, domain in (("early", early), ("late", late)):
            samples, body = first_page(client, args.repeat, domain=domain)
            got = body["entries"]
            if len(got) != PAGE or {e["domain"] for e in got} != {domain} or not body["next"]:
                raise RuntimeError(f"first page of {domain}: {len(got)} entries, not all its own")
            listing[f"domain_{label}"] = {"domain": domain, **summary(samples)}
        rss["after_domain_pages"] = rss_kib(pid)

        samples, body = first_page(client, args.repeat)
        if [e["domain"] for e in body["entries"]] != [early] * PAGE:
            raise RuntimeError("the unfiltered first page is not the first arrivals")
        listing["unfiltered_first"] = summary(samples)
        walks: list[float] = []
        page_ms: list[float] = []
        seen: list[str] = []
        for _ in range(args.repeat):
            cursor = body["next"]
            seen = [e["id"] for e in body["entries"]]
            walk = 0.0
            for _ in range(10):
                ms, answer = timed_get(client, cursor=cursor)
                page = expect(answer, 200, "next page")
                seen += [e["id"] for e in page["entries"]]
                cursor = page["next"]
                page_ms.append(ms)
                walk += ms
            walks.append(walk)
        if len(seen) != 11 * PAGE or len(set(seen)) != len(seen):
            raise RuntimeError("the pages repeat or miss entries")
        listing["next_10_pages"] = {**summary(page_ms), "walk_median_ms": statistics.median(walks)}
        rss["after_unfiltered_pages"] = rss_kib(pid)

        # The late domain, every page of it.
        late_walk: list[float] = []
        for _ in range(max(1, args.repeat // 4)):
            cursor = None
            total, n = 0.0, 0
            while True:
                ms, answer = timed_get(client, domain=late, cursor=cursor)
                page = expect(answer, 200, "late domain page")
                total += ms
                n += len(page["entries"])
                cursor = page["next"]
                if cursor is None:
                    break
            if n != per_domain:
                raise RuntimeError(f"{late} listed {n} entries, not {per_domain}")
            late_walk.append(total)
        listing["late_domain_all_pages"] = {
            "pages": per_domain // PAGE,
            "walk_median_ms": statistics.median(late_walk),
        }
        rss["after_late_domain_walk"] = rss_kib(pid)
        results["listing"] = listing

        bulk: list[dict[str, Any]] = []
        for target in args.bulk_domains or [domain_name(args.domains // 2)]:
            before = counts(client, target)
            held_ms, held = move(client, "hold", target)
            during = counts(client, target)
            held_listed = listed(client, state="held")
            released_ms, released = move(client, "release", target)
            after = counts(client, target)
            still_held = listed(client, state="held")
            check = {
                "hold_changed": held["changed_count"],
                "hold_skipped": held["skipped_count"],
                "release_changed": released["changed_count"],
                "release_skipped": released["skipped_count"],
                "queued_held_before": before,
                "queued_held_while_held": during,
                "queued_held_after": after,
                "held_listed_while_held": len(held_listed),
                "held_listed_after": len(still_held),
            }
            ok = (
                held["changed_count"] == per_domain
                and released["changed_count"] == per_domain
                and held["skipped_count"] == 0
                and released["skipped_count"] == 0
                and before == (per_domain, 0)
                and during == (0, per_domain)
                and after == (per_domain, 0)
                and len(held_listed) == per_domain
                and {e["domain"] for e in held_listed} == {target}
                and not still_held
            )
            bulk.append({"domain": target, "hold_ms": held_ms, "release_ms": released_ms,
                         "ok": ok, **check})  # fmt: skip
            print(f"  {target}: hold {held_ms:.0f} ms, release {released_ms:.0f} ms, "
                  f"{'ok' if ok else 'COUNTS WRONG'} {check}")  # fmt: skip
        results["bulk"] = bulk
        rss["end"] = rss_kib(pid)
        results["server_rss_kib"] = {k: {"rss": v[0], "hwm": v[1]} for k, v in rss.items()}
        strata.stop()
        strata = None
        results["comparison"] = whole_queue_cost(data_dir, late)
        results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
        return results
    finally:
        if strata is not None:
            strata.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def report(results: dict[str, Any]) -> None:
    print()
    print(f"{results['entries']} entries, {results['domains']} domains, "
          f"{results['repeat']} repeats; load {' '.join(results['load_before'])}")  # fmt: skip
    listing = results["listing"]
    print(f"{'request':<52}{'median ms':>11}{'p95 ms':>9}")
    for key, label in (
        ("domain_early", f"GET /queue?domain={listing['domain_early']['domain']} (first page)"),
        ("domain_late", f"GET /queue?domain={listing['domain_late']['domain']} (first page)"),
        ("unfiltered_first", "GET /queue (first page)"),
        ("next_10_pages", "GET /queue?cursor=... (each of the next 10 pages)"),
    ):
        s = listing[key]
        print(f"{label:<52}{s['median_ms']:>11.1f}{s['p95_ms']:>9.1f}")
    print(f"  next 10 pages in all: {listing['next_10_pages']['walk_median_ms']:.0f} ms (median); "
          f"all {listing['late_domain_all_pages']['pages']} pages of the late domain: "
          f"{listing['late_domain_all_pages']['walk_median_ms']:.0f} ms")  # fmt: skip
    for b in results["bulk"]:
        print(f"POST /queue/actions hold {b['domain']}: {b['hold_ms']:.0f} ms "
              f"({b['hold_changed']} changed), release: {b['release_ms']:.0f} ms "
              f"({b['release_changed']} changed) -> {'ok' if b['ok'] else 'FAILED'}")  # fmt: skip
    print("server memory (KiB):")
    for stage, v in results["server_rss_kib"].items():
        print(f"  {stage:<26} VmRSS {v['rss']:>8}  VmHWM {v['hwm']:>8}")
    c = results["comparison"]
    print(
        "for comparison, in the bench process: one page grows RSS by "
        f"{c['rss_growth_page_kib']} KiB; list_entries() of all {c['whole_queue_entries']} "
        f"entries by {c['rss_growth_whole_queue_kib']} KiB in {c['whole_queue_load_s']:.1f} s"
    )
    print("plan of a domain's page:")
    for line in c["page_plan"]:
        print(f"  {line}")


# -- the Dashboard (#14) --------------------------------------------------------------------


def build_dashboard(
    data_dir: Path, domains: int, in_outage: int, entries: int, delivered: int, now: float
) -> float:
    """
    ``domains`` domains under ten customers of two resellers, the first ``in_outage`` of them in
    an open outage (monitor status down) holding 90% of ``entries`` queued messages, the rest
    spread over the others; ``delivered`` more messages delivered over the last day in the
    others; and the last 24 hours of the sampler's series (one point a minute for every domain
    with mail queued: all of them).  Seconds taken.
    """
    started = time.monotonic()
    executor = HeldExecutor()
    store = SQLiteStore(data_dir, WallClock(), executor)
    store.open(recover=True)

    def settle(calls: list[Deferred[Any]]) -> None:
        executor.drain()
        for d in calls:
            result_of(d)

    settle([store.add_reseller(Reseller(f"r{i}")) for i in range(2)])
    settle([store.add_customer(Customer(f"c{i}", f"r{i % 2}")) for i in range(10)])
    settle(
        [
            store.add_domain(
                Domain(
                    dashboard_domain(i),
                    RelayTarget("127.0.0.1", 9),
                    customer=f"c{i % 10}",
                    created_at=now,
                    updated_at=now,
                )
            )  # fmt: skip
            for i in range(domains)
        ]
    )
    calls: list[Deferred[Any]] = []
    for i in range(in_outage):
        name = dashboard_domain(i)
        calls.append(store.open_outage(name, now - 3 * 3600, "connection refused"))
        calls.append(store.save_status(DomainStatus(name, "down", now - 3 * 3600)))
    settle(calls)
    outage_share = entries * 9 // 10 // in_outage
    per_domain = [outage_share] * in_outage + [0] * (domains - in_outage)
    rest = entries - outage_share * in_outage
    for k in range(rest):
        per_domain[in_outage + k % (domains - in_outage)] += 1
    n = 0
    pending: list[Deferred[Any]] = []

    def commit(domain: str, received_at: float) -> str:
        nonlocal n, pending
        n += 1
        message_id = f"DASH{n:07d}"
        recipient = f"user{n % 50}@{domain}"
        writer = store.begin(message_id)
        writer.write(b"Subject: backlog\r\n\r\n" + b"Mail that waits.\r\n" * 10)
        pending.append(
            writer.commit(
                IncomingMessage(
                    Envelope("alice@sender.test", (recipient,)), received_at,
                    (Delivery(recipient, domain),),
                )
            )
        )  # fmt: skip
        if len(pending) >= COMMIT_GROUP:
            settle(pending)
            pending = []
        return f"{message_id}.1"

    for i, count in enumerate(per_domain):
        for k in range(count):
            commit(dashboard_domain(i), now - 3 * 3600 + k * 0.1)
    done = [
        commit(dashboard_domain(in_outage + k % (domains - in_outage)), now - 86000 + k)
        for k in range(delivered)
    ]
    settle(pending)
    pending = []
    results = [
        AttemptResult(entry_id, DELIVERED_OUTCOME, "250 ok", now - 86000 + k + 5)
        for k, entry_id in enumerate(done)
    ]
    settle([store.record_results(results)])
    minute = int(now // 60) * 60
    customers = {f"c{i}": f"r{i % 2}" for i in range(10)}
    owners = {dashboard_domain(i): f"c{i % 10}" for i in range(domains)}
    for m in range(24 * 60):
        at = minute - m * 60
        points = [
            DomainSample(at, dashboard_domain(i), per_domain[i], 0,
                         "outage" if i < in_outage else "normal")
            for i in range(domains)
        ]  # fmt: skip
        # Written newest first, as no sampler would: the store's runs must not care.
        totals = scope_totals(at, points, customers, owners)
        pending.append(store.record_samples(points, totals=totals))
        if len(pending) >= 60:
            settle(pending)
            pending = []
    settle(pending)
    closed = store.close()
    executor.drain()
    result_of(closed)
    return time.monotonic() - started


def dashboard_domain(i: int) -> str:
    return f"dash{i:04d}.bench.test"


def dashboard_run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, then time ``dashboard()`` and the 24-hour ``series()`` in this process on the
    SQLite store (every store call run right away: the server's time without the hop to its
    storage thread)."""
    work = Path(tempfile.mkdtemp(prefix="strata-bench-dashboard-", dir=args.work_dir))
    try:
        data_dir = work / "strata-data"
        now = time.time()
        build_s = build_dashboard(
            data_dir, args.domains, args.in_outage, args.entries, args.delivered, now
        )
        print(f"built {args.domains} domains, {args.entries} queued in {build_s:.1f} s")
        store = SQLiteStore(data_dir, WallClock(), SyncExecutor())
        store.open()
        s = store
        ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=WallClock(),
            settings=Settings(data_dir=data_dir),
        )  # fmt: skip
        operator = Caller("bench", "operator")
        customer = Caller("bench-c3", "customer", reseller="r1", customer="c3")

        def time_it(call: Callable[[], Any]) -> tuple[list[float], Any]:
            samples: list[float] = []
            value: Any = None
            for _ in range(args.repeat):
                started = time.perf_counter()
                value = result_of(Deferred.fromCoroutine(call()))
                samples.append((time.perf_counter() - started) * 1000)
            return samples, value

        board_ms, board = time_it(lambda: dashboard.dashboard(ctx, operator))
        data = board.as_json()
        json_ms = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            json.dumps(board.as_json())
            json_ms.append((time.perf_counter() - started) * 1000)
        mine_ms, mine = time_it(lambda: dashboard.dashboard(ctx, customer))
        series_ms, chart = time_it(lambda: dashboard.series(ctx, operator, hours=24))
        week_ms, _ = time_it(lambda: dashboard.series(ctx, operator, hours=168))
        month_ms, _ = time_it(lambda: dashboard.series(ctx, operator, hours=720))
        mine_series_ms, mine_chart = time_it(lambda: dashboard.series(ctx, customer, hours=24))
        one_ms, one = time_it(
            lambda: dashboard.series(ctx, operator, hours=24, domain=dashboard_domain(0))
        )

        async def page() -> None:
            """The Dashboard page's two calls, as the panel makes them on each load."""
            await dashboard.dashboard(ctx, operator)
            await dashboard.series(ctx, operator, hours=24)

        page_ms, _ = time_it(page)
        sampler = SeriesSampler(WallClock(), s, s, s, s, s)  # type: ignore[arg-type]
        sample_ms, _ = time_it(lambda: sampler._sample())
        totals = data["totals"]
        ok = (
            totals["domains"] == args.domains
            and totals["outages"] == args.in_outage
            and totals["queued"] == args.entries
            and totals["activity_24h"]["delivered"] == args.delivered
            and len(mine.rows) == args.domains // 10
            and len(chart.depth) == 720
            and chart.depth[-2][1] == args.entries
            and len(chart.timeline) == args.in_outage
            and mine_chart.depth[-2][1] == sum(r.reading.queue.queued for r in mine.rows)
            and one.depth[-2][1] == board.rows[0].reading.queue.queued
            and len(one.timeline) == 1
        )
        result_of(store.close())
        return {
            "domains": args.domains,
            "in_outage": args.in_outage,
            "entries": args.entries,
            "delivered": args.delivered,
            "repeat": args.repeat,
            "build_s": build_s,
            "load": Path("/proc/loadavg").read_text().split()[:3],
            "dashboard_operator": summary(board_ms),
            "dashboard_json": summary(json_ms),
            "dashboard_customer": summary(mine_ms),
            "series_24h": summary(series_ms),
            "series_7d": summary(week_ms),
            "series_30d_over_a_day_of_points": summary(month_ms),
            "series_24h_customer": summary(mine_series_ms),
            "series_24h_one_domain": summary(one_ms),
            "dashboard_page": summary(page_ms),
            "sampler_minute": summary(sample_ms),
            "states": totals["states"],
            "ok": ok,
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def dashboard_report(results: dict[str, Any]) -> None:
    print()
    print(f"{results['domains']} domains ({results['in_outage']} in outage), "
          f"{results['entries']} queued, {results['delivered']} delivered in the last day, "
          f"{results['repeat']} repeats; load {' '.join(results['load'])}")  # fmt: skip
    print(f"{'call':<52}{'median ms':>11}{'p95 ms':>9}")
    for key, label in (
        ("dashboard_operator", "dashboard() as the operator (every domain)"),
        ("dashboard_json", "  its as_json() and json.dumps"),
        ("dashboard_customer", "dashboard() as a customer admin (its 100 domains)"),
        ("series_24h", "series(hours=24), 1.44M points stored"),
        ("series_7d", "series(hours=168) (only a day stored)"),
        ("series_30d_over_a_day_of_points", "series(hours=720) (only a day stored)"),
        ("series_24h_customer", "series(hours=24) as a customer admin"),
        ("series_24h_one_domain", "series(hours=24, domain=...) (its points)"),
        ("dashboard_page", "the page: dashboard() + series(hours=24)"),
        ("sampler_minute", "the sampler's minute (read all, write 1,000 points)"),
    ):
        s = results[key]
        print(f"{label:<52}{s['median_ms']:>11.1f}{s['p95_ms']:>9.1f}")
    print(f"states: {results['states']}; checks {'ok' if results['ok'] else 'FAILED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=None, help="100 (--dashboard: 1000)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--bulk-domains", nargs="*", default=None,
                        help="domains to hold and release (default: the middle one)")  # fmt: skip
    parser.add_argument("--work-dir", default=None, help="where the data directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--dashboard", action="store_true",
                        help="time the Dashboard instead (#14): in process, on SQLite; "
                             "--domains defaults to 1000 there")  # fmt: skip
    parser.add_argument("--in-outage", type=int, default=100, help="(--dashboard)")
    parser.add_argument("--delivered", type=int, default=5000, help="(--dashboard)")
    args = parser.parse_args()
    if args.dashboard:
        args.domains = args.domains or 1000
        dash = dashboard_run(args)
        dashboard_report(dash)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"dashboard-{stamp}.json"
        path.write_text(json.dumps(dash, indent=2))
        print(f"\n{path}")
        return 0 if dash["ok"] else 1
    args.domains = args.domains or 100
    if args.entries % args.domains or args.entries // args.domains % PAGE:
        parser.error("entries must be domains x a multiple of 100")
    results = run(args)
    report(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"admin-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{path}")
    return 0 if all(b["ok"] for b in results["bulk"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
