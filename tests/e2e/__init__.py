"""
End-to-end tests: Strata as ``twistd`` runs it, Debian's Roundcube served by ``php -S`` and
Debian's headless Chromium, all on loopback, driven the way a user drives the webmail.
"""
