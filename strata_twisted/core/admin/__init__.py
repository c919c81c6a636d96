"""
Every admin operation, with the caller's identity and scope checked inside (#13, DESIGN
decision 10).  The CLI, the JSON API and the panel are thin layers over these functions; nothing
else decides who may do what.

- L{strata_twisted.core.admin.identity}: who is calling (L{Caller}) and what their scope allows.
- L{strata_twisted.core.admin.tenancy}: what a caller may see: operator → resellers → customers
  → domains; another tenant's objects are "not found" (L{NotFound}), never "forbidden".
"""
