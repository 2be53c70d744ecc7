"""The data path's configuration, as Istio makes it: Istio's own translation of the stack's objects
(``tools/istio-xds``, istiod's code), the adapter from its output to static bootstraps for
upstream Envoy, and the Envoy processes that run them.

- :mod:`.workloads`: what a cluster would give istiod (pods, Services, EndpointSlices);
- :mod:`.adapter`: runs the translator, assembles one static bootstrap per proxy;
- :mod:`.envoy`: writes, validates and starts an Envoy; :mod:`.envoy_config`: shared names.

Imports: :mod:`authproxy_local.core`, :mod:`authproxy_local.install`; nothing above them.
"""
