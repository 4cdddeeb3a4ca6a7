#!/usr/bin/env bash
# schedule: reuseport vs shared, same binary, same run. Reports abab's
# req/s, p99 and CPU per request, then how the work split between the two
# workers (CPU seconds of each during one wrk run), for long keep-alive
# connections (-c 64) and for many short connections (-c 64, Connection: close).
#   bench/run-schedule.sh [ROUNDS] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
shared=${SHARED:-$top/../shared}
rounds=${1:-3} secs=${2:-5}
"$top/scripts/deps.sh" bench   # the peers and wrk, when missing
[ -x "$top/build/cohort" ] || make -C "$top" all >/dev/null
run=$(mktemp -d /tmp/cohort-sched-XXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start() { # NAME PORT SCHEDULE
  printf '{"server": {"host": "127.0.0.1", "port": %s}, "workers": 2, "schedule": "%s", "timeouts": {"keepalive": "60s"}}\n' "$2" "$3" > "$run/$1.json"
  "$top/build/cohort" serve -c "$run/$1.json" 2>"$run/$1.log" &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null && break; sleep 0.1; done
}
start reuseport 3310 reuseport; rp=${pids[-1]}
start shared 3311 shared; sp=${pids[-1]}
cat > "$run/close.lua" <<'LUA'
wrk.headers["Connection"] = "close"
LUA
split() { # MASTER_PID URL [wrk args]
  local master=$1 url=$2; shift 2
  local ws; ws=$(pgrep -P "$master" | tr '\n' ' ')
  declare -A t0
  for w in $ws; do t0[$w]=$(awk '{print $14+$15}' /proc/$w/stat); done
  wrk -t1 -c64 -d"${secs}s" "$@" "$url" >/dev/null
  local out=""
  for w in $ws; do out+=" $(( $(awk '{print $14+$15}' /proc/$w/stat) - ${t0[$w]} ))"; done
  echo "  worker CPU ticks:$out"
}
echo "== keep-alive"
python3 "$shared/bench/abab" -r "$rounds" -d "$secs" -c 64 "http://127.0.0.1:3310/@$rp" "http://127.0.0.1:3311/@$sp"
echo "reuseport:"; split "$rp" http://127.0.0.1:3310/
echo "shared:"; split "$sp" http://127.0.0.1:3311/
echo "== short connections (Connection: close)"
python3 "$shared/bench/abab" -r "$rounds" -d "$secs" -c 64 -s "$run/close.lua" "http://127.0.0.1:3310/@$rp" "http://127.0.0.1:3311/@$sp"
echo "reuseport:"; split "$rp" http://127.0.0.1:3310/ -s "$run/close.lua"
echo "shared:"; split "$sp" http://127.0.0.1:3311/ -s "$run/close.lua"
