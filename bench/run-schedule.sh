#!/usr/bin/env bash
# schedule modes side by side, same binary, 2 workers each: reuseport,
# shared, round_robin, least_loaded. abab's req/s, p99 and CPU per request
# for 64 keep-alive connections and for short connections (Connection:
# close), then how evenly one wrk run of short connections spread over the
# workers: requests per worker from `cohort status --json`, and their
# standard deviation as a share of the mean.
#   bench/run-schedule.sh [ROUNDS] [SECONDS]
set -euo pipefail
. "$(dirname "$0")/common.sh"
rounds=${1:-3} secs=${2:-5}
run=$(mktemp -d /tmp/cohort-sched-XXXX)
modes=(reuseport shared round_robin least_loaded)
declare -A port master
p=3310
for m in "${modes[@]}"; do
  port[$m]=$p
  printf '{"server": {"host": "127.0.0.1", "port": %d}, "workers": 2, "schedule": "%s", "timeouts": {"keepalive": "60s"}, "control": {"socket": "%s/%s.sock", "pid_file": "%s/%s.pid"}}\n' \
    "$p" "$m" "$run" "$m" "$run" "$m" > "$run/$m.json"
  "$top/build/cohort" serve -c "$run/$m.json" 2>"$run/$m.log" &
  pids+=($!); master[$m]=$!
  wait_port $p
  p=$((p + 1))
done
printf 'wrk.headers["Connection"] = "close"\n' > "$run/close.lua"
targets() { for m in "${modes[@]}"; do echo "http://127.0.0.1:${port[$m]}/@${master[$m]}"; done; }
echo "== keep-alive (order: ${modes[*]})"
python3 "$shared/bench/abab" -r "$rounds" -d "$secs" -c 64 $(targets)
echo "== short connections (Connection: close)"
python3 "$shared/bench/abab" -r "$rounds" -d "$secs" -c 64 -s "$run/close.lua" $(targets)
per_worker() { "$top/build/cohort" status --json -c "$run/$1.json" |
  python3 -c 'import json,sys; print(" ".join(str(w["requests"]) for w in json.load(sys.stdin)["workers"] if w["state"]=="ready"))'; }
echo "== spread of short connections over workers (one ${secs} s wrk run each)"
for m in "${modes[@]}"; do
  before=$(per_worker "$m")
  wrk -t1 -c64 -d"${secs}s" -s "$run/close.lua" "http://127.0.0.1:${port[$m]}/" >/dev/null
  after=$(per_worker "$m")
  python3 - "$m" "$before" "$after" <<'PY'
import statistics, sys
m, b, a = sys.argv[1], list(map(int, sys.argv[2].split())), list(map(int, sys.argv[3].split()))
d = [y - x for x, y in zip(b, a)]
mean = statistics.mean(d)
print(f"{m:<13} per worker {d}  stddev {statistics.pstdev(d) / mean * 100:.1f}% of the mean")
PY
done
