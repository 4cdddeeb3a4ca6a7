#!/usr/bin/env bash
# The load balancer side by side with nginx and HAProxy as round-robin
# proxies: the same two do-nothing backends (nginx answering "Hello World"),
# 2 workers or threads each, ../shared/bench/abab -c 64 on GET / with
# keep-alive; abab gives req/s, p99 and CPU time per request of each proxy
# (the pid after @, with its children). Then the same with access logs off
# and health checks on for cohort (as HAProxy's config has them).
#   bench/run-proxy.sh [ROUNDS] [SECONDS]
# Needs the peers (scripts/deps.sh bench installs them) and ../shared.
set -euo pipefail
. "$(dirname "$0")/common.sh"
rounds=${1:-5} secs=${2:-5}
run=$(mktemp -d /tmp/cohort-bench-proxy-XXXX)


b1=$("$shared/peers/start" nginx-hello 3401); pids+=("$b1")
b2=$("$shared/peers/start" nginx-hello 3402); pids+=("$b2")
(cd "$run" && WORKERS=2 exec "$bin" balance --port 3410 --upstream 127.0.0.1:3401 --upstream 127.0.0.1:3402 \
    --health-path /health --admin-port 3419 2>"$run/cohort.log") &
cpid=$!; pids+=("$cpid")
npid=$("$shared/peers/start" nginx-proxy 3411 127.0.0.1:3401 127.0.0.1:3402); pids+=("$npid")
hpid=$("$shared/peers/start" haproxy-proxy 3412 127.0.0.1:3401 127.0.0.1:3402); pids+=("$hpid")
wait_port 3410; wait_port 3411; wait_port 3412
sleep 1

echo "== GET / through the proxy, keep-alive, -c 64, $rounds rounds of $secs s ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
$abab -r "$rounds" -d "$secs" -c 64 \
  "http://127.0.0.1:3410/@$cpid" "http://127.0.0.1:3411/@$npid" "http://127.0.0.1:3412/@$hpid"

echo "== the backends' own share (each nginx-hello, direct, for scale)"
$abab -r 1 -d "$secs" -c 64 "http://127.0.0.1:3401/@$b1"

echo "== cohort's upstream view after the run"
curl -s http://127.0.0.1:3419/stats | python3 -c 'import json,sys; [print(u["name"], u["state"], "requests", u["requests"], "failures", u["failures"], "avg %.3f ms" % u["avgMs"]) for u in json.load(sys.stdin)["upstreams"]]'
