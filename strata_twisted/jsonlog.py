# -*- test-case-name: tests.test_jsonlog -*-
"""
``[log] format = "json"``: twistd's log as one JSON object per line, for log shippers (#13).

Each line has the event's own fields (``domain``, ``user``, ``reason``, … as the code logged
them) and these, which win over an event field of the same name:

- ``time`` (seconds since the epoch) and ``timestamp`` (ISO 8601, UTC);
- ``level`` (debug, info, warn, error, critical), ``namespace`` and ``system``;
- ``text``: the message as the text log would show it, and ``format``, its template (the same
  for every event of one kind: what a shipper groups by);
- ``failure``: the traceback, when the event carries one.

A value JSON cannot hold is written as its ``str`` (an address as ``127.0.0.1:25``).
Twisted's own ``jsonFileLogObserver`` is not used as it is: it writes no formatted text,
separates records with ``\\x1e`` (RFC 7464, not one object per line), and spells levels and
objects as class UUIDs meant for reloading events into Twisted, not for a shipper.

How twistd gets it: twistd asks its application for an ``ILogObserver`` before it falls back
to its text log (the way a ``.tac`` file chooses its observer).  A plugin never sees the
application, only its service becoming the application's child, so L{JSONLogService} wraps the
root service and sets the component at that moment.  ``--logger`` and ``--syslog`` given on
twistd's command line still win; the file is the one twistd would have written (``--logfile``,
stdout with ``-n`` and no file, else ``twistd.log``), and it rotates by size as twistd's does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEvent
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile


def json_line(event: LogEvent) -> str:
    """One event as one JSON object and a newline."""
    record: dict[str, Any] = {
        key: value for key, value in event.items() if not key.startswith("log_")
    }
    when = event.get("log_time")
    level = event.get("log_level")
    record["time"] = when
    record["timestamp"] = (
        datetime.fromtimestamp(when, UTC).isoformat() if isinstance(when, int | float) else None
    )
    record["level"] = getattr(level, "name", None)
    record["namespace"] = event.get("log_namespace")
    record["system"] = event.get("log_system", record.get("system", "-"))
    record["text"] = formatEvent(event)
    record["format"] = event.get("log_format")
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
        except Exception:
            record["failure"] = repr(failure)
    else:
        record.pop("failure", None)  # a legacy event's Failure object, if any
    return json.dumps(record, default=str, ensure_ascii=False) + "\n"


def json_observer(out: IO[str]) -> ILogObserver:
    """An observer writing L{json_line} for each event to ``out``."""
    observer: ILogObserver = FileLogObserver(out, json_line)
    return observer


def twistd_json_observer(twistd_options: Mapping[str, Any] | None) -> ILogObserver | None:
    """
    A JSON observer on the file twistd's text log would have used, from twistd's own options;
    None when twistd should choose as usual (``--logger`` or ``--syslog`` given, or ``-`` for a
    daemon, which twistd refuses with its own message).
    """
    options: Mapping[str, Any] = twistd_options or {}
    if options.get("logger") or options.get("syslog"):
        return None
    logfile = options.get("logfile") or ""
    nodaemon = bool(options.get("nodaemon", False))
    if logfile == "-":
        return json_observer(sys.stdout) if nodaemon else None
    if not logfile and nodaemon:
        return json_observer(sys.stdout)
    return json_observer(LogFile.fromFullPath(logfile or "twistd.log"))


class JSONLogService(MultiService):
    """
    Runs ``service`` and, when twistd makes it the application's child, sets the application's
    ``ILogObserver`` to ``observer``.
    """

    def __init__(self, service: IService, observer: ILogObserver) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._observer = observer
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]
