"""The floor every other room stands on: the cache location, locks, child processes and ports,
the CONNECT proxy and in-process name resolution, certificates (:mod:`.pki`, the one place that
makes them) and the mapping from the render's cluster addresses to local ones (:mod:`.local_map`).

Imports: the standard library and third-party libraries only; nothing else in authproxy_local.
"""
