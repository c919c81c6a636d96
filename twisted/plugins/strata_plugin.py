"""
The twistd plugin: ``twistd -n strata``.

It names ``strata_twisted.tap`` only as a string, so discovering plugins never imports Strata.
There is deliberately no ``__init__.py`` in ``twisted/`` or ``twisted/plugins/``: Twisted finds this
file through ``twisted.plugins.__path__`` (see the README, "Installing").
"""

from twisted.application.service import ServiceMaker

strata = ServiceMaker(
    "Strata",
    "strata_twisted.tap",
    "Strata email continuity server (backup MX, relay queue, shadow mailboxes)",
    "strata",
)
