"""Interop tests: Strata and its harnesses against real peers (Postfix, swaks) over loopback."""
