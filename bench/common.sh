# Sourced by the bench/run-*.sh scripts (after `set -euo pipefail`): where
# things are, the peers and a build when missing, the processes to stop on
# exit (append their pids to `pids`), and waiting for a listener.
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
shared=${SHARED:-$top/../shared}
abab="python3 $shared/bench/abab"
"$top/scripts/deps.sh" bench   # the peers, wrk and redis-server, when missing
[ -x "$top/build/cohort" ] || make -C "$top" all >/dev/null
bin=$top/build/cohort
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# Until 127.0.0.1:PORT accepts (10 s at most; then the script stops).
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2
  exit 1
}
