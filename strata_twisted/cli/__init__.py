"""
The ``strata`` command: admin operations on the same store the server uses.

A thin layer over L{strata_twisted.core.admin} (#13), which decides who may do what and does
it; the CLI calls it as the local operator (L{strata_twisted.core.admin.identity.cli_caller})
and says what happened.  The package: L{parser} (built from one module per command group in
L{commands}), L{context} (the data dir, its store and admin context), L{output} (escaped text,
JSON, tables, times) and L{main}.

It runs without a reactor: the SQLite store gets a synchronous executor, so every Deferred it
returns has already fired. With no ``--config`` it reads ``./strata.toml`` when present, else
the embedded default, exactly as ``twistd -n strata`` does, so both work from the same directory
with no flags. A running server notices domain changes within ``storage.reload_interval`` (0.5
s), and acts on the requests the CLI leaves for it (``queue flush``; ``queue release`` asks for
a flush of the released domains) within a second: it polls the store's control requests
(L{IControlStore}). Queue changes (hold, delete, bounce) need no request: the relay reads entry
states from the store before every batch. Whether a server runs on the data dir is known from
the lock it holds there (L{strata_twisted.runlock}; ``strata status`` shows it). With none
running, a request would never be acted on (a server skips the requests made before it started),
so none is made: ``queue flush`` and the email part of ``alert test`` fail (exit 1) saying so,
and ``queue release`` releases and says the entries go when a server starts.

The one exception to "no reactor" is ``strata alert test``, the only command that does network
I/O: it runs the server's webhook sender on a private reactor of its own, for that one call.

``strata user`` manages synced credentials (L{ICredentialStore}): only password hashes reach the
store, and no password or hash is ever printed or put in an event.  Passwords are read from the
terminal (typed twice) or, for scripts, from the first line of stdin (``--password-stdin``).
``strata user alias`` manages the send-as aliases submission allows a user besides their own
address.

``strata admin`` and ``strata api-key`` manage the accounts of the admin panel and JSON API
and their keys (L{commands.accounts}): passwords are read the same way and stored as argon2id
hashes; a key is printed once and only its hash is stored.

Exit codes: 0 success, 1 a failed operation (e.g. unknown domain), 2 bad usage (including a
value the parser cannot check, such as a malformed domain name or duration) or configuration
(including a data dir with no Strata store in it: only ``domain add`` creates one).

Text output escapes control characters: headers, addresses and the primaries' replies come from
strangers, and a raw ESC could rewrite the admin's terminal.  ``--json`` output is exact.  Times
are shown in local time with their UTC offset.
"""

from strata_twisted.cli.main import main
from strata_twisted.cli.parser import build_parser

__all__ = ["build_parser", "main"]
