#!/bin/sh
# Install the Debian packages cohort needs, only those missing.
#   scripts/deps.sh build   -- compile and run (make run)
#   scripts/deps.sh test    -- plus what the tests need (make test)
#   scripts/deps.sh bench   -- plus the peers the benchmarks compare against
# Every dependency of the project is named here and nowhere else.
set -eu
build="gcc make pkg-config libuv1-dev libhiredis-dev libjansson-dev libsqlite3-dev"
test="$build libcriterion-dev python3-pytest redis-server redis-sentinel clang libclang-rt-14-dev curl iproute2 procps chromium"
bench="$test wrk nginx-light h2o haproxy"
# The Node.js peers need node and npm; take Debian's only when none is installed.
command -v npm >/dev/null 2>&1 || bench="$bench nodejs npm"
case "${1:-build}" in
  build) want=$build ;;
  test) want=$test ;;
  bench) want=$bench ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq </dev/null
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing </dev/null
