"""Keycloak, run locally and spoken to as a user or an admin does:

- :mod:`.server`: the one launcher (``kc.sh start-dev``) the harness and ``make engine`` use;
- :mod:`.admin`: the one admin REST client (test-only objects, what an existing realm holds);
- :mod:`.login`: the one parser of HTML forms (Keycloak's login form) for scripted sign-ins.

Imports: :mod:`authproxy_local.core` and :mod:`authproxy_local.install`; nothing above them.
"""
