"""`make soak`: what signed-in users see while production does what it does to the prod stack
(docs/reliability.md). A scenario runner: the live harness (the prod render on real Keycloak,
Redis with sentinels, as many oauth2-proxy processes as the Deployment has replicas, Envoy on
istiod's config) driven by the load generator (``tools/loadgen``), one line per scenario and a
last line ``soak: <n> scenarios, <failed> failed requests of <total>, <lost> sessions lost,
longest outage <s> s``.

Rooms: :mod:`.measure` (what the records mean: pure), :mod:`.load` (users, the load generator),
:mod:`.scenarios` (the events), ``__main__`` (the command). The short versions run in `make e2e`
(tests/e2e/test_98_reliability.py).

Imports: :mod:`authproxy_local.harness`, :mod:`authproxy_local.install`,
:mod:`authproxy_local.keycloak`, :mod:`authproxy_local.core`; nothing imports it but the tests.
"""
