"""`make demo`: run a stack's render locally and keep it running until Ctrl-C.

    python -m authproxy_local.demo [--stack dev] [--mode extension-provider|envoy-filter]

Starts the live harness (:mod:`authproxy_local.harness`: Keycloak, Redis, oauth2-proxy, Envoy and
an echo app per protected app, on loopback), prints the URLs, the demo users and their passwords
(generated for this run only), and ready-to-paste commands for a browser and curl that resolve
the test hosts to this run's gateway without changing any system file. Ctrl-C (or SIGTERM) stops
every process it started.

A scenario runner: it imports the harness, nothing imports it.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time

from authproxy_local.core import local_map
from authproxy_local.core.pki import spki_hash
from authproxy_local.harness import Harness, HarnessError
from authproxy_local.install import InstallError


def spki_list(h: Harness) -> str:
    """The SPKI hashes of the run's server certificates (gateway, Keycloak), comma-separated."""
    e = h.endpoints
    files = [f for f in (e.cert_file, e.keycloak_cert_file) if f]
    return ",".join(spki_hash(f) for f in files)


def banner(h: Harness) -> str:
    cfg = h.config
    ip = h.gateway_ip
    hosts = h.public_hosts
    lines = [
        "",
        f"authproxy demo: stack {h.stack}, ext_authz mode {h.render.mode}, up in "
        f"{h.timings.seconds.get('total', 0):.0f}s",
        f"  gateway        https://<host>/ on {ip}:443 (http :80 redirects to https)",
        "",
        "  protected apps:",
    ]
    for a in cfg.apps:
        extra = []
        if a.groups:
            extra.append(f"groups {', '.join(a.groups)}")
        if a.public_paths:
            extra.append(f"public {', '.join(a.public_paths)}")
        if a.api_clients:
            extra.append("API clients with bearer tokens")
        lines.append(f"    {h.app_url(a.name):<36} {'; '.join(extra)}")
    lines += [
        f"  sign-out       {h.auth_url}/oauth2/sign_out",
        f"  Keycloak       {cfg.keycloak.url}/admin/  (admin / {h.keycloak_admin_password})",
        "",
        "  demo users (passwords generated for this run):",
    ]
    for u in h.users.values():
        lines.append(f"    {u.username:<10} {u.password}   groups: {', '.join(u.groups) or '-'}")
    chromium = (
        f"chromium --user-data-dir=$(mktemp -d) "
        f"--host-resolver-rules={shlex.quote(local_map.host_resolver_rules(hosts, ip))} "
        f"--ignore-certificate-errors-spki-list={spki_list(h)} "
        f"{h.app_url(cfg.apps[0].name)}"
    )
    resolve = " ".join(f"--resolve {host}:443:{ip}" for host in hosts)
    lines += [
        "",
        "  open it in a browser (host names resolve to the gateway for this browser only):",
        f"    {chromium}",
        "  or with curl:",
        f"    curl -i --cacert {h.ca_file} {resolve} {h.app_url(cfg.apps[0].name)}",
        "",
        f"  logs: {h.run_dir}",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m authproxy_local.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", default="dev")
    p.add_argument("--mode", choices=("extension-provider", "envoy-filter"))
    p.add_argument("--for-seconds", type=float, default=0,
                   help="stop after this many seconds (0: run until Ctrl-C); for smoke tests")
    a = p.parse_args(argv)
    h = Harness(a.stack, mode=a.mode, log=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        h.start()
    except (HarnessError, InstallError) as e:
        print(f"demo failed to start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(banner(h), flush=True)
        deadline = time.monotonic() + a.for_seconds if a.for_seconds else None
        while deadline is None or time.monotonic() < deadline:
            dead = [n for n, proc in h.procs.items() if not proc.alive()]
            if dead:
                print(f"stopped unexpectedly: {', '.join(dead)} (see {h.run_dir})", file=sys.stderr)
                return 1
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\nstopping...", file=sys.stderr)
        return 0
    finally:
        h.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    raise SystemExit(main())
