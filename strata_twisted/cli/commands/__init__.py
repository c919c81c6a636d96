"""The ``strata`` command groups, one module each, every one thin over
L{strata_twisted.core.admin}: parse the arguments, call the operation as the local operator,
print its result."""
