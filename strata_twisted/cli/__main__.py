"""``python -m strata_twisted.cli``: the ``strata`` command."""

from strata_twisted.cli.main import main

raise SystemExit(main())
