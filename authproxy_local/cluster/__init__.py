"""A Kubernetes control plane on this machine and the stacks on it.

- :mod:`.apiserver`: etcd + kube-apiserver on loopback (certificates from :mod:`authproxy_local.core.pki`),
  spoken to through ``lightkube``: CRDs, namespaces, reading back what `pulumi up` created;
- :mod:`.controllers`: kube-controller-manager, kube-scheduler and kwok's simulated nodes beside
  it, so controllers act and `pulumi up` waits for rollouts as on a real cluster (`make engine`);
- :mod:`.crds`: the CRDs a user's cluster has before the stack (Istio's, the Gateway API's,
  cert-manager's, the ServiceMonitor), from their projects' Go modules;
- :mod:`.stacks`: the Pulumi project in a temp dir and its stacks through ``pulumi.automation``
  (workspace, config, preview, up, destroy, outputs, state).

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`, ``components.config``;
nothing above them (the harness and the ``make engine`` scenario import this room).
"""
