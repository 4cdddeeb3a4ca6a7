#!/bin/sh
# The Debian packages cohort needs; installs those of a list that are missing.
#   scripts/deps.sh build       -- compile and run (make run)
#   scripts/deps.sh test        -- plus what the tests run (make test)
#   scripts/deps.sh bench       -- plus the peers the benchmarks compare against
#   scripts/deps.sh fresh       -- what make fresh builds its throwaway root with
#   scripts/deps.sh list LIST   -- prints LIST's packages, one a line, and installs nothing
# Every dependency of the project is named here and nowhere else.
set -eu
# OpenSSL 3 (TLS), libpq (the PostgreSQL catalog), zlib, brotli and zstd
# (compression), nghttp2 (HTTP/2), libcrypt (basic auth hashes).
build="gcc libc6-dev make pkg-config libuv1-dev libhiredis-dev libjansson-dev libsqlite3-dev libssl-dev libpq-dev zlib1g-dev libbrotli-dev libzstd-dev libnghttp2-dev libcrypt-dev"
# make test: Criterion (unit), Debian's python3 with pytest (e2e), redis-server
# and redis-sentinel (unit and e2e), clang with its sanitizer and libFuzzer
# runtime (make fuzz), wrk (the load during reloads and recycles), iproute2
# (`ip netns`, the multi-host tests), util-linux and mount (`unshare`, `mount`:
# the checker's DNS test), chromium (the dashboard), curl and procps;
# openssl (s_client), testssl.sh, nghttp2-client (h2load), postgresql (the
# tests' own clusters), brotli and zstd (decoding what cohort compressed).
test="$build libcriterion-dev python3-pytest redis-server redis-sentinel clang libclang-rt-14-dev wrk iproute2 util-linux mount chromium curl procps openssl testssl.sh nghttp2-client postgresql brotli zstd"
# The supervised-app tests run a Node.js app: Debian's nodejs when none is installed.
command -v node >/dev/null 2>&1 || test="$test nodejs"
bench="$test nginx-light h2o haproxy"
# The Node.js peers (and PM2) need npm; take Debian's only when none is installed.
command -v npm >/dev/null 2>&1 || bench="$bench npm"
fresh="mmdebstrap"

usage() {
  echo "usage: $0 build|test|bench|fresh" >&2
  echo "       $0 list build|test|bench|fresh" >&2
  exit 2
}

pick() {
  case "$1" in
    build) want=$build ;;
    test) want=$test ;;
    bench) want=$bench ;;
    fresh) want=$fresh ;;
    *) usage ;;
  esac
}

if [ "${1:-}" = list ]; then
  [ $# -eq 2 ] || usage
  pick "$2"
  for p in $want; do echo "$p"; done
  exit 0
fi
pick "${1:-build}"
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
