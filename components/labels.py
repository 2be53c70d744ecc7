"""Labels every Kubernetes object of the stack carries (one definition for every component)."""

COMMON_LABELS: dict[str, str] = {
    "app.kubernetes.io/part-of": "authproxy",
    "app.kubernetes.io/managed-by": "pulumi",
}
