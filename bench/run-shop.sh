#!/usr/bin/env bash
# The shop side by side with the seed's Node.js app (express + redis, 2
# workers): cohort with Redis (2 workers), the Node app on the same Redis,
# and cohort without Redis (embedded: SQLite and a per-worker cache), with
# ../shared/bench/abab (req/s, p99, CPU per request of each server's process
# tree; Redis's own CPU is counted for nobody).
#   GET /api/products?limit=2   (the Node app returns its two products)
#   POST /api/cart/add          (bench/cart-add.lua: JSON, User-Id: bench)
#   bench/run-shop.sh [ROUNDS] [SECONDS] [CONNS]
# Starts its own redis-server (no persistence) on a free port; stops
# everything it started by pid.
set -euo pipefail
. "$(dirname "$0")/common.sh"
rounds=${1:-3} secs=${2:-5} conns=${3:-64}
run=$(mktemp -d /tmp/cohort-shop-bench-XXXX)

rport=3390
redis-server --port $rport --bind 127.0.0.1 --dir "$run" --save '' --appendonly no --logfile "$run/redis.log" &
pids+=($!)
wait_port $rport

mkdir -p "$run/redis" "$run/embedded"
cat > "$run/redis/cohort.json" <<JSON
{"server": {"host": "127.0.0.1", "port": 3320}, "workers": 2, "timeouts": {"keepalive": "60s"},
 "log": {"access": "off"}, "redis": {"url": "redis://127.0.0.1:$rport"},
 "control": {"socket": "$run/redis.sock", "pid_file": "$run/redis.pid"}}
JSON
cat > "$run/embedded/cohort.json" <<JSON
{"server": {"host": "127.0.0.1", "port": 3322}, "workers": 2, "timeouts": {"keepalive": "60s"},
 "log": {"access": "off"}, "control": {"socket": "$run/embedded.sock", "pid_file": "$run/embedded.pid"}}
JSON
(cd "$run/redis" && exec "$bin" serve -c cohort.json 2>cohort.log) &
pids+=($!); cpid=$!
(cd "$run/embedded" && exec "$bin" serve -c cohort.json 2>cohort.log) &
pids+=($!); epid=$!
opid=$(REDIS_URL=redis://127.0.0.1:$rport "$shared/peers/start" node-shop 3321 2); pids+=("$opid")
for p in 3320 3321 3322; do wait_port $p; done
# warm every cache (Node's first miss sleeps 100 ms, as the seed does)
for p in 3320 3321 3322; do
  for _ in 1 2 3 4; do curl -s -o /dev/null "http://127.0.0.1:$p/api/products?limit=2"; done
  curl -s -o /dev/null -H 'Content-Type: application/json' -H 'User-Id: bench' \
    -d '{"productId": 1, "quantity": 1}' "http://127.0.0.1:$p/api/cart/add"
done
echo "== payloads"
for p in 3320 3321 3322; do printf '%s: %s\n' $p "$(curl -s "http://127.0.0.1:$p/api/products?limit=2")"; done

echo "== GET /api/products?limit=2, keep-alive, -c $conns, $rounds rounds of $secs s"
$abab -r "$rounds" -d "$secs" -c "$conns" \
  "http://127.0.0.1:3320/api/products?limit=2@$cpid" \
  "http://127.0.0.1:3321/api/products?limit=2@$opid" \
  "http://127.0.0.1:3322/api/products?limit=2@$epid"

echo "== POST /api/cart/add (JSON), keep-alive, -c $conns"
$abab -r "$rounds" -d "$secs" -c "$conns" -s "$here/cart-add.lua" \
  "http://127.0.0.1:3320/api/cart/add@$cpid" \
  "http://127.0.0.1:3321/api/cart/add@$opid" \
  "http://127.0.0.1:3322/api/cart/add@$epid"

echo "== carts after the runs (every add answered 200 is in the store)"
printf 'redis cart:bench product 1: %s\n' "$(redis-cli -p $rport HGET cart:bench 1)"
echo "== Redis commands during the whole run (cohort's GETs are near-cache hits: few MGETs)"
redis-cli -p $rport INFO commandstats | grep -E 'cmdstat_(mget|get|hincrby|incrby|incr|evalsha|eval|setex|set):' | cut -d, -f1
