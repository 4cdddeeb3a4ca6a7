#!/bin/sh
# Rewrites the reference table in docs/config.md from the key table in the
# binary (`cohort check-config --keys`). Run after adding or changing a key.
set -eu
cd "$(dirname "$0")/.."
make -s all
table=$(mktemp)
build/cohort check-config --keys > "$table"
awk -v t="$table" '
  /^\| Key \| Type \|/ { while ((getline line < t) > 0) print line; skip = 1; next }
  skip && /^\|/ { next }
  { skip = 0; print }
' docs/config.md > docs/config.md.new
mv docs/config.md.new docs/config.md
rm -f "$table"
