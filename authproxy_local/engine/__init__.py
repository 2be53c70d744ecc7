"""`make engine`: the stacks through the real Pulumi engine, providers and servers (a scenario
runner: it imports the library rooms, nothing imports it). :mod:`.scenario` runs the stacks,
:mod:`.checks` checks the servers, :mod:`.interrupt` kills `pulumi up` halfway and recovers;
``python -m authproxy_local.engine`` is the entry point (:mod:`.__main__`)."""
