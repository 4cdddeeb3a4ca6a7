#!/usr/bin/env bash
# Failed requests during reloads: wrk -t1 -c32 for 8 s while the server is
# reloaded 3 times (at 2, 4 and 6 s). cohort in each schedule mode
# (`cohort reload`), then nginx (HUP), the way the issue measured them.
#   bench/run-reload.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"
run=$(mktemp -d /tmp/cohort-reload-XXXX)
load() { # PORT RELOAD-COMMAND...
  local port=$1; shift
  wrk -t1 -c32 -d8s "http://127.0.0.1:$port/" > "$run/wrk.out" &
  local w=$!
  for _ in 1 2 3; do sleep 2; "$@" >/dev/null; done
  wait $w
  local total non2xx sock
  total=$(awk '/requests in/ {print $1}' "$run/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$run/wrk.out")
  sock=$(grep -o 'Socket errors:.*' "$run/wrk.out" | grep -o '[0-9]\+' | paste -sd+ | bc 2>/dev/null || true)
  echo "requests $total, non-2xx ${non2xx:-0}, socket errors ${sock:-0}"
}
port=3500
for mode in reuseport shared round_robin least_loaded; do
  port=$((port + 1))
  printf '{"server": {"host": "127.0.0.1", "port": %d}, "workers": 2, "schedule": "%s", "control": {"socket": "%s/%s.sock", "pid_file": "%s/%s.pid"}}\n' \
    "$port" "$mode" "$run" "$mode" "$run" "$mode" > "$run/$mode.json"
  "$top/build/cohort" serve -c "$run/$mode.json" 2>"$run/$mode.log" &
  pids+=($!); wait_port $port
  echo -n "cohort $mode (cohort reload x3): "
  load $port "$top/build/cohort" reload -c "$run/$mode.json"
done
npid=$("$shared/peers/start" nginx-hello 3510); pids+=("$npid")
echo -n "nginx (kill -HUP x3): "
load 3510 kill -HUP "$npid"
