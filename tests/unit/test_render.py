"""The offline render (authproxy_local.render): complete, deterministic, and free of secrets."""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from authproxy_local.render import mockrun, placeholders
from authproxy_local.render.offline import (
    FILES,
    MODES,
    RENDER_SECRETS,
    RenderError,
    Source,
    Substitutions,
    _check_no_leaks,
    kube_api,
    normalize,
    render,
    write,
)

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod")
CASES = [(s, m) for s in STACKS for m in MODES]


@functools.cache
def rendered(stack: str, mode: str):
    return render(stack, mode)


@functools.cache
def files(stack: str, mode: str) -> dict[str, str]:
    return rendered(stack, mode).files()


def secret_values(stack: str, mode: str) -> set[str]:
    """Every secret value the mocks produced in that run (and the forms derived from them)."""
    run = mockrun.run_program(stack, config=None, secrets=dict(RENDER_SECRETS),
                              overrides={"istio": {"extAuthzMode": mode}})
    out = set(RENDER_SECRETS.values())
    for r in run.resources:
        if r.type.startswith("random:"):
            for k in ("result", "base64", "hex", "bcryptHash"):
                v = r.outputs.get(k)
                if isinstance(v, str):
                    out |= {v, v.replace("+", "-").replace("/", "_"), v.rstrip("=")}
    return out


# ---------------------------------------------------------------- determinism


def test_two_cli_runs_are_byte_identical(tmp_path):
    """Two separate processes (different hash seeds) write byte-identical files."""
    outs = []
    for i, seed in enumerate(("1", "12345")):
        out = tmp_path / f"run{i}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-m", "authproxy_local.render", "--stack", "dev", "--out", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    assert {"kubernetes.yaml", "helm-releases.json", "keycloak.json", "random.json",
            "outputs.json", "render.json"} <= set(names)
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


@pytest.mark.parametrize("stack,mode", CASES)
def test_in_process_renders_are_identical(stack, mode):
    assert render(stack, mode).files() == files(stack, mode)


@pytest.mark.parametrize("stack,mode", CASES)
def test_objects_sorted_and_keys_sorted(stack, mode):
    r = rendered(stack, mode)
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])
            for o in r.kubernetes]
    assert keys == sorted(keys)
    docs = [d for d in yaml.safe_load_all(files(stack, mode)["kubernetes.yaml"]) if d is not None]
    assert docs == r.kubernetes
    for name, text in files(stack, mode).items():
        if name.endswith(".json"):
            data = json.loads(text)
            assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- completeness


@pytest.mark.parametrize("stack,mode", CASES)
def test_every_custom_resource_lands_in_exactly_one_file(stack, mode):
    r = rendered(stack, mode)
    run = mockrun.run_program(stack, secrets=dict(RENDER_SECRETS),
                              overrides={"istio": {"extAuthzMode": mode}})
    custom = [x for x in run.resources if x.custom]
    keycloak = sum(len(v) for k, v in r.keycloak.items() if k != "lookups")
    assert r.unrendered == []
    assert len(r.kubernetes) + len(r.helm_releases) + keycloak + len(r.random) == len(custom)
    assert len(r.kubernetes) == len([x for x in custom if x.type.startswith("kubernetes:")
                                     and x.type != "kubernetes:helm.sh/v3:Release"])


@pytest.mark.parametrize("stack,mode", CASES)
def test_every_kubernetes_object_has_an_explicit_name_and_no_warnings(stack, mode):
    r = rendered(stack, mode)
    assert r.warnings == []
    assert "${autoname:" not in "".join(files(stack, mode).values())
    for o in r.kubernetes:
        assert o["metadata"]["name"], o
        assert o["apiVersion"] and o["kind"]


def test_keycloak_objects_dev():
    kc = rendered("dev", "extension-provider").keycloak
    assert [e["inputs"]["realm"] for e in kc["Realm"]] == ["authproxy"]
    (client,) = kc["openid/Client"]
    assert client["inputs"]["clientId"] == "oauth2-proxy"
    assert client["inputs"]["validRedirectUris"] == ["https://auth.authproxy.test/oauth2/callback"]
    assert {e["inputs"]["name"] for e in kc["openid/AudienceProtocolMapper"]} == {"audience"}
    assert {e["inputs"]["name"] for e in kc["openid/GroupMembershipProtocolMapper"]} == {"groups"}
    assert [e["inputs"]["name"] for e in kc["Group"]] == ["admins"]
    assert sorted(e["inputs"]["username"] for e in kc["User"]) == ["alice", "bob"]
    (alice_groups,) = kc["UserGroups"]
    assert alice_groups["inputs"]["groupIds"] == ["${computed:authproxy-identity-group-admins.id}"]
    assert alice_groups["inputs"]["userId"] == "${computed:authproxy-identity-user-alice.id}"
    # Realm ids are the realm's name in Keycloak: a real value, not a placeholder.
    assert client["inputs"]["realmId"] == "authproxy"
    for mapper in kc["openid/AudienceProtocolMapper"] + kc["openid/GroupMembershipProtocolMapper"]:
        assert mapper["inputs"]["clientId"] == "${computed:authproxy-identity-client.id}"


def test_keycloak_lookups_prod():
    kc = render("prod", overrides={"keycloak": {"manageGroups": False}}).keycloak
    assert "Realm" not in kc and "Group" not in kc
    fns = [(lk["function"].rsplit(":", 1)[-1], lk["args"]) for lk in kc["lookups"]]
    assert ("getRealm", {"realm": "corp"}) in fns
    assert ("getGroup", {"groupPath": "/sre", "realmId": "corp"}) in fns
    assert kc["lookups"][[f for f, _ in fns].index("getGroup")]["result"]["id"] == (
        "${computed:getGroup(groupPath=/sre,realmId=corp).id}"
    )


def test_random_resources_carry_their_form():
    rnd = {e["name"]: e for e in rendered("dev", "extension-provider").random}
    assert rnd["authproxy-secrets-cookie-secret"]["kind"] == "RandomPassword"
    assert rnd["authproxy-secrets-cookie-secret"]["inputs"]["length"] == 43
    assert rnd["authproxy-secrets-client-secret"]["inputs"] == {"keepers": {"rotation": "1"}, "length": 40,
                                                       "special": False}
    assert isinstance(rnd["authproxy-secrets-client-secret"]["inputs"]["length"], int)  # not 40.0


def test_mode_is_applied_and_recorded():
    for mode in MODES:
        r = rendered("dev", mode)
        assert r.mode == mode
        assert json.loads(files("dev", mode)["render.json"])["mode"] == mode


def test_unknown_mode_is_rejected():
    with pytest.raises(RenderError, match="unknown mode"):
        render("dev", "lua-filter")


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("stack,mode", CASES)
def test_no_secret_reaches_any_file(stack, mode):
    text = "".join(files(stack, mode).values())
    assert mockrun.MOCK_SECRET_PREFIX not in text
    assert "mock-" not in text
    for value in secret_values(stack, mode):
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


@pytest.mark.parametrize("stack,mode", CASES)
def test_every_placeholder_has_a_source(stack, mode):
    r = rendered(stack, mode)
    used = set()
    for text in files(stack, mode).values():
        used |= {m.group(0) for m in placeholders.PLACEHOLDER_RE.finditer(text)}
    index = json.loads(files(stack, mode)["render.json"])["placeholders"]
    assert used and used <= set(index)
    for p, src in r.placeholders.items():
        if src["kind"] == "secret" and src["resource"] != "config":
            assert src["type"].startswith("random:") and "length" in src["form"], p


@pytest.mark.parametrize("stack,mode", CASES)
def test_secrets_appear_in_kubernetes_only_inside_secret_objects(stack, mode):
    for o in rendered(stack, mode).kubernetes:
        if o["kind"] != "Secret":
            assert "${secret:" not in json.dumps(o), f"{o['kind']} {o['metadata']['name']}"


def test_known_secret_placeholders_dev():
    r = rendered("dev", "extension-provider")
    (client,) = r.keycloak["openid/Client"]
    assert client["inputs"]["clientSecret"] == "${secret:authproxy-secrets-client-secret.result}"
    (provider,) = r.keycloak["providers"]
    assert provider["inputs"]["password"] == "${secret:config.keycloakAdminPassword}"
    assert r.outputs["demoUserPasswords"] == {
        "alice": "${secret:authproxy-identity-user-alice-password.result}",
        "bob": "${secret:authproxy-identity-user-bob-password.result}",
    }
    assert r.secret_outputs == ["demoUserPasswords"]


def test_prod_admin_client_secret_placeholder():
    (provider,) = rendered("prod", "extension-provider").keycloak["providers"]
    assert provider["inputs"]["clientSecret"] == "${secret:config.keycloakAdminClientSecret}"
    assert "password" not in provider["inputs"]


def _subs() -> Substitutions:
    s = Substitutions()
    s.add("mock-secret-pw", Source("${secret:pw.result}", "secret", "pw", "result"))
    s.add("mock-secret-pw-longer", Source("${secret:pw2.result}", "secret", "pw2", "result"))
    s.add("thing-id", Source("${computed:thing.id}", "computed", "thing", "id"), bounded=True)
    return s


def test_substitution_inside_strings_longest_first_and_bounded_ids():
    s = _subs()
    assert s.string("redis://:mock-secret-pw@redis:6379") == "redis://:${secret:pw.result}@redis:6379"
    assert s.string("mock-secret-pw-longer") == "${secret:pw2.result}"
    assert s.string("thing-id") == "${computed:thing.id}"
    assert s.string("something-id") == "something-id"  # not a whole token
    assert s.string("a/thing-id/b") == "a/${computed:thing.id}/b"


def test_base64_data_holding_a_secret_is_shown_decoded():
    s = _subs()
    encoded = base64.b64encode(b"user: admin\npassword: mock-secret-pw\n").decode()
    out = s.string(encoded)
    assert out == "${base64:user: admin\npassword: ${secret:pw.result}\n}"
    back = placeholders.substitute(out, lambda kind, src: "REAL")
    assert base64.b64decode(back) == b"user: admin\npassword: REAL\n"
    plain = base64.b64encode(b"no secret here").decode()
    assert s.string(plain) == plain  # non-secret data stays as it is


def test_leak_check_rejects_untraceable_mock_values():
    s = _subs()
    with pytest.raises(RenderError, match=r"kubernetes.yaml\[0\].data.x"):
        _check_no_leaks({"kubernetes.yaml": [{"data": {"x": "prefix-mock-secret-unknown"}}]}, s)
    hidden = base64.b64encode(b"mock-secret-unknown").decode()
    with pytest.raises(RenderError):
        _check_no_leaks({"keycloak.json": {"a": [hidden]}}, s)
    _check_no_leaks({"keycloak.json": {"a": ["${secret:pw.result}"]}}, s)


def test_ambiguous_mock_values_are_refused():
    s = _subs()
    with pytest.raises(RenderError, match="share the mock value"):
        s.add("mock-secret-pw", Source("${secret:other.result}", "secret", "other", "result"))


# ---------------------------------------------------------------- helpers and CLI


def test_kube_api_mapping():
    assert kube_api("kubernetes:core/v1:Service", {}) == ("v1", "Service")
    assert kube_api("kubernetes:apps/v1:Deployment", {}) == ("apps/v1", "Deployment")
    assert kube_api("kubernetes:networking.istio.io/v1:VirtualService", {}) == (
        "networking.istio.io/v1", "VirtualService")
    assert kube_api("kubernetes:apiextensions.k8s.io:CustomResource",
                    {"apiVersion": "cert-manager.io/v1", "kind": "Certificate"}) == (
        "cert-manager.io/v1", "Certificate")


def test_normalize_turns_integral_floats_into_ints_only():
    assert normalize({"a": 1.0, "b": [2.0, 2.5], "c": True, "d": "3.0"}) == {
        "a": 1, "b": [2, 2.5], "c": True, "d": "3.0"}
    assert isinstance(normalize(1.0), int) and normalize(True) is True


def test_placeholder_grammar():
    text = "x ${secret:a-b.result} y ${computed:getGroup(name=sre,realmId=corp).id} ${autoname:n}"
    found = [(m.group(1), m.group(2)) for m in placeholders.PLACEHOLDER_RE.finditer(text)]
    assert found == [("secret", "a-b.result"), ("computed", "getGroup(name=sre,realmId=corp).id"),
                     ("autoname", "n")]
    assert placeholders.find_all({"k": [text]}) == {
        "${secret:a-b.result}", "${computed:getGroup(name=sre,realmId=corp).id}", "${autoname:n}"}


def test_write_creates_files_and_removes_stale_ones(tmp_path):
    (tmp_path / "mesh-config.yaml").write_text("stale")
    (tmp_path / "unrelated.txt").write_text("kept")
    r = rendered("prod", "envoy-filter")
    written = write(r, tmp_path)
    assert {p.name for p in written} == set(r.files())
    for p in written:
        assert p.read_text() == r.files()[p.name]
    if r.mesh_config is None:
        assert not (tmp_path / "mesh-config.yaml").exists()
    assert (tmp_path / "unrelated.txt").read_text() == "kept"
    assert set(r.files()) <= set(FILES)


def test_cli_default_out_dir_and_summary(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "authproxy_local.render", "--stack", "prod", "--mode", "envoy-filter",
         "--out", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rendered stack prod (ext_authz mode envoy-filter)" in proc.stdout
    from authproxy_local.render import default_out_dir
    assert default_out_dir("dev", "envoy-filter") == ROOT / "build" / "render" / "dev-envoy-filter"


def test_cli_reports_bad_config_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "authproxy_local.render", "--stack", "nosuchstack", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "render failed" in proc.stderr and "Traceback" not in proc.stderr
