"""authproxy: read and validate the stack config, then wire the components. Nothing else."""

import pulumi
from pulumi.runtime.config import get_config

import preflight
from components.config import NAMESPACE, SECRET_KEYS, ConfigError, load
from components.stack import AuthProxy, StackSecrets


def _raw_config() -> tuple[dict, StackSecrets]:
    """Every `authproxy:*` value as plain data, and the secret keys as secret Outputs."""
    cfg = pulumi.Config(NAMESPACE)
    prefix = NAMESPACE + ":"
    keys = sorted(
        k[len(prefix):] for k in pulumi.runtime.config.CONFIG.get() if k.startswith(prefix)
    )
    raw = {}
    for key in keys:
        if key in SECRET_KEYS:
            continue
        try:
            raw[key] = cfg.get_object(key)
        except Exception:  # noqa: BLE001 - a plain string that is not JSON
            raw[key] = cfg.get(key)
    secrets: StackSecrets = {}
    for key in SECRET_KEYS:
        value = cfg.get_secret(key)
        if value is not None:
            secrets[key] = value  # type: ignore[literal-required]
    return raw, secrets


raw, secrets = _raw_config()
config = load(raw, secrets_set=secrets.keys())  # raises ConfigError before anything is created

# The live cluster and Keycloak, read through the Kubernetes provider's own kubeconfig and context
# (raises PreflightError before anything is created; docs/preflight.md). Not under Pulumi's mocks.
if not preflight.under_mocks():
    off = preflight.switched_off(config)
    if off:
        pulumi.log.warn(f"preflight is off ({off}): the cluster was not checked")
    else:
        preflight.run(
            config,
            preflight.KubeTarget(
                kubeconfig=get_config("kubernetes:kubeconfig"),
                context=get_config("kubernetes:context"),
                cluster=get_config("kubernetes:cluster"),
            ),
            dry_run=pulumi.runtime.is_dry_run(),
        )

stack = AuthProxy("authproxy", {"config": config, "secrets": secrets})

pulumi.export("issuerUrl", stack.issuer_url)
pulumi.export("clientId", stack.client_id)
pulumi.export("authHost", stack.auth_host)
pulumi.export("protectedUrls", stack.protected_urls)
pulumi.export("demoUserPasswords", stack.demo_user_passwords)
pulumi.export("namespace", stack.namespace)
pulumi.export("proxyService", stack.proxy_service)
pulumi.export("meshConfig", stack.mesh_config)
pulumi.export("gateway", stack.gateway)

__all__ = ["ConfigError"]
