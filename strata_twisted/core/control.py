"""
The running server's ear for the ``strata`` CLI: it polls the L{IControlStore} for requests
(``strata queue flush``) and hands each one to the handler for its action.

The CLI is another process with no way to reach the reactor, so it appends a request to the store
and the server polls every ``interval`` seconds (like the domain cache's ``domains_version``), which
is how "a running server acts within a second" holds.  Requests are identified by their growing
id, never by time: the two processes' clocks need not agree.

At start the poller only notes the newest id and acts on nothing older: a flush asked for while
the server was down, or already handled before a restart, is not replayed at every start.

It knows nothing of what the actions do (the composition root passes ``{"flush": relay.kick}``)
and never raises: a failing store or handler is logged and the next poll goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from strata_twisted.interfaces import IControlStore

Handler = Callable[[str | None], object]


class ControlPoller:
    """Polls ``store`` every ``interval`` seconds and calls ``handlers[action](domain)``."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IControlStore,
        handlers: Mapping[str, Handler],
        interval: float,
    ) -> None:
        self._store = store
        self._handlers = dict(handlers)
        self._interval = interval
        self._last_id: int | None = None  # None until the start position is known
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock

    @property
    def last_id(self) -> int | None:
        """The id of the newest request seen (or skipped at start); None before the first poll."""
        return self._last_id

    def start(self) -> None:
        """Note the newest request now (acting on none of them), then poll every ``interval``."""
        d = self._loop.start(self._interval, now=True)
        d.addErrback(lambda f: self.log.failure("control poller stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> Deferred[None]:
        """Act on every request newer than the last one seen.  Never fails."""
        return Deferred.fromCoroutine(self._poll())

    async def _poll(self) -> None:
        try:
            if self._last_id is None:
                self._last_id = await self._store.last_request_id()
                return
            requests = await self._store.requests_after(self._last_id)
        except Exception:
            self.log.failure("cannot read control requests; trying again on the next poll")
            return
        for request in requests:
            self._last_id = request.id
            handler = self._handlers.get(request.action)
            if handler is None:
                self.log.warn(
                    "ignoring control request {id}: unknown action {action!r}",
                    id=request.id,
                    action=request.action,
                )
                continue
            self.log.info(
                "control request {id}: {action} {domain}",
                id=request.id,
                action=request.action,
                domain=request.domain or "(every domain)",
            )
            try:
                result = handler(request.domain)
            except Exception:
                self.log.failure("control request {id} ({action}) failed", id=request.id,
                                 action=request.action)  # fmt: skip
                continue
            if isinstance(result, Deferred):
                # Not awaited: a flush may take long, and the next request must not wait for it.
                result.addErrback(self._failed, request.id, request.action)

    def _failed(self, failure: Failure, request_id: int, action: str) -> None:
        self.log.failure("control request {id} ({action}) failed", failure, id=request_id,
                         action=action)  # fmt: skip
