#!/usr/bin/env bash
# Installs every Debian 12 package SealRPC needs to build, test, run the demo and run
# the benchmark suite. Idempotent; needs root (or sudo).
set -euo pipefail
PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config ccache
  # required stack
  libboost1.81-dev capnproto libcapnp-dev libsodium-dev libgtest-dev libgmock-dev libbenchmark-dev
  # endpoint ACLs, test helpers
  libacl1-dev acl util-linux procps python3
  # benchmark contenders and report
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler gnuplot-nox valgrind strace
)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
