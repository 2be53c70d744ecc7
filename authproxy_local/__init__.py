"""Everything that runs the program on one machine, in rooms by concern (docs/architecture.md):

    core/      cache, locks, processes and ports, CONNECT proxy, name resolution, certificates,
               the cluster-to-local address map                    (imports: libraries only)
    install/   pinned, cached real components; GROUPS: what each make target needs
    render/    the program under Pulumi's mocks: render files, placeholders, digests, scaling
    keycloak/  one launcher, one admin client, one login-form parser
    cluster/   etcd + kube-apiserver (lightkube), CRDs, the stacks through pulumi.automation
    mesh/      Istio's translation (tools/istio-xds), the adapter to static bootstraps, Envoy
    harness/   one live run of a stack, one part per component        (imports: all above)
    demo.py  engine/  bench/   scenario runners and their entry points (import the rooms above;
                               nothing imports them)
    together.py                runs commands side by side (`make live`: e2e and engine); stdlib only

Data flows down only: a room imports the rooms listed above it (core and install first), never
one below; ``components/`` is imported only for its pure config model and spec builders.
Entry points: ``python -m authproxy_local.{install,render,demo,engine,bench,together}``.
"""
