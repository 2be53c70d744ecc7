"""The request-path benchmark's pure parts (authproxy_local/bench/): wrk output parsing, the
alternating schedule, medians and ratios, the report and plot data, and the bench Envoy's
bootstrap built from istiod's config for the real dev render (accepted by the real Envoy)."""

from __future__ import annotations

import math
import os
import subprocess
from http.cookiejar import Cookie
from pathlib import Path
from typing import Any

import pytest
import yaml

from authproxy_local import bench as b
from authproxy_local import install, render
from authproxy_local.bench import __main__ as bench_main
from authproxy_local.bench import bootstraps as bb
from authproxy_local.core import local_map
from authproxy_local.mesh import adapter as xds_adapter
from authproxy_local.mesh import envoy
from authproxy_local.mesh.workloads import workloads
from components.cookies import LUA_FILTER_NAME
from tests.envoy_proc import offline_endpoints

CI = os.environ.get("CI", "").lower() == "true"

WRK_OUT = """Running 5s test @ https://127.10.20.30:443/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.02ms    3.11ms   1.02s    81.23%
    Req/Sec     1.79k   112.40     2.01k    70.00%
  Latency Distribution
     50%    8.22ms
     75%  845.00us
     90%   11.50ms
     99%   19.80ms
  8957 requests in 5.00s, 1.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1791.40
Transfer/sec:    247.12KB
"""


def test_parse_wrk_reads_every_number_in_ms():
    r = b.parse_wrk(WRK_OUT)
    assert r.requests == 8957 and r.seconds == 5.0 and r.rps == 1791.40
    assert (r.p50_ms, r.p75_ms, r.p90_ms, r.p99_ms) == (8.22, 0.845, 11.5, 19.8)
    assert r.max_ms == 1020.0
    assert r.socket_errors == 5 and r.non_2xx_3xx == 7


def test_parse_wrk_clean_run_and_units():
    clean = WRK_OUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 3\n", "").replace(
        "  Non-2xx or 3xx responses: 7\n", "")
    r = b.parse_wrk(clean)
    assert r.socket_errors == 0 and r.non_2xx_3xx == 0
    assert b.latency_ms("845.00us") == pytest.approx(0.845)
    assert b.latency_ms("2.00m") == 120_000
    with pytest.raises(ValueError):
        b.latency_ms("12 parsecs")


def test_parse_wrk_requires_latency_distribution():
    without = "\n".join(line for line in WRK_OUT.splitlines() if "%  " not in line or "Latency " in line)
    with pytest.raises(ValueError, match="--latency"):
        b.parse_wrk(without)
    with pytest.raises(ValueError, match="requests in"):
        b.parse_wrk(WRK_OUT.replace("8957 requests in 5.00s", "garbled"))


def test_wrk_script_sets_headers_without_escaping_and_refuses_breakouts():
    s = b.wrk_script({"Host": "echo.authproxy.test", "Cookie": '_a="x\\y"; _b=1'})
    assert 'wrk.headers["Host"] = [==[echo.authproxy.test]==]' in s
    assert 'wrk.headers["Cookie"] = [==[_a="x\\y"; _b=1]==]' in s
    # No per-request Lua: wrk builds the request once.
    assert "function" not in s
    with pytest.raises(ValueError):
        b.wrk_script({"Cookie": "a]==]; os.execute('x')"})
    with pytest.raises(ValueError):
        b.wrk_script({"Cookie": "a\nb"})


def test_schedule_alternates_and_rotates():
    plan = b.schedule(["a", "b", "c"], [1, 16], 2)
    assert len(plan) == 12
    assert plan[:3] == [(0, 1, "a"), (0, 1, "b"), (0, 1, "c")]
    assert plan[3:6] == [(0, 16, "b"), (0, 16, "c"), (0, 16, "a")]
    assert plan[6:9] == [(1, 1, "b"), (1, 1, "c"), (1, 1, "a")]
    # every (round, connections) runs every variant exactly once
    for r in (0, 1):
        for c in (1, 16):
            assert sorted(v for rr, cc, v in plan if (rr, cc) == (r, c)) == ["a", "b", "c"]
    # no variant always runs first
    firsts = {plan[i][2] for i in range(0, 12, 3)}
    assert len(firsts) > 1


def _wrk(rps: float, p50: float, p99: float, n: int = 1000) -> b.WrkResult:
    return b.WrkResult(requests=n, seconds=n / rps, rps=rps, p50_ms=p50, p75_ms=p50, p90_ms=p99,
                       p99_ms=p99, max_ms=p99, socket_errors=0, non_2xx_3xx=0)


def _sample(v: str, c: int, r: int, rps: float, p50: float, p99: float, **cpu: float) -> b.Sample:
    return b.Sample(variant=v, connections=c, round=r, wrk=_wrk(rps, p50, p99), verified=1000,
                    cpu_ms=cpu or {"envoy": 0.1, "wrk": 0.02}, sut_core_busy=1.0, load_core_busy=0.3,
                    loadavg=0.5, redis_calls={"get": 1.0} if v.startswith("session") else {},
                    new_connections={"ext_authz": 0, "redis": 0})


SAMPLES = [
    _sample("baseline", 16, 0, 10000, 1.0, 5.0), _sample("baseline", 16, 1, 9000, 1.2, 6.0),
    _sample("baseline", 16, 2, 11000, 0.8, 4.0),
    _sample("jwt", 16, 0, 5000, 3.0, 6.0), _sample("jwt", 16, 1, 4000, 3.5, 7.0),
    _sample("jwt", 16, 2, 6000, 2.5, 5.0),
    _sample("session-redis", 16, 0, 1800, 8.0, 20.0, envoy=0.35, **{"oauth2-proxy": 0.21, "redis": 0.02}),
    _sample("session-redis", 16, 1, 1700, 9.0, 22.0, envoy=0.36, **{"oauth2-proxy": 0.22, "redis": 0.02}),
    _sample("session-redis", 16, 2, 1900, 7.0, 18.0, envoy=0.34, **{"oauth2-proxy": 0.20, "redis": 0.03}),
]


def test_summarize_takes_medians_per_variant_and_connections():
    s = b.summarize(SAMPLES)
    assert s[("baseline", 16)] == b.Stat(rps=10000, p50_ms=1.0, p99_ms=5.0, n=3, rps_min=9000, rps_max=11000)
    assert s[("session-redis", 16)].rps == 1800 and s[("session-redis", 16)].p99_ms == 20.0


def test_ratio_rows_against_baseline():
    rows = b.ratio_rows(b.summarize(SAMPLES), ["baseline", "jwt", "session-redis", "missing"], [16, 64])
    assert [r.variant for r in rows] == ["baseline", "jwt", "session-redis"]
    base, jwt, sess = rows
    assert base.rps_ratio == 1.0 and base.p50_ratio == 1.0
    assert jwt.rps_ratio == pytest.approx(0.5) and jwt.p50_ratio == pytest.approx(3.0)
    assert sess.rps_ratio == pytest.approx(0.18) and sess.p99_ratio == pytest.approx(4.0)
    assert base.spread == pytest.approx(0.2)
    # against another reference (before/after tables)
    again = b.ratio_rows(b.summarize(SAMPLES), ["session-redis"], [16], baseline="session-redis")
    assert again[0].rps_ratio == 1.0
    # no baseline measured: ratios are NaN, not a crash
    lonely = b.ratio_rows(b.summarize(SAMPLES[3:6]), ["jwt"], [16])
    assert math.isnan(lonely[0].rps_ratio)


def test_anchor_ratios_and_markdown_table():
    s = b.summarize(SAMPLES)
    ar = b.anchor_ratios(s, [16])
    assert ar[16]["vs_jwt"] == pytest.approx(0.36) and ar[16]["vs_baseline"] == pytest.approx(0.18)
    md = b.markdown_table(b.ratio_rows(s, ["baseline", "session-redis"], [16]), {"baseline": "no auth"})
    lines = md.splitlines()
    assert lines[0].startswith("| connections | variant | requests/s")
    assert lines[2] == "| 16 | no auth | 10,000 | 1.00 | 1.00 | 1.00 | 5.00 | 1.00 | 20% |"
    assert lines[3].startswith("| 16 | session-redis | 1,800 | 0.18 | 8.00 | 8.00 | 20.0 | 4.00 |")


def test_plot_data_series_follow_connections_with_gaps():
    d = b.plot_data(b.summarize(SAMPLES), ["baseline", "session-redis"], [1, 16])
    assert d["baseline"]["rps"][1] == 10000 and math.isnan(d["baseline"]["rps"][0])
    assert d["session-redis"]["p50"] == [pytest.approx(float("nan"), nan_ok=True), 8.0]
    assert d["session-redis"]["p99"][1] == 20.0


def test_draw_plot_writes_a_png(tmp_path: Path):
    path = tmp_path / "bench.png"
    d = b.plot_data(b.summarize(SAMPLES), ["baseline", "jwt", "session-redis"], [16])
    b.draw_plot(d, [16], b.LABELS, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_breakdown_and_report_sections():
    facts = {"date": "2026-11-28", "command": "make bench", "rounds": 3, "duration": 5.0, "mode": "extension-provider",
             "nproc": 2, "cpu_model": "AMD EPYC", "memory": "24 GiB", "kernel": "6", "measure_seconds": 300,
             "load_at_measure_start": [0.4, 0, 0], "load_at_measure_end": [0.6, 0, 0],
             "versions": {"envoy": "1.40.0"}, "cpu_layout": {"load_generator_cpu": 0, "system_under_test_cpu": 1},
             "proxy_env_gomaxprocs": "1", "sizes": {"redis_cookie_header": 179}}
    table = b.breakdown_table(SAMPLES, ["baseline", "session-redis"], 16, b.LABELS)
    row = next(line for line in table.splitlines() if "Redis (as rendered)" in line)
    # envoy 350 + oauth2-proxy 210 + redis 20 µs = 580 µs of the system under test, one GET
    assert "| 350 | 0 | 210 | 20 | 580 | 0 | GET 1.00 | 0.00 / 0.00 |" in row
    md = b.report_markdown(facts, SAMPLES, ["baseline", "jwt", "session-redis"], [16], (), "images/bench.png")
    assert "0.36 x JWT-only, 0.18 x baseline" in md
    assert "![requests/s and latency per variant](images/bench.png)" in md
    assert "Envoy 1.40.0" in md and "`make bench`" in md


def test_replace_section_keeps_the_hand_written_text():
    doc = f"# Benchmarks\nintro\n{b.MARK_BEGIN}\nold numbers\n{b.MARK_END}\nanalysis\n"
    new = b.replace_section(doc, "new numbers\n")
    assert new == f"# Benchmarks\nintro\n{b.MARK_BEGIN}\nnew numbers\n{b.MARK_END}\nanalysis\n"
    assert b.replace_section(new, "x").count(b.MARK_BEGIN) == 1
    with pytest.raises(ValueError):
        b.replace_section("no markers", "x")


def test_set_flags_replaces_in_place_and_appends():
    args = ["--a=1", "--session-store-type=redis", "--b=2", "--session-store-type=redis"]
    assert b.set_flags(args, {"session-store-type": "cookie", "request-logging": "false"}) == [
        "--a=1", "--session-store-type=cookie", "--b=2", "--request-logging=false"]


def test_cpu_layout_and_counters():
    assert b.cpu_layout([3, 1, 2]) == (1, 2)
    assert b.cpu_layout([0]) == (0, 0)
    info = "# Commandstats\r\ncmdstat_get:calls=12001,usec=1,usec_per_call=0.1\r\ncmdstat_auth:calls=3,usec=9\r\n"
    assert b.parse_commandstats(info) == {"get": 12001, "auth": 3}
    assert b.parse_info_int("# Stats\r\ntotal_connections_received:42\r\n", "total_connections_received") == 42
    stats = "http.bench_gateway.ext_authz.ok: 12\ncluster.x.upstream_rq_time: P0(nan,1) P25(nan,2)\n"
    assert envoy.parse_stats(stats) == {"http.bench_gateway.ext_authz.ok": 12}


def _cookie(name: str, value: str, domain: str) -> Cookie:
    return Cookie(0, name, value, None, False, domain, True, domain.startswith("."), "/", True, True,
                  None, False, None, None, {})


def test_session_cookie_header_takes_the_session_and_its_split_parts_only():
    jar = [_cookie("_authproxy_1", "B", ".authproxy.test"), _cookie("_authproxy_0", "A", ".authproxy.test"),
           _cookie("_authproxy_csrf_x", "C", ".authproxy.test"), _cookie("_authproxy", "S", ".other.test"),
           _cookie("KEYCLOAK_SESSION", "K", "keycloak.authproxy.test")]
    assert b.session_cookie_header(jar, "_authproxy", "echo.authproxy.test") == "_authproxy_0=A; _authproxy_1=B"
    with pytest.raises(b.BenchError):
        b.session_cookie_header(jar[2:], "_authproxy", "echo.authproxy.test")


def test_login_form_parses_keycloaks_form():
    page = ('<form id="other" action="/x"></form><form id="kc-form-login" method="post" '
            'action="/realms/r/login-actions/authenticate?session_code=a&amp;tab_id=b">'
            '<input name="username"><input type="hidden" name="credentialId" value="">'
            '<input type="checkbox" name="rememberMe"></form>')
    action, fields = b.login_form(page, "https://keycloak.authproxy.test/realms/r/protocol/openid-connect/auth")
    assert action == "https://keycloak.authproxy.test/realms/r/login-actions/authenticate?session_code=a&tab_id=b"
    assert fields == {"username": "", "credentialId": ""}
    with pytest.raises(b.BenchError):
        b.login_form("<html></html>", "https://x/")


def test_jwt_claims_decodes_the_payload():
    tok = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJvYXV0aDItcHJveHkiLCJzdWIiOiIxIn0.sig"
    assert b.jwt_claims(tok) == {"aud": "oauth2-proxy", "sub": "1"}


# --------------------------------------------------------------------------------------------
# The bench Envoy's bootstrap, from the real dev render
# --------------------------------------------------------------------------------------------

IP = "127.77.0.1"


def _endpoints(tmp: Path, render_result: Any) -> local_map.LocalEndpoints:
    return offline_endpoints(tmp, render_result, IP)


def _gateway(r: Any, ep: local_map.LocalEndpoints, tmp: Path, proxy: str = "gateway") -> dict[str, Any]:
    """istiod's gateway config for render ``r`` (tools/istio-xds), through the adapter. Offline,
    so istiod inlines a JWKS that rejects every token; the bench bootstrap does not care."""
    exe = install.find("istio-xds")
    if exe is None and CI:
        exe = install.ensure("istio-xds")
    if exe is None:
        pytest.skip("istio-xds is not built: python -m authproxy_local.install istio-xds (CI=true builds it)")
    w = workloads(r, ep)
    out = xds_adapter.translate(exe, xds_adapter.write_input(r, w, tmp / f"xds-{r.mode}"),
                                xds_adapter.translator_env(os.environ, None, ep.ca_file))
    admin = {p.name: (IP, 15900 + i) for i, p in enumerate(w.proxies)}
    return xds_adapter.bootstraps(out, w, ep, r.config.keycloak.host, admin,
                                  xds_adapter.credential_names(r)).by_proxy[proxy]


@pytest.fixture(scope="module")
def boots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    ext = render.render("dev", "extension-provider")
    ep = _endpoints(tmp, ext)
    ef = render.render("dev", "envoy-filter")
    harness = _gateway(ext, ep, tmp)
    side_harness = _gateway(ext, ep, tmp, "sidecar-echo")
    boot = b.bench_bootstrap(
        harness, app_host="echo.authproxy.test",
        listeners={"baseline": ("127.77.1.1", 443), "gateway": ("127.77.1.2", 443), "cookie": ("127.77.1.3", 443),
                   "ef": ("127.77.1.4", 443), "kept": ("127.77.1.5", 443), "wp": ("127.77.1.6", 443),
                   "wp-cache": ("127.77.1.7", 443)},
        upstreams={"wp": (IP, 9100), "wp-cache": (IP, 9102)}, jwt_cache=("wp-cache",),
        proxies={"cookie": (IP, 4181)}, upstream=(IP, 9000), admin=(IP, 9001),
        cluster_overrides={"gateway": {}},
        sources={"ef": _gateway(ef, ep, tmp)},
        drop_filters={"kept": b.EXTRA_TUNINGS["cookies-kept"].drop_filters},
    )
    side = b.sidecar_bootstrap(side_harness, listeners={"rendered": (IP, 9100), "bare": (IP, 9101),
                                                        "cache": (IP, 9102)},
                               upstream=(IP, 9000), admin=(IP, 9002), bare=("bare",), jwt_cache=("cache",))
    return {"boot": boot, "harness": harness, "tmp": tmp, "side": side, "side_harness": side_harness}


def _listener(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lst for lst in boot["static_resources"]["listeners"] if lst["name"] == f"bench_{name}")


def _filters(lst: dict[str, Any]) -> list[list[str]]:
    return [[f["name"] for f in h["http_filters"]] for h in bb._hcms(lst)]


def _clusters_used(lst: dict[str, Any]) -> set[str]:
    return {v for parent, k, v in bb._walk(lst) if k == "cluster" and isinstance(v, str)}


def test_bench_listeners_keep_the_rendered_filters_and_routes(boots):
    boot, harness = boots["boot"], boots["harness"]
    rendered = bb._https_listener(harness, 443)
    gw = _listener(boot, "gateway")
    # the session/JWT listener is the rendered one: same chains, filters, routes (names), TLS
    assert _filters(gw)[: len(rendered["filter_chains"])] == _filters(rendered)
    # istiod's order: CUSTOM (shadow RBAC + ext_authz, the session-keep filter inserted before
    # it), authn, DENY RBAC, then its own extras
    assert _filters(gw)[0] == ["envoy.filters.http.rbac", "authproxy.session_cookie_keep",
                               "envoy.filters.http.ext_authz",
                               "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac",
                               "envoy.filters.http.grpc_stats", "envoy.filters.http.fault",
                               "envoy.filters.http.cors", "authproxy.session_cookie_strip",
                               "envoy.filters.http.router"]
    assert [c.get("filter_chain_match") for c in gw["filter_chains"]] == [
        c.get("filter_chain_match") for c in rendered["filter_chains"]]
    route_names = [r.get("name") for _, k, v in bb._walk(gw["filter_chains"]) if k == "routes" for r in v]
    assert route_names == [r.get("name") for _, k, v in bb._walk(rendered["filter_chains"]) if k == "routes"
                           for r in v]
    assert "echo-default" in route_names
    # the default chain (wrk's SNI is the IP address) is the app host's chain
    assert "echo.authproxy.test" in gw["default_filter_chain"]["filter_chain_match"]["server_names"]
    assert gw["address"]["socket_address"] == {"address": "127.77.1.2", "port_value": 443}


def test_bench_listeners_send_apps_to_the_fast_upstream_and_drop_access_logs(boots):
    boot = boots["boot"]
    for name in ("baseline", "gateway", "cookie", "ef"):
        lst = _listener(boot, name)
        used = _clusters_used(lst)
        assert not any(c.startswith("outbound|8080") for c in used), name
        assert b.UPSTREAM_CLUSTER in used
        for hcm in bb._hcms(lst):
            assert "access_log" not in hcm and hcm["stat_prefix"] == f"bench_{name}"
    up = _listener(boot, "upstream")
    route = up["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["direct_response"] == {"status": 200, "body": {"inline_string": b.UPSTREAM_BODY}}
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == b.UPSTREAM_CLUSTER)
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == up["address"]


def test_baseline_has_only_the_router(boots):
    lst = _listener(boots["boot"], "baseline")
    assert all(f == ["envoy.filters.http.router"] for f in _filters(lst))


def test_cookie_listener_uses_its_own_proxy_everywhere(boots):
    boot = boots["boot"]
    rendered_authz = b.authz_cluster(bb._https_listener(boots["harness"], 443))
    cookie = _listener(boot, "cookie")
    assert b.authz_cluster(cookie) == "bench|oauth2-proxy|cookie"
    assert rendered_authz not in _clusters_used(cookie)  # the ext_authz call and the /oauth2/ routes
    c = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "bench|oauth2-proxy|cookie")
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": IP, "port_value": 4181}
    # an override without a proxy of its own keeps the rendered proxy's address
    gw_cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "bench|oauth2-proxy|gateway")
    assert gw_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"] == {"address": IP, "port_value": 4180}


def test_other_mode_listener_comes_from_its_render(boots):
    ef = _listener(boots["boot"], "ef")
    # envoy-filter mode, as istiod translates the EnvoyFilter: ext_authz first, before jwt_authn
    # and RBAC (so the gateway checks the token oauth2-proxy returns, as in the other mode); only
    # the session-keep response filter comes before it (it must see ext_authz's denials)
    order = _filters(ef)[0]
    assert order[:2] == ["authproxy.session_cookie_keep", "envoy.filters.http.ext_authz"]
    assert order.index("envoy.filters.http.ext_authz") < order.index("envoy.filters.http.jwt_authn")
    assert order.index("envoy.filters.http.ext_authz") < order.index("envoy.filters.http.rbac")


@pytest.mark.parametrize("which", ["boot", "side"])
def test_bench_bootstraps_are_accepted_by_envoy(boots, which):
    """The bench gateway's and the bench sidecar's bootstraps."""
    exe = install.find("envoy")
    if exe is None:
        if CI:
            pytest.fail("CI=true and Envoy is not installed")
        pytest.skip("Envoy is not installed (python -m authproxy_local.install envoy)")
    path = boots["tmp"] / f"bench-{which}.yaml"
    path.write_text(yaml.safe_dump(boots[which], sort_keys=False))
    r = subprocess.run([str(exe), "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_tunings_change_only_what_they_name():
    every = [*b.TUNINGS, *b.EXTRA_TUNINGS.values()]
    names = [t.name for t in every]
    assert len(set(names)) == len(names) and not set(names) & set(b.BASE_VARIANTS)
    for t in every:
        assert t.stack_key and (t.set_args or t.env or t.mode or t.cluster or t.drop_filters or t.jwt_cache)
        assert not set(t.set_args) & {"http-address", "metrics-address", "session-store-type", "cookie-secret"}


def test_the_cookies_kept_variant_is_the_rendered_listener_without_the_cookie_filter(boots):
    gw, kept = _listener(boots["boot"], "gateway"), _listener(boots["boot"], "kept")
    assert [[f for f in chain if f != LUA_FILTER_NAME] for chain in _filters(gw)] == _filters(kept)
    assert any(LUA_FILTER_NAME in chain for chain in _filters(gw))
    with pytest.raises(b.BenchError, match="no HTTP filter"):
        b.bench_bootstrap(boots["harness"], app_host="echo.authproxy.test",
                          listeners={"x": ("127.77.1.9", 443)}, proxies={}, upstream=(IP, 9000),
                          admin=(IP, 9001), drop_filters={"x": ("no.such.filter",)})


def _side(side: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lst for lst in side["static_resources"]["listeners"] if lst["name"] == f"side_{name}")


def _jwt_providers(lst: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for h in bb._hcms(lst) for f in h["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"
            for p in f["typed_config"]["providers"].values()]


def test_whole_path_gateway_listeners_send_the_app_to_the_sidecar(boots):
    boot = boots["boot"]
    wp = _listener(boot, "wp")
    assert _filters(wp) == _filters(_listener(boot, "gateway"))  # the rendered gateway, unchanged
    assert "bench|sidecar|wp" in _clusters_used(wp) and b.UPSTREAM_CLUSTER not in _clusters_used(wp)
    c = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "bench|sidecar|wp")
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": IP, "port_value": 9100}
    # the JWT cache only where asked for, on every provider; the rendered listener has none
    assert _jwt_providers(_listener(boot, "wp-cache"))
    assert all(p["jwt_cache_config"] == {"jwt_cache_size": b.JWT_CACHE_SIZE}
               for p in _jwt_providers(_listener(boot, "wp-cache")))
    assert not any("jwt_cache_config" in p for p in _jwt_providers(wp))


def test_sidecar_copies_are_istiods_inbound_config_on_their_own_port(boots):
    side, src = boots["side"], boots["side_harness"]
    inbound = next(lst for lst in src["static_resources"]["listeners"] if lst["name"] == "virtualInbound")
    rendered = _side(side, "rendered")
    # istiod's inbound filters as generated: jwt_authn verifies, RBAC requires the principal
    assert _filters(rendered) == _filters(inbound)
    assert all(chain[:2] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"] for chain in _filters(rendered))
    assert rendered["listener_filters"] == inbound["listener_filters"]
    ports = {(c.get("filter_chain_match") or {}).get("destination_port") for c in rendered["filter_chains"]}
    assert 9100 in ports and 15000 not in ports  # the app port's chains match the copy's port
    assert all(f == ["envoy.filters.http.router"] for f in _filters(_side(side, "bare")))
    assert not any("jwt_cache_config" in p for p in _jwt_providers(rendered))
    assert all("jwt_cache_config" in p for p in _jwt_providers(_side(side, "cache")))
    # the inbound cluster (the app) is the fast upstream
    c = next(c for c in side["static_resources"]["clusters"] if c["name"].startswith("inbound|"))
    assert c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": IP, "port_value": 9000}


def _wp_sample(variant: str, conns: int, rps: float, p99: float) -> b.Sample:
    w = b.WrkResult(requests=int(rps * 5), seconds=5.0, rps=rps, p50_ms=1.0, p75_ms=1.0, p90_ms=1.0,
                    p99_ms=p99, max_ms=p99, socket_errors=0, non_2xx_3xx=0)
    return b.Sample(variant=variant, connections=conns, round=0, wrk=w, verified=w.requests,
                    cpu_ms={"envoy": 0.3, "sidecar": 0.1}, sut_core_busy=1.0, load_core_busy=0.5, loadavg=1.0)


def test_whole_path_line_and_report():
    samples = [_wp_sample(v, c, rps, p99) for c in (16, 64) for v, rps, p99 in
               (("wp-baseline", 5000, 5.0), ("wp-jwt", 2000, 10.0), ("wp-session", 1420, 18.0))]
    summary = b.summarize(samples)
    assert b.whole_path_line(summary, [16, 64]) == "bench: whole path signed-in/JWT 0.71x @16, 0.71x @64; p99 1.8x @16"
    assert b.whole_path_line(summary, [1]) == "bench: whole path not measured"
    facts: dict[str, Any] = {"versions": {}, "cpu_layout": {}, "sizes": {}}
    md = b.report_markdown(facts, samples, ["wp-baseline", "wp-jwt", "wp-session"], [16, 64], (), "x.png")
    assert "16 connections: 0.71x the throughput, p99 1.80x" in md
    row = next(line for line in md.splitlines() if line.startswith("| whole path, session"))
    assert "| 300 | 100 | 0 | 0 | 400 |" in row  # gateway and sidecar Envoy CPU, summed


def test_levers_compare_with_their_reference():
    t = {x.name: x for x in b.TUNINGS}
    assert t["wp-envoy-filter"].reference == "wp-session" and t["wp-jwt-jwt-cache"].reference == "wp-jwt"
    assert b.EXTRA_TUNINGS["proxy-before"].reference == "session-redis"


def test_cpu_cost_ratio_and_rebuild_from_results(tmp_path: Path):
    import json
    from dataclasses import asdict

    samples = [_wp_sample(v, 16, rps, 10.0) for v, rps in (("wp-baseline", 5000), ("wp-jwt", 2000),
                                                          ("wp-session", 1400))]
    samples[2].cpu_ms = {"envoy": 0.5, "sidecar": 0.2, "oauth2-proxy": 0.3, "wrk": 0.1}
    jwt_us, session_us = b.cpu_cost_ratios(samples, [16])[16]
    assert jwt_us == pytest.approx(400.0) and session_us == pytest.approx(1000.0)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"facts": {"versions": {}, "cpu_layout": {}, "sizes": {}},
                                   "variants": [s.variant for s in samples], "connections": [16],
                                   "samples": [{**asdict(s), "sut_share": s.sut_share} for s in samples]}))
    assert b.samples_from_results(json.loads(results.read_text())) == samples
    assert bench_main.rebuild(results, write_docs=False) == 0
