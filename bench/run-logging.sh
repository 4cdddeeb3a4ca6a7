#!/usr/bin/env bash
# What the access log costs: GET / side by side with logging off and on,
# for cohort (log.access off, then a file) and for nginx (access_log off,
# then a buffered JSON access_log with flush=100ms, the same shape of line),
# 2 workers each, with ../shared/bench/abab. The CPU per request column is
# the measure; the ratio "on / off" of each server is the cost of its log.
#   bench/run-logging.sh [ROUNDS] [SECONDS]
set -euo pipefail
. "$(dirname "$0")/common.sh"
rounds=${1:-3} secs=${2:-5}
run=$(mktemp -d /tmp/cohort-bench-log-XXXX); chmod 755 "$run"
trap 'cleanup; rm -f "$run"/*.log' EXIT

for mode in off on; do
  port=$([ $mode = off ] && echo 3320 || echo 3321)
  access=$([ $mode = off ] && echo off || echo "$run/cohort-access.log")
  cat > "$run/cohort-$mode.json" <<JSON
{"server": {"host": "127.0.0.1", "port": $port}, "workers": 2,
 "timeouts": {"keepalive": "60s"}, "log": {"access": "$access", "stats_interval": "0s"}}
JSON
  (cd "$run" && exec "$bin" serve -c "$run/cohort-$mode.json" 2>"$run/cohort-$mode.err") &
  pids+=($!)
done
coff=${pids[0]} con=${pids[1]}

nginx_conf() {  # $1 port, $2 access_log directive
  mkdir -p "$run/nginx-$1/logs"
  cat > "$run/nginx-$1/nginx.conf" <<CONF
worker_processes 2;
error_log stderr error;
events { worker_connections 16384; }
http {
    log_format cohort escape=json '{"time":"\$time_iso8601","id":"\$request_id","method":"\$request_method",'
        '"path":"\$request_uri","status":\$status,"bytes_in":\$request_length,"bytes_out":\$bytes_sent,'
        '"duration":\$request_time,"client":"\$remote_addr","user_agent":"\$http_user_agent"}';
    $2
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1 reuseport;
        location / { default_type text/plain; return 200 "Hello World\n"; }
    }
}
CONF
  nginx -p "$run/nginx-$1" -c nginx.conf -g "pid $run/nginx-$1/nginx.pid; daemon off;" >"$run/nginx-$1.err" 2>&1 &
  pids+=($!)
}
nginx_conf 3322 "access_log off;"
noff=${pids[-1]}
nginx_conf 3323 "access_log $run/nginx-access.log cohort buffer=64k flush=100ms;"
non=${pids[-1]}
for port in 3320 3321 3322 3323; do wait_port $port; done

echo "== GET / keep-alive, -c 64, $rounds rounds of $secs s: access log off and on"
$abab -r "$rounds" -d "$secs" -c 64 \
  "http://127.0.0.1:3320/@$coff" "http://127.0.0.1:3321/@$con" \
  "http://127.0.0.1:3322/@$noff" "http://127.0.0.1:3323/@$non"
echo "cohort access log: $(wc -l < "$run/cohort-access.log") lines; nginx: $(wc -l < "$run/nginx-access.log") lines"
head -c 400 "$run/cohort-access.log"
