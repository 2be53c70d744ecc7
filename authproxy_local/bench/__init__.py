"""What authentication costs on the request path: ``make bench`` (issue 7).

    python -m authproxy_local.bench [--quick] [--mode extension-provider|envoy-filter]
                                    [--rounds N] [--duration S] [--connections 1 16 64]

Starts the live harness (:mod:`authproxy_local.harness`: the dev render on real Keycloak, Redis
and oauth2-proxy), then a **bench Envoy** whose listeners are copies of the harness's rendered
gateway listener (HTTPS :443, same TLS, same connection manager, same filters and routes), each
on its own loopback address, with every app route sent to a fast upstream (a plain-HTTP listener
of the same Envoy answering ``200 ok`` with ``direct_response``, so no app is the bottleneck).
Debian ``wrk`` drives them, all variants in one run, alternating, several rounds, medians:

``baseline``        the gateway listener with no HTTP filter but the router (the limit)
``jwt``             the rendered gateway filters, ``Authorization: Bearer <Keycloak access token>``:
                    the stack's own in-proxy path for API clients (ext_authz skipped by the CUSTOM
                    policy's rules, ``jwt_authn`` verifies, RBAC requires the verified token)
``session-redis``   the rendered gateway filters, a signed-in session cookie: ext_authz ->
                    oauth2-proxy (exactly the rendered args) -> Redis
``session-cookie``  the same with a second oauth2-proxy whose only changed flag is
                    ``--session-store-type=cookie`` (the whole session in the cookie)
``tuned-*``         the session path with one configuration change (see :data:`TUNINGS`), so
                    before/after numbers come from the same alternating run

CPU: the load generator gets one core, the system under test the other (``taskset``):
wrk ``-t1`` on CPU 0; the bench Envoy (``--concurrency 1``), every oauth2-proxy (``GOMAXPROCS``
as rendered: the CPU limit, 1) and Redis on CPU 1. Keycloak and the harness's own gateway (idle
during the runs) share CPU 0 with wrk. Every run is checked: the upstream's and the filters'
Envoy counters must account for every request wrk counted (a 302 to sign-in would otherwise look
like a fast success).

Outputs: ``build/bench/results.json`` (every run), and with the default (full) run
``docs/images/bench.png`` and the generated section of ``docs/benchmarks.md``. ``--quick`` is a
one-round smoke run that writes only ``build/bench/quick``.

Credentials (session cookies, the token) reach wrk through a 0600 Lua script in the harness's
temp dir, never a command line, and are never printed.

Rooms: :mod:`.runner` (the :class:`Bench`: harness, bench Envoys, measuring), :mod:`.model`
(variants, tunings), :mod:`.bootstraps` (the bench Envoys' configs), :mod:`.wrk`, :mod:`.stats`,
:mod:`.report`, :mod:`.system` (CPU with psutil, counters, facts), :mod:`.signin`,
:mod:`.proxy_profile` (oauth2-proxy's CPU profile), :mod:`.cookie_filter_cost`; the entry point
is :mod:`.__main__`. A scenario runner: it imports the library rooms (harness, mesh, install,
core, keycloak, render), nothing imports it. The names below are its public API.
"""

from .bootstraps import (
    JWT_CACHE_SIZE,
    authz_cluster,
    bench_bootstrap,
    set_flags,
    sidecar_bootstrap,
    with_jwt_cache,
)
from .model import (
    BASE_VARIANTS,
    EXTRA_TUNINGS,
    LABELS,
    MARK_BEGIN,
    MARK_END,
    TUNINGS,
    UPSTREAM_BODY,
    UPSTREAM_CLUSTER,
    BenchError,
    Tuning,
)
from .report import (
    breakdown_table,
    cpu_cost_ratios,
    draw_plot,
    labels_for,
    replace_section,
    report_markdown,
    samples_from_results,
)
from .signin import login_form, session_cookie_header, sign_in
from .stats import (
    Row,
    Sample,
    Stat,
    anchor_ratios,
    markdown_table,
    plot_data,
    ratio_rows,
    schedule,
    summarize,
    whole_path_line,
)
from .system import cpu_layout, jwt_claims, parse_commandstats, parse_info_int
from .wrk import WrkResult, latency_ms, parse_wrk, wrk_script

__all__ = [
    "BASE_VARIANTS", "EXTRA_TUNINGS", "JWT_CACHE_SIZE", "LABELS", "MARK_BEGIN", "MARK_END", "TUNINGS",
    "UPSTREAM_BODY", "UPSTREAM_CLUSTER", "BenchError", "Row", "Sample", "Stat", "Tuning", "WrkResult",
    "anchor_ratios", "authz_cluster", "bench_bootstrap", "breakdown_table", "cpu_cost_ratios", "cpu_layout",
    "draw_plot", "jwt_claims", "labels_for", "latency_ms", "login_form", "markdown_table", "parse_commandstats",
    "parse_info_int", "parse_wrk", "plot_data", "ratio_rows", "replace_section",
    "report_markdown", "samples_from_results", "schedule", "session_cookie_header", "set_flags",
    "sidecar_bootstrap", "sign_in", "summarize", "whole_path_line", "with_jwt_cache", "wrk_script",
]

