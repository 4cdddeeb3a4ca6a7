#!/bin/bash
# make fresh: the README's two commands on a machine that has only what a new
# one has. Builds a throwaway Debian 12 root with mmdebstrap (variant minbase
# plus gcc, make and git, no Recommends) from this machine's apt sources,
# clones HEAD into it, and there runs `make run` (GET / must answer 200 on
# 127.0.0.1:3000, then SIGINT to the server must end `make run` with 0) and
# then `make test`. Everything else the root gets, scripts/deps.sh installs.
# Exits 0 only when both pass.
#
# The root is a temporary folder under FRESH_DIR (default /var/tmp), removed
# at the end whatever happened. Its mounts (/proc, /sys, /dev, /dev/shm, /run)
# are made in a private mount namespace and its processes run in a pid
# namespace, so both vanish with the run, also on failure or Ctrl-C.
# Uncommitted changes are not part of the run: a clone of HEAD is.
#   FRESH_DIR=DIR     where the temporary root is made
#   FRESH_KEEP=1      keep the root afterwards (its path is printed)
#   FRESH_RUN_WAIT=S  how long `make run` may take to answer (default 1800 s:
#                     it installs the build packages and compiles first)
set -euo pipefail

SUITE=bookworm
BASE=gcc,make,git
PORT=3000
CLONE=/root/cohort

die() {
  echo "make fresh: $*" >&2
  exit 1
}

# --- in the root (chroot), the README's two commands -------------------------

# The status line of GET / on 127.0.0.1:PORT, or nothing.
get_root() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 0
    printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    IFS= read -r -t 10 line <&3 || exit 0
    printf '%s\n' "${line%$'\r'}"
  ) 2>/dev/null
}

# The process `make run` runs in the foreground: make's only child, the master.
run_master() {
  local mk=$1 kids pid
  kids=$(cat "/proc/$mk/task/$mk/children" 2>/dev/null) || return 1
  for pid in $kids; do
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'cohort serve'; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

check_run() {
  local log=/root/make-run.log mk status master rc=0 deadline
  echo "== make run (in $CLONE; its output: $log, shown below)"
  set -m  # the job in its own process group, INT not ignored, as at a terminal
  make run </dev/null >"$log" 2>&1 &
  mk=$!
  set +m
  deadline=$((SECONDS + ${FRESH_RUN_WAIT:-1800}))
  status=""
  while :; do
    status=$(get_root)
    [[ $status == "HTTP/1.1 200"* ]] && break
    if ! kill -0 "$mk" 2>/dev/null; then
      wait "$mk" || rc=$?
      cat "$log"
      echo "make run: ended with $rc before GET / answered 200 (last answer: '${status:-none}')" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      kill -INT "-$mk" 2>/dev/null || true
      cat "$log"
      echo "make run: GET / had no 200 after ${FRESH_RUN_WAIT:-1800}s (last answer: '${status:-none}')" >&2
      return 1
    fi
    sleep 1
  done
  echo "make run: GET / answered '$status' after ${SECONDS}s"
  sleep 3
  status=$(get_root)
  [[ $status == "HTTP/1.1 200"* ]] || { cat "$log"; echo "make run: GET / 3 s later: '${status:-none}'" >&2; return 1; }
  master=$(run_master "$mk") || { cat "$log"; echo "make run: no 'cohort serve' under make" >&2; return 1; }
  kill -INT "$master"
  deadline=$((SECONDS + 60))
  while kill -0 "$mk" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$mk" 2>/dev/null; then
    kill -KILL "-$mk" 2>/dev/null || true
    cat "$log"
    echo "make run: still running 60 s after SIGINT to the master (pid $master)" >&2
    return 1
  fi
  wait "$mk" || rc=$?
  cat "$log"
  if [ "$rc" -ne 0 ]; then
    echo "make run: exit $rc after SIGINT to the master (pid $master); want 0" >&2
    return 1
  fi
  echo "make run: GET / 200, then SIGINT to the master (pid $master): make run exited 0"
}

in_root() {
  cd "$CLONE"
  echo "== in a fresh $SUITE root: $(git log --oneline -1 | cut -c1-72)"
  check_run || return 1
  echo "== make test"
  make test </dev/null
}

# --- pid 1 of the run's namespaces, on this machine's side --------------------

in_namespace() {
  local root=$1 rc=0
  # / a mount point in the root, as on a machine (`ip netns` remounts it)
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
  trap 'kill -KILL -1 2>/dev/null; exit 130' INT TERM HUP
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    FRESH_RUN_WAIT="${FRESH_RUN_WAIT:-1800}" /bin/bash /root/fresh.sh __root &
  wait $! || rc=$?
  # whatever the tests left running ends with this namespace
  exit "$rc"
}

# --- on this machine -----------------------------------------------------------

work=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$work" ] && [ -d "$work" ]; then
    if grep -qF " $work/" /proc/self/mounts; then
      echo "make fresh: something is still mounted under $work; not removing it" >&2
    elif [ "${FRESH_KEEP:-}" = 1 ]; then
      echo "make fresh: the root is kept in $work/root"
    else
      rm -rf --one-file-system "$work"
    fi
  fi
  [ "$rc" -lt 128 ] || echo "make fresh: interrupted (exit $rc)" >&2
  exit "$rc"
}

main() {
  local top rev sources=() f t0 rc=0 self
  [ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap --mode=root, chroot, mounts)"
  command -v mmdebstrap >/dev/null || die "no mmdebstrap: scripts/deps.sh fresh installs it"
  self=$(readlink -f "${BASH_SOURCE[0]}")
  top=$(git -C "$(dirname "$self")" rev-parse --show-toplevel)
  rev=$(git -C "$top" rev-parse HEAD)
  if [ -n "$(git -C "$top" status --porcelain --untracked-files=no)" ]; then
    echo "make fresh: uncommitted changes are left out; the root gets HEAD ($rev)" >&2
  fi
  # This machine's apt sources, as they are: the root installs from the same.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ] && grep -qvE '^[[:space:]]*(#|$)' "$f"; then sources+=("$f"); fi
  done
  [ ${#sources[@]} -gt 0 ] || die "no apt sources in /etc/apt/sources.list{,.d}"

  t0=$SECONDS
  work=$(mktemp -d "${FRESH_DIR:-/var/tmp}/cohort-fresh.XXXXXX")
  chmod 755 "$work"  # apt downloads into the root as _apt
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  echo "== a $SUITE root ($BASE, from ${sources[*]}) in $work/root"
  unshare --mount --propagation private -- \
    mmdebstrap --mode=root --variant=minbase --include="$BASE" "$SUITE" "$work/root" "${sources[@]}"
  cp -L /etc/resolv.conf "$work/root/etc/resolv.conf"
  [ -e "$work/root/etc/hosts" ] || cp -L /etc/hosts "$work/root/etc/hosts"
  git clone -q --no-hardlinks "$top" "$work/root$CLONE"
  git -C "$work/root$CLONE" checkout -q --detach "$rev"
  cp "$self" "$work/root/root/fresh.sh"
  echo "== root ready after $((SECONDS - t0))s"

  unshare --mount --propagation private --pid --fork --kill-child -- \
    /bin/bash "$self" __ns "$work/root" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "make fresh: passed in $((SECONDS - t0))s (make run, then make test, in a fresh $SUITE root)"
  else
    echo "make fresh: FAILED (exit $rc) after $((SECONDS - t0))s" >&2
  fi
  return "$rc"
}

case "${1:-}" in
  __ns) in_namespace "$2" ;;
  __root) in_root ;;
  "") main ;;
  *) echo "usage: $0   (run as root; see its head)" >&2; exit 2 ;;
esac
