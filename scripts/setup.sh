#!/usr/bin/env bash
# Installs what Warmstart needs on a Debian 12 machine and prepares hugepages.
# Safe to run again: it only adds what is missing. Prints what it did and what it could not do.
set -euo pipefail

need_pkgs=()
for p in liburing-dev pkg-config iproute2; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ "${WARMSTART_WITH_DPDK:-0}" = 1 ] && ! command -v dpdk-testpmd >/dev/null 2>&1; then
  need_pkgs+=(dpdk dpdk-dev)
fi
# The test run (scripts/test.sh sets WARMSTART_WITH_DPDK) also checks the code's structure and runs
# small peers in Python.
if [ "${WARMSTART_WITH_DPDK:-0}" = 1 ] && ! command -v python3 >/dev/null 2>&1; then
  need_pkgs+=(python3)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing packages ${need_pkgs[*]}: run as root or 'sudo apt-get install -y ${need_pkgs[*]}'" >&2
    exit 1
  fi
fi

command -v swift >/dev/null 2>&1 || { echo "setup: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }

# Hugepages: reserve WARMSTART_HUGEPAGES 2 MiB pages (default 1024) and mount hugetlbfs, when root.
want=${WARMSTART_HUGEPAGES:-1024}
sys=/sys/kernel/mm/hugepages/hugepages-2048kB
if [ "$(id -u)" = 0 ] && [ -d "$sys" ]; then
  have=$(cat "$sys/nr_hugepages")
  if [ "$have" -lt "$want" ]; then
    echo "$want" > "$sys/nr_hugepages" 2>/dev/null || true
    now=$(cat "$sys/nr_hugepages")
    echo "setup: reserved 2M hugepages: $have -> $now (wanted $want)"
  fi
  if ! grep -q ' /dev/hugepages hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages && echo "setup: mounted hugetlbfs on /dev/hugepages" \
      || echo "setup: could not mount hugetlbfs; Warmstart will use 4 KiB pages"
  fi
else
  echo "setup: not root (or no 2M hugepages in this kernel): hugepages left as they are ($(cat "$sys/nr_hugepages" 2>/dev/null || echo 0) reserved); Warmstart uses 4 KiB pages where none are free"
fi
