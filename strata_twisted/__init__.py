"""
Strata: an email continuity server on Twisted.

When a customer's primary mail server is down, Strata accepts their inbound mail over SMTP, keeps it
durably, and drains it to the primary when it comes back.  See DESIGN.md in the shared docs and the
README for the map.  This module holds only the version.
"""

__version__ = "0.1.0"
