#!/usr/bin/env bash
# The baseline for the main job: the same three commands per file as examples/manpage-stats.yaml
# (checksum; decompress and count lines and words; write a one-line result), run by
# `xargs -P 2` with no engine around them. Prints the wall time and files per second.
#
#   FILES (default /usr/share/man/man1/*.gz), LIMIT (default 2500),
#   OUT_DIR (default target/manpage-stats-xargs, emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-/usr/share/man/man1/*.gz}
LIMIT=${LIMIT:-2500}
OUT_DIR=${OUT_DIR:-$PWD/target/manpage-stats-xargs}
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
compgen -G "$FILES" | LC_ALL=C sort | awk -v n="$LIMIT" 'NR <= n' > "$list"
n=$(wc -l < "$list")
start=$(date +%s.%N)
# The same commands per file as the DAG's three steps, in one sh per file.
tr '\n' '\0' < "$list" | OUT_DIR="$OUT_DIR" xargs -0 -P 2 -n 1 sh -c '
  FILE=$1
  CHECKSUM=$(sha256sum "$FILE")
  COUNTS=$(zcat -- "$FILE" | wc -l -w)
  set -- $COUNTS
  printf "%s\t%s\t%s\t%s\n" "$FILE" "${CHECKSUM%% *}" "$1" "$2" > "$OUT_DIR/$(basename "$FILE").tsv"
' _
end=$(date +%s.%N)
awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { w = e - s; printf "xargs -P 2: %d files, wall time %.2fs, %.1f files/s\n", n, w, n / w }'
