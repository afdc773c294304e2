#!/usr/bin/env bash
# Debian packages the test suite uses: independent verifiers, chromium for the browser test
# (driven by Playwright, tests/test_browser.py), and PostgreSQL for the shared store's tests
# (tests/postgres.py runs its own throw-away server as the `postgres` user). Installs only what
# is missing.
set -euo pipefail
packages=(xmlsec1 chromium postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
