#!/usr/bin/env bash
# Installs the Debian packages aiwatch's tests and demo talk to for real: Prometheus (+ promtool), Alertmanager
# (+ amtool), Redis, headless Chromium and openssl (the TLS tests make their certificates with it). Skips what is
# already there; needs root (or sudo) otherwise.
set -euo pipefail
need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)   # the TLS tests make their certificates with it
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system packages: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# policy-rc.d keeps the packages' own services from starting: the tests start their servers on loopback themselves.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
$SUDO rm -f /usr/sbin/policy-rc.d
