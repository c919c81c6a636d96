"""Real peers for interop tests and benchmarks, run privately over loopback.

Each harness starts its own instance of a real program (Postfix, ...) under a directory of its
own, listening on 127.0.0.1 only, and never touches the system's instance or its configuration.
"""
