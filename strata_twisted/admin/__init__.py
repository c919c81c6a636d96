"""
The admin web listener (#13): the JSON API, the panel (#14) and ``/metrics``.  Thin over
``core/admin`` and ``core/metrics``: nothing here decides who may do what.
"""
