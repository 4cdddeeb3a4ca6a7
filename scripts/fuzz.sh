#!/bin/sh
# make fuzz: for each target, replays its kept regressions and its corpus
# (-runs=0), then fuzzes it for SECONDS. Stops at the first target that
# crashes, leaks or times out, and exits 1 after printing what libFuzzer said,
# the crashing input's path and its bytes (base64, the first 4 KiB), so the
# input survives in a log when the clone it was written into does not.
# A crash found by fuzzing is kept in fuzz/regressions/TARGET/ (name it after
# what it exposed and commit it); one found by the replay is written under
# build/fuzz/, next to the file in the tree that holds the same bytes.
#   usage: scripts/fuzz.sh SECONDS TARGET...   (after make fuzz-build)
set -eu
[ $# -ge 2 ] || { echo "usage: $0 SECONDS TARGET..." >&2; exit 2; }
secs=$1
shift

# The inputs libFuzzer wrote (its "Test unit written to PATH" lines), each
# shown by path, size and bytes; and the files under $2... with the same bytes.
show_inputs() {
  log=$1
  shift
  found=0
  while IFS= read -r f; do
    [ -f "$f" ] || continue
    found=1
    n=$(wc -c <"$f")
    echo "crashing input: $f ($n bytes); base64 of its first 4096 bytes:"
    head -c 4096 "$f" | base64
    sum=$(sha1sum <"$f" | cut -d' ' -f1)
    for d in "$@"; do
      find "$d" -type f -exec sha1sum {} + 2>/dev/null | awk -v s="$sum" '$1 == s { print "  same bytes as " $2 }'
    done
  done <<EOF
$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
EOF
  [ $found -eq 1 ] || echo "libFuzzer wrote no input (see its output above)"
}

failed() {
  echo "== fuzz_$1 failed ($2): the last lines of $3" >&2
  tail -n 40 "$3"
}

for t in "$@"; do
  bin=./build/fuzz/$t
  regress=fuzz/regressions/$t
  corpus=fuzz/corpus/$t
  log=build/fuzz/$t.log
  replay=build/fuzz/replay-$t/
  mkdir -p "build/fuzz/corpus-$t" "$replay" "$regress"

  if ! "$bin" -runs=0 -artifact_prefix="$replay" "$regress" "$corpus" >"$log" 2>&1; then
    failed "$t" "replaying $regress and $corpus" "$log"
    show_inputs "$log" "$regress" "$corpus"
    exit 1
  fi
  echo "fuzz_$t: replayed $regress and $corpus: $(grep '^Done' "$log" | tail -n 1)"

  if ! "$bin" -max_total_time="$secs" -max_len=20000 -timeout=10 -dict="fuzz/$t.dict" \
      -artifact_prefix="$regress/" "build/fuzz/corpus-$t" "$corpus" >"$log" 2>&1; then
    failed "$t" "fuzzing for ${secs}s" "$log"
    show_inputs "$log"
    exit 1
  fi
  echo "fuzz_$t: fuzzed for ${secs}s: $(grep '^Done' "$log" | tail -n 1)"
done
