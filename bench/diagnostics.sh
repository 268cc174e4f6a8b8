#!/usr/bin/env bash
# How long `pipe validate` takes to report a Pipelinefile with very many mistakes (release
# build): 10,000, 40,000 and 100,000 unknown keys, and 20,000 unknown keys spread over as many
# tables. Reporting is linear (one line index per file, no pairwise de-duplication); the target
# is 100,000 unknown keys in under a second. One run each; prints seconds and diagnostics/s.
#
#   bench/diagnostics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -d $HOME/.cargo/bin ]]; then PATH="$HOME/.cargo/bin:$PATH"; fi
cargo build --release --quiet
pipe="$PWD/target/release/pipe"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

keys() { # N: a valid head, then N unknown top-level keys of [pipeline]
  printf '[pipeline]\nname = "bench"\n'
  seq 1 "$1" | sed 's/.*/unknown_key_& = 1/'
}
tables() { # N: N unknown tables with one unknown key each
  printf '[pipeline]\nname = "bench"\n'
  seq 1 "$1" | sed 's/.*/[nosuch_&]\nkey = 1/'
}

printf '%-34s %10s %12s %10s\n' "file" "bytes" "diagnostics" "seconds"
run() { # NAME FILE
  local start end n
  start=$(date +%s%N)
  n=$("$pipe" validate -f "$2" 2>&1 >/dev/null | grep -c '^error: ' || true)
  end=$(date +%s%N)
  printf '%-34s %10d %12d %10.3f\n' "$1" "$(stat -c %s "$2")" "$n" "$(echo "($end - $start) / 1000000000" | bc -l)"
}
for n in 10000 40000 100000; do
  keys "$n" >"$work/keys-$n.toml"
  run "$n unknown keys" "$work/keys-$n.toml"
done
tables 20000 >"$work/tables.toml"
run "20000 unknown tables" "$work/tables.toml"
