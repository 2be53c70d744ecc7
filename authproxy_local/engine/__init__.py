"""`make engine`: the stacks through the real Pulumi engine, providers and servers (a scenario
runner: it imports the library rooms, nothing imports it). :mod:`.scenario` runs the stacks,
:mod:`.checks` checks the servers, :mod:`.workloads` the rollouts, the HPA, the drain and what
runs after destroy, :mod:`.faults` the cluster faults (each failing, then converging),
:mod:`.interrupt` kills `pulumi up` halfway and recovers;
``python -m authproxy_local.engine`` is the entry point (:mod:`.__main__`)."""
