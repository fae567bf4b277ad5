#!/usr/bin/env bash
# What `make bench` drives: wrk (load generator) and nginx (a trivial upstream, and
# later the reference proxy), from Debian's packages. Installs only what is missing.
set -euo pipefail
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "tests/tools/install-bench.sh: installing ${need[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d 101: do not start Debian's own nginx service on port 80.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
