#!/usr/bin/env bash
# Random secrets for deploy/compose.yaml, written once into deploy/.secrets/ (ignored by git;
# never commit secrets). SECRETS_DIR overrides the target (tests).
set -euo pipefail
dir="${SECRETS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.secrets}"
mkdir -p "$dir"
chmod 700 "$dir"
for name in postgres-password grafana-admin-password; do
  if [ ! -s "$dir/$name" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$dir/$name")
    # Bind-mounted into containers whose users are not root: readable there; the folder (700)
    # keeps other users of this machine out.
    chmod 644 "$dir/$name"
  fi
done
echo "secrets in $dir"
