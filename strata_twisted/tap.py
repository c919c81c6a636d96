"""
``twistd strata``: command-line options and ``makeService``.

The config is loaded and validated in ``postOptions``, so a bad key stops twistd with a message that
names it, before anything listens.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from strata_twisted.config import load_config
from strata_twisted.errors import ConfigError


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Run Strata, the email continuity server.  With no config file it starts on its embedded "
        "default: data in ./strata-data, SMTP intake on 127.0.0.1:2525."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "TOML config file (default: ./strata.toml when present, else the embedded default)",
        ],
    ]

    def postOptions(self) -> None:
        try:
            self["settings"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"invalid configuration: {e}") from None


def makeService(options: Options) -> IService:
    # The composition root's entry point: the one place that takes the running reactor, which
    # twistd has installed by now, and hands it to everything else explicitly.
    from twisted.internet import reactor

    from strata_twisted.errors import StrataError
    from strata_twisted.service import build_service

    settings = options["settings"]
    try:
        service = build_service(settings, reactor)
    except StrataError as e:
        # Nothing has started yet: say what is wrong and exit non-zero, without a traceback.
        sys.stderr.write(f"strata: cannot start: {e}\n")
        raise SystemExit(1) from None
    if settings.log.format == "json":
        from strata_twisted.jsonlog import JSONLogService, twistd_json_observer

        # twistd's own options (--logfile, -n, --logger, --syslog) say where the log goes.
        observer = twistd_json_observer(getattr(options, "parent", None))
        if observer is not None:
            return JSONLogService(service, observer)
    return service
