#!/bin/sh
# Installs the Debian packages tether needs to build, test, demo and benchmark.
# Idempotent: does nothing when every package is already installed.
set -eu

PACKAGES="build-essential meson ninja-build pkg-config clang clang-format libclang-rt-14-dev
node-llhttp libinih-dev libssl-dev libcmocka-dev libc-ares-dev
python3 python3-pytest python3-requests python3-httpx python3-dnslib
nginx-light wrk haproxy h2o gnuplot-nox prometheus curl procps iproute2 openssl"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "setup: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "setup: need root to install packages (run as root or install:$missing)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The nginx package starts a system service on port 80; tether only runs its own instances.
(systemctl disable --now nginx 2>/dev/null || service nginx stop 2>/dev/null) >/dev/null 2>&1 || true
