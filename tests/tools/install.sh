#!/usr/bin/env bash
# Installs the system tools the test suite drives as real peers. Idempotent: it
# installs only what is missing. Debian/Ubuntu (apt) as root, or with sudo.
set -euo pipefail

need=()
command -v mkcert >/dev/null || need+=(mkcert)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)

if [ ${#need[@]} -gt 0 ]; then
  echo "tests/tools/install.sh: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
