"""
What every admin operation works with: the storage roles, the clock, the settings, and the
tenancy and audit helpers built over them.  The composition root (the server) and the CLI each
build one L{AdminContext}; the API, the panel and the CLI pass it, with a L{Caller}, to the
operations in L{strata_twisted.core.admin}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from strata_twisted.clock import SecondsClock
from strata_twisted.config import Settings
from strata_twisted.core.admin.audit import Auditor
from strata_twisted.core.admin.tenancy import Tenancy
from strata_twisted.executor import Executor, SyncExecutor
from strata_twisted.interfaces import (
    IAdminStore,
    IAuditStore,
    IControlStore,
    ICredentialStore,
    IDomainStore,
    IEventStore,
    IMessageStore,
    IMonitorStore,
    IQueueStore,
    ISeriesStore,
    ITenantStore,
)
from strata_twisted.model import Domain, Outage

# Post a test alert to a domain's webhook (core/admin/alerts.py's WebhookTest): fires when the
# webhook answered 2xx, fails with a message fit for people otherwise.
SendWebhook = Callable[[Domain, Outage, int], Awaitable[None]]


def _always() -> bool:
    return True


@dataclass
class AdminContext:
    """
    ``server_running``: whether a server runs on this data directory now, so that requests
    left for it (a flush) will be acted on; inside the server always True, in the CLI the run
    lock's answer.  ``cpu``: where CPU-heavy steps run.  ``send_webhook``: how a test alert
    reaches a domain's webhook from this process (the server: an HTTP agent on its reactor; None
    where there is none to use, and a test alert's webhook part then fails and says so).
    """

    domains: IDomainStore
    queue: IQueueStore
    messages: IMessageStore
    events: IEventStore
    monitor: IMonitorStore
    control: IControlStore
    credentials: ICredentialStore
    tenants: ITenantStore
    admins: IAdminStore
    audit: IAuditStore
    series: ISeriesStore  # the dashboard's time series (#14)
    clock: SecondsClock
    settings: Settings
    server_running: Callable[[], bool] = _always
    # Where CPU-heavy steps run (hashing a user's password, making an RSA key): in the server a
    # thread pool, never the reactor thread; in the CLI right away.
    cpu: Executor = field(default_factory=SyncExecutor)
    send_webhook: SendWebhook | None = None
    tenancy: Tenancy = field(init=False)
    auditor: Auditor = field(init=False)

    def __post_init__(self) -> None:
        self.tenancy = Tenancy(self.tenants, self.domains)
        self.auditor = Auditor(self.audit, self.clock)
