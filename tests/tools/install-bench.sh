#!/usr/bin/env bash
# What `make bench` drives: wrk (load generator), nginx (a trivial upstream, the auth
# endpoint, and the reference proxy with auth_request) and caddy (the reference proxy
# with forward_auth), from Debian's packages. Installs only what is missing. wrk and
# nginx are required; caddy is best effort: without it the bench reports its target
# as "not measured" instead of failing.
set -euo pipefail
need=()
optional=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v caddy >/dev/null || optional+=(caddy)
if [ $((${#need[@]} + ${#optional[@]})) -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "tests/tools/install-bench.sh: installing ${need[*]} ${optional[*]}"
  $SUDO apt-get update -qq || [ ${#need[@]} -eq 0 ]
  # policy-rc.d 101: do not start Debian's own nginx / caddy services (ports 80, 443).
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${optional[@]}" >/dev/null \
      || echo "tests/tools/install-bench.sh: could not install ${optional[*]} (reported as not measured)"
  fi
fi
