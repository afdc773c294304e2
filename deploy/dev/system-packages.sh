#!/usr/bin/env bash
# Debian packages the test suite uses: independent verifiers (xmlsec1, openssl, pdfsig and
# pdftoppm/pdftotext from poppler-utils; certutil from libnss3-tools gives pdfsig our dev root),
# SoftHSM2 for the PKCS#11 path, the DejaVu fonts embedded in the PDF, chromium for the browser
# test (driven by Playwright, tests/test_browser.py), and PostgreSQL for the shared store's tests
# (tests/postgres.py runs its own throw-away server as the `postgres` user), and the zstd tool
# that decompresses archived documents independently. Installs only what is missing.
set -euo pipefail
packages=(xmlsec1 openssl poppler-utils libnss3-tools softhsm2 fonts-dejavu-core chromium postgresql zstd)
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
