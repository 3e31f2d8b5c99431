#!/usr/bin/env bash
# Write the stack's secrets into docker/secrets/ (never committed, never in an image):
#   api_keys                 the keys `evergreen serve` accepts, one NAME:KEY a line
#   prometheus_api_key       the key Prometheus sends to serve's /metrics (also in api_keys)
#   grafana_admin_password   Grafana's admin password
# Existing files are kept, so running it again changes nothing; delete a file to renew it.
# Add a key for each client: printf 'NAME:%s\n' "$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" >> docker/secrets/api_keys
set -euo pipefail
dir="${1:-$(dirname "$0")/secrets}"
new_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

# The folder is private to you; the files are world-readable so that the containers' users
# (evergreen 10001, Prometheus' nobody) can read the single files compose mounts from it.
mkdir -p "$dir"
chmod 700 "$dir"
if [ ! -s "$dir/prometheus_api_key" ]; then
  new_secret > "$dir/prometheus_api_key"
fi
if [ ! -s "$dir/api_keys" ]; then
  { echo "# evergreen serve's API keys (NAME:KEY) one a line"
    printf 'prometheus:%s\n' "$(cat "$dir/prometheus_api_key")"
    printf 'client:%s\n' "$(new_secret)"; } > "$dir/api_keys"
fi
if [ ! -s "$dir/grafana_admin_password" ]; then
  new_secret > "$dir/grafana_admin_password"
fi
chmod 644 "$dir/api_keys" "$dir/prometheus_api_key" "$dir/grafana_admin_password"
echo "secrets in $dir: api_keys, prometheus_api_key, grafana_admin_password"
