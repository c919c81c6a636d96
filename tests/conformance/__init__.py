"""
Conformance suites for the storage roles (tahoe-lafs ``test_istorageserver.py`` is the model).

``suites.py`` holds one suite per interface in L{strata_twisted.interfaces}, written once as a
mixin class.  A backend's test module binds each suite it passes by subclassing it and providing
the fixtures the suites ask for (see ``suites.py``).  A backend that passes them is interchangeable.
"""
