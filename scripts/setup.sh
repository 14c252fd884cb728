#!/usr/bin/env bash
# Installs what ztgate's demo, tests and benchmarks need, skipping what is already there:
# Debian packages (wireguard-go and wg as the reference peer and manager, iperf3, ping, iptables,
# conntrack, tcpdump, coturn) and the pinned npm packages (with the Node 24 binary). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(wireguard-go wireguard-tools iperf3 iproute2 iputils-ping iptables conntrack tcpdump coturn kmod procps)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
