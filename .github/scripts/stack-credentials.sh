#!/usr/bin/env bash
# Give the selected stack ($STACK) its credentials from the job's environment (GitHub secrets and
# variables), for pull-request.yml's previews and main.yml's deploys alike:
#   KUBECONFIG_CONTENT            the kubeconfig: written to $RUNNER_TEMP (mode 600), exported as
#                                 KUBECONFIG for the later steps
#   KEYCLOAK_ADMIN_PASSWORD       -> secret authproxy:keycloakAdminPassword
#   KEYCLOAK_ADMIN_CLIENT_SECRET  -> secret authproxy:keycloakAdminClientSecret
#   KEYCLOAK_ADMIN_CLIENT_ID      -> authproxy:keycloak.admin.clientId (a preview's view-only client)
#   KEYCLOAK_ADMIN_USERNAME       -> authproxy:keycloak.admin.username (a preview's view-only user)
#   EXTERNAL_REDIS_PASSWORD       -> secret authproxy:externalRedisPassword
# Unset or empty ones are left alone. Secret values go to pulumi on stdin, never on a command line.
set -euo pipefail
: "${STACK:?STACK must name the stack}" "${RUNNER_TEMP:?}" "${GITHUB_ENV:?}"

pulumi stack select "$STACK"
if [ -n "${KUBECONFIG_CONTENT:-}" ]; then
  (umask 077 && printf '%s\n' "$KUBECONFIG_CONTENT" > "$RUNNER_TEMP/kubeconfig")
  echo "KUBECONFIG=$RUNNER_TEMP/kubeconfig" >> "$GITHUB_ENV"
fi

set_secret() {
  if [ -n "$2" ]; then
    printf '%s' "$2" | pulumi config set --secret --stack "$STACK" "authproxy:$1"
  fi
}
set_secret keycloakAdminPassword "${KEYCLOAK_ADMIN_PASSWORD:-}"
set_secret keycloakAdminClientSecret "${KEYCLOAK_ADMIN_CLIENT_SECRET:-}"
set_secret externalRedisPassword "${EXTERNAL_REDIS_PASSWORD:-}"
set_value() {
  if [ -n "$2" ]; then
    pulumi config set --path --stack "$STACK" "authproxy:$1" "$2"
  fi
}
set_value keycloak.admin.clientId "${KEYCLOAK_ADMIN_CLIENT_ID:-}"
set_value keycloak.admin.username "${KEYCLOAK_ADMIN_USERNAME:-}"
