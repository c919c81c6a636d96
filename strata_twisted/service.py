"""
The composition root: builds the stores, the policy, the listeners and the loops, and ties their
lifetimes to one Twisted ``MultiService``.

This is the only module (with the CLI) that names a concrete storage backend, and the only one that
receives the reactor from ``tap.makeService``; everything it builds gets the reactor (as a clock, a
TCP reactor or a thread bridge) passed in explicitly.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.server import Site

from strata_twisted.admin.api import AdminAPI
from strata_twisted.admin.metrics import MetricsResource
from strata_twisted.admin.panel import Panel
from strata_twisted.admin.site import AdminSite
from strata_twisted.clock import SecondsClock
from strata_twisted.config import IntakeSettings, ListenAddress, Settings
from strata_twisted.core.admin.accounts import ADMIN_PASSWORD_FILE, bootstrap_admin
from strata_twisted.core.admin.auth import AdminLogin, Passwords, SessionStore
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.alert_email import EmailAlertSender
from strata_twisted.core.alerts import (
    FanOutAlertSender,
    IAlertSender,
    LogAlertSender,
    QueueAgeWatch,
    RecordedAlertSender,
    ThrottledAlertSender,
)
from strata_twisted.core.control import ControlPoller
from strata_twisted.core.credentials import VerificationCache
from strata_twisted.core.dkim import DkimKeyring
from strata_twisted.core.domains import DomainCache, load_send_as, load_user_lists
from strata_twisted.core.intake import IntakePolicy, route_held_postmaster
from strata_twisted.core.login import Authenticator, networks
from strata_twisted.core.metrics import Metrics, StoreGauges
from strata_twisted.core.monitor import Monitor
from strata_twisted.core.portal import Portal
from strata_twisted.core.relay import RelayLoop
from strata_twisted.core.retention import RetentionJob
from strata_twisted.core.series import SeriesSampler
from strata_twisted.core.signing import DkimSigner
from strata_twisted.core.submission import SubmissionPolicy
from strata_twisted.core.throttle import LoginThrottle
from strata_twisted.errors import ConfigError
from strata_twisted.executor import Executor, SyncExecutor, ThreadExecutor
from strata_twisted.fired import result_of
from strata_twisted.interfaces import IEventStore, IQueueStore
from strata_twisted.model import FLUSH_ACTION
from strata_twisted.proto.imap_server import ServerLimits
from strata_twisted.proto.mime import index_bytes
from strata_twisted.runlock import ServerLock
from strata_twisted.server._transport import ConnectionLimits
from strata_twisted.server.dns import DNSPythonResolver
from strata_twisted.server.imap import IMAPFactory, PoolExecutor
from strata_twisted.server.probe import SMTPProber
from strata_twisted.server.relay import SMTPRelayConnector
from strata_twisted.server.smtp import SMTPIntakeFactory
from strata_twisted.server.tls import load_server_context, load_trust_root
from strata_twisted.server.webhook import WebhookAlertSender, alert_webhook_target
from strata_twisted.storage import open_store


class ListenerService(Service):
    """Listens on one address; a failure to listen stops startup with a clear error."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        what: str,
        address: ListenAddress,
        factory: IProtocolFactory,
        tls: CertificateOptions | None = None,
    ) -> None:
        """``tls``: the listener speaks TLS from the first byte (IMAP on port 993)."""
        self._reactor = reactor
        self._what = what
        self._address = address
        self._factory: IProtocolFactory = factory
        if tls is not None:
            self._factory = TLSMemoryBIOFactory(tls, False, factory)
        self._port: IListeningPort | None = None

    def _endpoint(self) -> IStreamServerEndpoint:
        host, port = self._address.host, self._address.port
        if ":" in host:
            return endpoints.TCP6ServerEndpoint(self._reactor, port, interface=host)
        return endpoints.TCP4ServerEndpoint(self._reactor, port, interface=host)

    def startService(self) -> None:
        super().startService()
        outcome: list[object] = []
        self._endpoint().listen(self._factory).addBoth(outcome.append)
        # TCP endpoints listen synchronously; raising here makes twistd refuse to start.
        result = outcome[0] if outcome else None
        if isinstance(result, Failure):
            result.raiseException()
        self._port = result  # type: ignore[assignment]
        self.log.info("{what} listening on {address}", what=self._what, address=self._address)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is None:
            return None
        port, self._port = self._port, None
        result = port.stopListening()
        return result if isinstance(result, Deferred) else None


class StoreService(Service):
    """Starts the storage thread first and stops it last, after every listener has stopped."""

    def __init__(self, executor: Executor, store: Any, domains: DomainCache) -> None:
        self._executor = executor
        self._store = store
        self._domains = domains

    def startService(self) -> None:
        super().startService()
        self._executor.start()
        self.domains_loaded = self._domains.start()

    def stopService(self) -> None:
        super().stopService()
        self._domains.stop()
        # close() is queued behind the commits already submitted; stop() then runs them all and
        # joins the thread (work submitted after stop() would never run).
        self._store.close()
        self._executor.stop()


class ExecutorService(Service):
    """Starts a worker pool with the listeners and stops it after them (password checks)."""

    def __init__(self, executor: PoolExecutor) -> None:
        self._executor = executor

    def startService(self) -> None:
        super().startService()
        self._executor.start()

    def stopService(self) -> None:
        super().stopService()
        self._executor.stop()


class RetentionService(Service):
    """Runs the daily shadow-mail retention job (#4) while the server runs."""

    def __init__(self, job: RetentionJob) -> None:
        self._job = job

    def startService(self) -> None:
        super().startService()
        self._job.start()

    def stopService(self) -> None:
        super().stopService()
        self._job.stop()


class GaugesService(Service):
    """Refreshes the store figures of ``/metrics`` while the server runs (after the store
    starts, before it stops)."""

    def __init__(self, gauges: StoreGauges) -> None:
        self._gauges = gauges

    def startService(self) -> None:
        super().startService()
        self._gauges.start()

    def stopService(self) -> None:
        super().stopService()
        self._gauges.stop()


class SamplerService(Service):
    """Records the dashboard's time series once a minute while the server runs (after the
    store starts, before it stops)."""

    def __init__(self, sampler: SeriesSampler) -> None:
        self._sampler = sampler

    def startService(self) -> None:
        super().startService()
        self._sampler.start()

    def stopService(self) -> None:
        super().stopService()
        self._sampler.stop()


class PostmasterService(Service):
    """
    At startup, once the protected domains are known: the ``<Postmaster>`` mail held while no
    operator address was set goes to the one set now, and the relay is asked to send it.
    """

    log = Logger()

    def __init__(
        self,
        store: StoreService,
        queue: IQueueStore,
        policy: IntakePolicy,
        relay: RelayLoop,
        clock: SecondsClock,
    ) -> None:
        self._store = store
        self._queue = queue
        self._policy = policy
        self._relay = relay
        self._clock = clock

    def startService(self) -> None:
        super().startService()
        self._store.domains_loaded.addCallback(self._route)

    def _route(self, result: object) -> object:
        async def route() -> None:
            routed = await route_held_postmaster(self._queue, self._policy, self._clock.seconds())
            for domain in sorted({entry.domain for entry in routed}):
                self._relay.drain(domain)

        d = Deferred.fromCoroutine(route())
        d.addErrback(lambda f: self.log.failure("cannot route the mail held for <Postmaster>", f))
        return result  # the other services waiting for the domains do not wait for this


class StrataService(MultiService):
    """
    The root service.  If any child fails to start, the ones already started are stopped (the
    storage thread among them, which would otherwise keep the process alive) and the error
    propagates, so twistd exits non-zero.

    It holds the data directory's L{ServerLock} (taken by L{build_service}): at start it writes
    its pid and start time there (after twistd's daemonizing fork, so the pid is the server's),
    and it lets go once every child has stopped.
    """

    def __init__(self, lock: ServerLock, clock: IReactorTime) -> None:
        super().__init__()
        self._lock = lock
        self._clock = clock

    def startService(self) -> None:
        try:
            self._lock.record(os.getpid(), self._clock.seconds())
            super().startService()
        except BaseException:
            self.stopService()
            raise

    def stopService(self) -> Deferred[object]:
        d: Deferred[object] = super().stopService()
        d.addBoth(self._released)
        return d

    def _released(self, result: object) -> object:
        self._lock.release()
        return result


class LoopsService(Service):
    """
    Runs the relay, the monitor and the control poller once the protected domains are loaded,
    and stops them before the store.
    """

    def __init__(
        self,
        relay: RelayLoop,
        monitor: Monitor,
        control: ControlPoller,
        store: StoreService,
        resolver: DNSPythonResolver,
        watch: QueueAgeWatch | None = None,
    ) -> None:
        self._relay = relay
        self._watch = watch
        self._monitor = monitor
        self._control = control
        self._store = store
        self._resolver = resolver

    def startService(self) -> None:
        super().startService()
        self._resolver.start()
        self._store.domains_loaded.addCallback(lambda _: self._start())

    def _start(self) -> None:
        if self.running:
            self._relay.start()
            self._monitor.start()
            self._control.start()
            if self._watch is not None:
                self._watch.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._control.stop()
        if self._watch is not None:
            self._watch.stop()
        self._relay.stop()
        self._resolver.stop()
        return self._monitor.stop()


def build_alert_sender(
    settings: Settings, reactor: Any, events: IEventStore, email: IAlertSender | None = None
) -> IAlertSender:
    """
    The monitor's alerts: a log line, each domain's webhook call and (``email``) alert email,
    at most one per kind per domain per ``monitor.alert_window`` (issue #5: no alert storms).
    Webhook calls are recorded in the event log (the email sender records its own).
    """
    webhook = RecordedAlertSender(
        WebhookAlertSender(reactor, alert_webhook_target), events, "webhook",
        lambda domain: domain.alert_webhook is not None,
    )  # fmt: skip
    senders: list[IAlertSender] = [LogAlertSender(), webhook]
    if email is not None:
        senders.append(email)
    return ThrottledAlertSender(
        FanOutAlertSender(senders), reactor, window=settings.monitor.alert_window
    )


def _smarthost_auth(settings: Settings) -> tuple[str, str] | None:
    """The smarthost's credentials, the password read from its file now, at startup, so that a
    missing file stops Strata with a clear error."""
    outbound = settings.outbound
    if not outbound.smarthost_user or outbound.smarthost_password_file is None:
        return None
    path = outbound.smarthost_password_file
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(
                "outbound.smarthost_password_file",
                f"{path} may be read by other users; make it private: chmod 600 {path}",
            )
        password = path.read_text().strip()
    except OSError as e:
        raise ConfigError("outbound.smarthost_password_file", str(e)) from None
    if not password:
        raise ConfigError("outbound.smarthost_password_file", f"{path} is empty")
    return outbound.smarthost_user, password


def build_service(settings: Settings, reactor: Any) -> MultiService:
    """
    Build everything ``twistd -n strata`` runs, from validated settings.  First it takes the data
    directory's lock (L{strata_twisted.runlock}): a second server on the same directory stops
    here with L{strata_twisted.runlock.ServerRunning}, before it opens the store.
    """
    lock = ServerLock(settings.data_dir)
    lock.acquire()
    try:
        return _build(settings, reactor, StrataService(lock, reactor))
    except BaseException:
        lock.release()
        raise


def _build(settings: Settings, reactor: Any, root: StrataService) -> MultiService:
    log = Logger(namespace="strata")
    for note in settings.notes:
        log.warn("{config}: {note}", config=settings.source, note=note)
    executor: Executor = ThreadExecutor(reactor)
    store = open_store(settings.storage.backend, settings.data_dir, reactor, executor,
                       sync_each_result=settings.relay.sync_each_result,
                       indexer=index_bytes)  # fmt: skip
    store.open(recover=True)
    log.info(
        "Strata storage: {backend} in {data_dir}",
        backend=settings.storage.backend,
        data_dir=settings.data_dir,
    )
    domains = DomainCache(reactor, store, settings.storage.reload_interval, users=store)
    # Read the protected domains now, synchronously (the reactor is not running yet), so the
    # listeners never answer "try again later" while the first load is on the storage thread.
    snapshot = open_store(settings.storage.backend, settings.data_dir, reactor, SyncExecutor())
    if settings.storage.backend == "memory":
        snapshot = store
    else:
        snapshot.open(recover=False)
    try:
        listed = result_of(snapshot.list_domains())
        domains.prime(
            listed,
            result_of(snapshot.domains_version()),
            result_of(Deferred.fromCoroutine(
                load_user_lists(snapshot, [d.name for d in listed])
            )),
            result_of(snapshot.credentials_version()),
            send_as=result_of(Deferred.fromCoroutine(load_send_as(snapshot))),
        )  # fmt: skip
        # A first start: the operator account "admin", its password logged once and saved.
        result_of(Deferred.fromCoroutine(bootstrap_admin(
            _admin_context(settings, snapshot, reactor), settings.data_dir / ADMIN_PASSWORD_FILE,
            log, passwords=Passwords(),
        )))  # fmt: skip
    finally:
        if snapshot is not store:
            result_of(snapshot.close())
    store_service = StoreService(executor, store, domains)
    store_service.setServiceParent(root)
    metrics = Metrics()
    gauges = StoreGauges(reactor, store, store, store)
    metrics.watch(gauges)
    GaugesService(gauges).setServiceParent(root)
    SamplerService(SeriesSampler(reactor, store, store, store, store, store)).setServiceParent(root)

    tls = load_server_context(
        settings.certificate_path,
        settings.private_key_path,
        hostname=settings.hostname,
        generate=settings.tls.generate_self_signed and settings.tls.certificate is None,
        now=reactor.seconds(),
    )
    connector = SMTPRelayConnector(
        reactor, store, settings.hostname, settings.relay.connect_timeout,
        load_trust_root(settings.tls.ca_file), settings.outbound.smarthost_target,
        _smarthost_auth(settings),
    )  # fmt: skip
    resolver = DNSPythonResolver(reactor, settings.relay.resolver, settings.relay.mx_port)
    # CPU work off the reactor thread: password checks, DKIM body hashes and signatures.
    workers = PoolExecutor(reactor)
    ExecutorService(workers).setServiceParent(root)
    relay = RelayLoop(
        reactor, store, store, store, domains, connector, settings.relay, settings.hostname,
        resolver, settings.outbound,
        # Key files are read on the storage thread, where DESIGN puts file I/O.
        DkimSigner(reactor, store, DkimKeyring(settings.data_dir), executor, workers),
        metrics=metrics,
    )  # fmt: skip
    alerts = build_alert_sender(settings, reactor, store, EmailAlertSender(
        reactor, store, store, store, domains, settings.hostname, settings.alerts.sender,
        deliver_now=relay.drain, tenants=store,  # a reseller's customer: the reseller's brand
    ))  # fmt: skip
    monitor = Monitor(
        reactor, domains, store, store, store,
        SMTPProber(reactor, helo_name=settings.hostname), alerts, settings.monitor,
        on_recovery=relay.kick,
    )  # fmt: skip
    watch = QueueAgeWatch(reactor, store, domains, alerts, settings.alerts.queue_age)
    control = ControlPoller(
        reactor, store, {FLUSH_ACTION: relay.kick}, settings.storage.reload_interval
    )
    LoopsService(relay, monitor, control, store_service, resolver, watch).setServiceParent(root)

    policy = IntakePolicy(reactor, domains, store, settings.hostname, monitor.note_intake,
                          postmaster=settings.server.postmaster, metrics=metrics)  # fmt: skip
    PostmasterService(store_service, store, policy, relay, reactor).setServiceParent(root)
    intake = SMTPIntakeFactory(reactor, policy, settings.intake, tls)
    for address in settings.intake.listen:
        ListenerService(reactor, "SMTP intake", address, intake).setServiceParent(root)
    portal = Portal(reactor, domains, store, grace=settings.imap.portal_grace)
    # One login check for IMAP and submission: the same throttle, cache and password pool, so
    # failures on one count on the other and Roundcube's SMTP login reuses its IMAP one.
    imap = settings.imap
    authenticator = Authenticator(
        reactor, store, workers, portal.closed_reason, cache=VerificationCache(),
        throttle=LoginThrottle(reactor, max_delay=imap.login_max_delay),
        trusted_networks=networks(imap.trusted_networks + settings.submission.trusted_networks),
        metrics=metrics,
    )  # fmt: skip
    imap_server = _imap_listeners(settings, reactor, store, tls, authenticator, root)
    submission = _submission_listeners(
        settings, reactor, domains, store, tls, authenticator, relay, root
    )
    if imap_server is not None:
        # New mail in a shadow INBOX wakes its owner's IDLE sessions at once.
        wake = partial(imap_server.mailbox_changed, mailbox="INBOX")
        policy.on_shadow = wake
        if submission is not None:
            submission.on_shadow = wake
    retention = RetentionJob(reactor, domains, store, store, store,
                             default_days=settings.imap.retention_days)  # fmt: skip
    RetentionService(retention).setServiceParent(root)
    admin_ctx = _admin_context(settings, store, reactor, workers)
    # The panel's "Send a test alert" calls the webhook as the monitor's sender does, unthrottled.
    admin_ctx.send_webhook = WebhookAlertSender(reactor, alert_webhook_target).test_alert
    _admin_listeners(
        settings, reactor, admin_ctx, MetricsResource(metrics.registry), metrics, workers, tls, root
    )
    return root


def _admin_context(
    settings: Settings, store: Any, clock: SecondsClock, cpu: Executor | None = None
) -> AdminContext:
    """The admin operations' view of ``store`` (every role from one backend); ``cpu``: where
    they hash passwords and make keys (None: right away, before the reactor runs)."""
    return AdminContext(
        domains=store, queue=store, messages=store, events=store, monitor=store,
        control=store, credentials=store, tenants=store, admins=store, audit=store,
        series=store, clock=clock, settings=settings, cpu=cpu or SyncExecutor(),
    )  # fmt: skip


def _admin_listeners(
    settings: Settings,
    reactor: Any,
    ctx: AdminContext,
    metrics: MetricsResource,
    recorder: Metrics,
    workers: Executor,
    tls: CertificateOptions,
    root: MultiService,
) -> None:
    """The admin web site on each ``[admin] listen`` address (HTTPS with ``[admin] tls``, on the
    mail listeners' certificate): the panel, the JSON API and ``/metrics`` (L{build_root})."""
    admin = settings.admin
    if not admin.listen:
        return
    passwords = Passwords(workers)  # argon2 off the reactor thread
    sessions = SessionStore(reactor, admin.session_idle)  # the API's and the panel's
    login = AdminLogin(reactor, passwords, max_delay=admin.login_max_delay, metrics=recorder)
    api = AdminAPI(ctx, sessions, login, passwords, secure=admin.tls, metrics=metrics)
    panel = Panel(ctx, sessions, login, passwords, secure=admin.tls)
    site = Site(AdminSite(api.resource(), panel.resource()), reactor=reactor)
    what = "admin web (HTTPS)" if admin.tls else "admin web"
    for address in admin.listen:
        listener = ListenerService(reactor, what, address, site, tls if admin.tls else None)
        listener.setServiceParent(root)


def _imap_listeners(
    settings: Settings,
    reactor: Any,
    store: Any,
    tls: CertificateOptions,
    authenticator: Authenticator,
    root: MultiService,
) -> IMAPFactory | None:
    """The IMAP server (#4): one factory per kind of listener, sharing limits and caches; the
    first (its sessions are shared with the other), or None when IMAP is off."""
    imap = settings.imap
    if not imap.listen and not imap.tls_listen:
        return None
    limits = ServerLimits(
        max_line_length=imap.max_line_length,
        max_append_size=imap.max_append_size or settings.intake.max_message_size,
        idle_timeout=int(imap.idle_timeout),
    )
    connections = ConnectionLimits(imap.max_connections, imap.max_connections_per_ip)
    shared: dict[str, Any] = {
        "trusted_networks": imap.trusted_networks, "limits": limits,
        "connections": connections, "authenticator": authenticator,
    }  # fmt: skip
    plain = IMAPFactory(reactor, store, store, store, tls, **shared)
    implicit = IMAPFactory(reactor, store, store, store, tls, implicit_tls=True,
                           share_with=plain, **shared)  # fmt: skip
    for address in imap.listen:
        ListenerService(reactor, "IMAP", address, plain).setServiceParent(root)
    for address in imap.tls_listen:
        ListenerService(reactor, "IMAP over TLS", address, implicit, tls).setServiceParent(root)
    return plain


def _submission_listeners(
    settings: Settings,
    reactor: Any,
    domains: DomainCache,
    store: Any,
    tls: CertificateOptions,
    authenticator: Authenticator,
    relay: RelayLoop,
    root: MultiService,
) -> SubmissionPolicy | None:
    """SMTP submission (#5): STARTTLS (587) and implicit TLS (465), one policy and limits; the
    policy, or None when submission is off."""
    sub = settings.submission
    if not sub.listen and not sub.tls_listen:
        return None
    policy = SubmissionPolicy(reactor, domains, store, settings.hostname,
                              max_per_hour=sub.max_per_hour, deliver_now=relay.drain,
                              postmaster=settings.server.postmaster)  # fmt: skip
    limits = IntakeSettings(
        max_message_size=sub.max_message_size or settings.intake.max_message_size,
        max_recipients=sub.max_recipients,
        max_command_line_length=settings.intake.max_command_line_length,
        idle_timeout=sub.idle_timeout, data_timeout=sub.data_timeout,
        max_connections_per_ip=sub.max_connections_per_ip, max_connections=sub.max_connections,
    )  # fmt: skip
    connections = ConnectionLimits(sub.max_connections, sub.max_connections_per_ip)
    shared: dict[str, Any] = {
        "authenticator": authenticator, "connections": connections,
        "trusted_networks": sub.trusted_networks,
    }  # fmt: skip
    starttls = SMTPIntakeFactory(reactor, policy, limits, tls, **shared)
    implicit = SMTPIntakeFactory(reactor, policy, limits, tls, implicit_tls=True, **shared)
    for address in sub.listen:
        ListenerService(reactor, "SMTP submission", address, starttls).setServiceParent(root)
    for address in sub.tls_listen:
        ListenerService(reactor, "SMTP submission over TLS", address, implicit,
                        tls).setServiceParent(root)  # fmt: skip
    return policy


def default_paths(settings: Settings) -> dict[str, Path]:
    """Where things live, for ``strata status`` and the logs."""
    return {
        "data_dir": settings.data_dir,
        "certificate": settings.certificate_path,
    }
