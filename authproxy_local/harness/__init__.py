"""The live harness: the rendered stack running on this machine against the real components.

    with Harness("dev", mode="envoy-filter") as h:   # or h = Harness(...).start(); h.stop()
        with h.resolving():                          # *.authproxy.test -> the gateway, in-process
            requests.get(h.app_url("echo"), verify=h.ca_file)

What runs (all on loopback, free ports, one run directory per start):

- **Redis** (Debian ``redis-server``) with the rendered password, append-only persistence in the
  run's temp dir, so a restart keeps the sessions.
- **Keycloak** (``kc.sh start-dev``) with ``--hostname`` set to the rendered Keycloak URL, so every
  issuer string is exactly the render's, and an H2 file database in the run's temp dir (a restart
  keeps realm, users and SSO sessions). Then the stack itself configures it: the real
  ``pulumi up`` of the program (pulumi-keycloak, pulumi-random, pulumi-kubernetes) against this
  Keycloak and a throw-away etcd + kube-apiserver started for the run
  (:mod:`.stack`; `--hostname` keeps the stack's issuer, the providers reach
  Keycloak through a CONNECT proxy that knows only its host).
- **echo apps** (:mod:`.echo`), one per rendered app, standing in for its pods.
- **Envoy**: the ingress gateway (HTTPS 443 + HTTP 80 on a per-run loopback address 127.x.y.z)
  and one Envoy per app playing its sidecar (inbound), each running the configuration istiod
  generates for that proxy: Istio's own translation (``tools/istio-xds``, built from the pinned
  istio.io/istio) over the render, assembled into static bootstraps by
  :mod:`authproxy_local.mesh.adapter`. istiod fetches the JWKS from the local Keycloak over TLS
  (Keycloak's HTTPS listener, reached through a CONNECT proxy that knows only its host).
- a **CONNECT proxy** through which oauth2-proxy reaches the public hosts (Keycloak via the
  gateway), and refuses any other host.
- **oauth2-proxy** with exactly the args and env of the Deployment `pulumi up` created in the
  API server; only cluster addresses are rewritten (:mod:`authproxy_local.core.local_map`), Secret
  references resolve to the Secrets the stack created.

The render (the program under mocks) still gives what the harness plays instead of a cluster:
Istio's objects for istiod's translation, the pods/Services to stand in for, the chart values.

Secrets: the client secret, cookie secret, Redis password and demo users' passwords are the
values pulumi-random generated in that `pulumi up`, read from the Kubernetes Secrets the stack
created in the API server (demo passwords from the stack's secret output); the Keycloak admin
password (the stack's ``keycloakAdminPassword``) and, for ``realmMode: existing``, the pre-made
admin client's secret are the run's own (a user supplies those). They are kept in memory and in
0600 files of the run's temp dir (deleted on stop), passed to processes through env or config
files (never on a command line), and never logged. Logs go to
``<cache>/runs/<run id>/`` (the last 10 runs are kept).

Every process started is stopped on :meth:`Harness.stop`, on an exception during start, on
interpreter exit and on SIGTERM/SIGINT.

Rooms: :mod:`.run` is the orchestration (the :class:`Harness` class: prepare, start in order,
stop, fault controls), built from one part per component: :mod:`.stack` (local cluster, `pulumi
up`, what it created), :mod:`.keycloak`, :mod:`.redis`, :mod:`.envoy` (Istio's translation and
the Envoys), :mod:`.oauth2_proxy` (and the echo apps, :mod:`.echo`), on the shared state of
:mod:`.state`; :mod:`.runs` keeps the run directories. Processes, ports, the CONNECT proxy and
name resolution are :mod:`authproxy_local.core`, certificates :mod:`authproxy_local.core.pki`.

Imports: every library room (core, install, keycloak, cluster, mesh, render) and
``components.config``; nothing imports the harness but the scenario runners (demo, bench) and
the tests.
"""

from authproxy_local.core.net import resolving
from authproxy_local.core.processes import HarnessError

from .redis import redis_command, redis_keys
from .run import Harness
from .state import DemoUser

__all__ = ["DemoUser", "Harness", "HarnessError", "redis_command", "redis_keys", "resolving"]
