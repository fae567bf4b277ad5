#!/usr/bin/env bash
# Installs the system tools the test suite drives as real peers. Idempotent: it
# installs only what is missing. Debian/Ubuntu (apt) as root, or with sudo.
set -euo pipefail

need=()
command -v mkcert >/dev/null || need+=(mkcert)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# Let's Encrypt's ACME test server (+ pebble-challtestsrv) for autocert: tests/support/pebble.py
command -v pebble >/dev/null || need+=(pebble)

if [ ${#need[@]} -gt 0 ]; then
  echo "tests/tools/install.sh: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The real OpenID Provider the tests sign in against (tests/tools/oidc): panva's
# oidc-provider from npm, pinned by its committed lock file. It needs Node.js 20.19 or
# newer; Debian's own nodejs package is older, so the machine's Node is expected, and
# Debian's is only a fallback that says what is wrong.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tests/tools/install.sh: installing nodejs npm"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
  if (a < 20 || (a === 20 && b < 19)) {
    console.error(`tests/tools/install.sh: Node.js ${process.versions.node} is too old for oidc-provider (needs 20.19+)`);
    process.exit(1);
  }'
oidc_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/oidc" && pwd)"
# npm ci rewrites node_modules/.package-lock.json: older than the lock file = stale.
if [ ! -f "$oidc_dir/node_modules/.package-lock.json" ] \
  || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules/.package-lock.json" ]; then
  echo "tests/tools/install.sh: npm ci in tests/tools/oidc"
  (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The real browser of tests/e2e/test_browser.py: Debian's chromium, driven by the
# playwright pip package (a dev dependency) through its own driver. Playwright's
# browser downloads (`playwright install`) are never used.
if [ ! -x /usr/bin/chromium ]; then
  echo "tests/tools/install.sh: installing chromium"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# PostgreSQL for the session-store tests (127.0.0.1:5432, user postgres, database
# test, trust auth on loopback only). A running server is left as it is; a stopped
# Debian cluster is started; otherwise Debian's postgresql is installed and set up.
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
  :
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "tests/tools/install.sh: installing postgresql"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # Loopback only, for the test database: trust, as the project's tests expect.
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
      | $SUDO tee "$hba.vallum" >/dev/null
    $SUDO sh -c "cat '$hba' >> '$hba.vallum' && mv '$hba.vallum' '$hba'"
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  echo "tests/tools/install.sh: starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" \
    | grep -q 1 || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
fi
