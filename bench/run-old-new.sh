#!/usr/bin/env bash
# Two builds of cohort side by side with ../shared/bench/abab: GET / from the
# hello handler (app "none", 2 workers, as bench/run-hello.sh) and GET /
# through `cohort balance` to two nginx-hello backends (as
# bench/run-proxy.sh), each build in turn, ROUNDS times, with the CPU time
# per request of each. OLD is the other build's binary, e.g. a worktree of
# the commit before a change:
#   git worktree add /tmp/cohort-old <commit> && make -C /tmp/cohort-old
#   bench/run-old-new.sh /tmp/cohort-old/build/cohort [ROUNDS] [SECONDS] [hello|proxy|both]
set -euo pipefail
. "$(dirname "$0")/common.sh"
old=$1 rounds=${2:-5} secs=${3:-5} what=${4:-both}
run=$(mktemp -d /tmp/cohort-bench-oldnew-XXXX)
for v in old:3500 new:3501; do
  n=${v%%:*} p=${v##*:} b=$bin
  [ "$n" = old ] && b=$old
  cat > "$run/$n.json" <<JSON
{"server": {"host": "127.0.0.1", "port": $p}, "workers": 2,
 "timeouts": {"keepalive": "60s"}, "app": "none",
 "routes": [{"path": "/", "handler": "hello"}]}
JSON
  (cd "$run" && exec "$b" serve -c "$run/$n.json" 2>"$run/$n.log") &
  pids+=($!); eval "${n}_pid=$!"
done
b1=$("$shared/peers/start" nginx-hello 3511); pids+=("$b1")
b2=$("$shared/peers/start" nginx-hello 3512); pids+=("$b2")
for v in old:3520 new:3521; do
  n=${v%%:*} p=${v##*:} b=$bin
  [ "$n" = old ] && b=$old
  (cd "$run" && WORKERS=2 exec "$b" balance --port "$p" --upstream 127.0.0.1:3511 --upstream 127.0.0.1:3512 \
      --health-path /health --admin-port $((p + 10)) 2>"$run/p$n.log") &
  pids+=($!); eval "p${n}_pid=$!"
done
wait_port 3500; wait_port 3501; wait_port 3520; wait_port 3521
sleep 1
if [ "$what" != proxy ]; then
  echo "== hello: old vs new, -c 64, $rounds rounds of $secs s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  $abab -r "$rounds" -d "$secs" -c 64 "http://127.0.0.1:3500/@$old_pid" "http://127.0.0.1:3501/@$new_pid"
fi
if [ "$what" != hello ]; then
  echo "== proxy: old vs new, -c 64, $rounds rounds of $secs s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  $abab -r "$rounds" -d "$secs" -c 64 "http://127.0.0.1:3520/@$pold_pid" "http://127.0.0.1:3521/@$pnew_pid"
fi
