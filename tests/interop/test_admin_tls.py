"""
The admin listener over TLS (``[admin] tls = true``, the mail listeners' certificate): the API
answers over HTTPS, a browser session's cookie is marked ``Secure`` (as well as ``HttpOnly`` and
``SameSite=Strict``), and a login's CSRF origin check expects ``https://``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.peers.admin_api import AdminClient
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess, bootstrap_password

pytestmark = pytest.mark.interop


def test_over_tls_the_session_cookie_is_secure(strata_factory: Any) -> None:
    port = free_port()
    strata: StrataProcess = strata_factory(
        extra_config=f'[admin]\nlisten = ["127.0.0.1:{port}"]\ntls = true\n', admin_port=port
    )
    strata.start()
    password = bootstrap_password(strata)
    browser = AdminClient(port, tls=True)
    answer = browser.login("admin", password)
    assert answer.status == 200, answer.body
    attributes = [a.strip().lower() for a in answer.headers["set-cookie"].split(";")]
    assert attributes[0].startswith("strata_session=")
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(attributes[1:])
    assert browser.get("/api/v1/admins").status == 200
    # The origin a browser sends for this site is https://host:port; http:// is another site.
    foreign = AdminClient(port, tls=True, extra_headers={"Origin": f"http://127.0.0.1:{port}"})
    refused = foreign.login("admin", password)
    assert refused.status == 403 and refused.error_code == "csrf"
    same = AdminClient(port, tls=True, extra_headers={"Origin": f"https://127.0.0.1:{port}"})
    assert same.login("admin", password).status == 200
    # Plain HTTP on the TLS port gets no answer a client could use.
    plain = AdminClient(port)
    with pytest.raises(OSError):
        plain.get("/api/v1/openapi.json")
