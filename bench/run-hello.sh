#!/usr/bin/env bash
# GET / side by side: cohort, nginx, h2o and the Node.js cluster, 2 workers
# each, with ../shared/bench/abab; then pipelined (depth 16) cohort vs nginx;
# then memory (idle worker RSS, 8,000 idle keep-alive connections).
#   bench/run-hello.sh [ROUNDS] [SECONDS]
# Needs the peers (scripts/deps.sh bench installs them) and ../shared.
set -euo pipefail
. "$(dirname "$0")/common.sh"
rounds=${1:-3} secs=${2:-5}
run=$(mktemp -d /tmp/cohort-bench-XXXX)

# The engine alone, as the peers are: GET / answered by the hello handler,
# without the shop (which also counts every request into its store).
cat > "$run/cohort.json" <<JSON
{"server": {"host": "127.0.0.1", "port": 3300}, "workers": 2,
 "timeouts": {"keepalive": "60s"}, "app": "none",
 "routes": [{"path": "/", "handler": "hello"}]}
JSON
(cd "$run" && exec "$bin" serve -c "$run/cohort.json" 2>"$run/cohort.log") &
pids+=($!); cpid=$!
npid=$("$shared/peers/start" nginx-hello 3301); pids+=("$npid")
hpid=$("$shared/peers/start" h2o-hello 3302); pids+=("$hpid")
opid=$("$shared/peers/start" node-hello 3303 2); pids+=("$opid")
wait_port 3300

echo "== GET / keep-alive, -c 64, $rounds rounds of $secs s"
$abab -r "$rounds" -d "$secs" -c 64 \
  "http://127.0.0.1:3300/@$cpid" "http://127.0.0.1:3301/@$npid" \
  "http://127.0.0.1:3302/@$hpid" "http://127.0.0.1:3303/@$opid"

echo "== GET / pipelined, depth 16"
$abab -r "$rounds" -d "$secs" -c 64 -s "$here/pipeline16.lua" \
  "http://127.0.0.1:3300/@$cpid" "http://127.0.0.1:3301/@$npid"

echo "== memory"
for p in $(pgrep -P "$cpid"); do echo "cohort worker $p idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$p/status)"; done
for p in $(pgrep -P "$npid"); do echo "nginx worker $p RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$p/status)"; done
echo -n "cohort: "; python3 "$here/idle_conns.py" "$cpid" 3300 8000 | tail -1
echo -n "nginx:  "; python3 "$here/idle_conns.py" "$npid" 3301 8000 | tail -1
