"""
Schemathesis hooks for L{tests.interop.test_admin_schemathesis}: keep the run from removing the
operator account it runs as, or revoking its own key.

Schemathesis learns values from answers (``GET /api/v1/admins`` names the account, ``GET
/api/v1/api-keys`` gives the key's id) and reuses them in later requests, so an operator's run
would sooner or later delete its own account and go on getting 401s, valid but testing nothing.
These hooks drop just those cases; every operation is still called with every other value.  The
account name and key id come from the environment the test sets.

They also keep the server's own traffic on loopback: a generated domain's primary (``relay``)
becomes 127.0.0.1 on the generated port (the monitor probes it), and a generated alert webhook a
loopback URL (an outage alert would post to it).  The server's checks of these fields are the
contract tests' business.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

PROTECTED = {
    value
    for value in (os.environ.get("STRATA_FUZZ_ADMIN"), os.environ.get("STRATA_FUZZ_KEY_ID"))
    if value
}


def _harmless(case: Any) -> bool:
    if case.method.upper() != "DELETE":
        return True
    values = [*(case.path_parameters or {}).values(), *(case.query or {}).values()]
    return not any(str(v).strip().lower() in PROTECTED for v in values)


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    return _harmless(case)


_PORT = re.compile(r":([0-9]{1,5})$")


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    body = case.body
    if isinstance(body, dict):
        relay = body.get("relay")
        if isinstance(relay, str) and relay:
            port = _PORT.search(relay)
            body["relay"] = "127.0.0.1" + (port.group(0) if port else "")
        hook = body.get("alert_webhook")
        if isinstance(hook, str) and hook:
            body["alert_webhook"] = "http://127.0.0.1:9/strata-alert"
    return case
