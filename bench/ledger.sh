#!/usr/bin/env bash
# bench/ledger.sh: reading a ledger shared in S3, from one run. A ledger of N entries
# (BENCH_ENTRIES, default 1000) is pushed into the local EC2's S3 (`pipe ledger push`), then
# `pipe releases` runs in a second working copy three times: with an empty entry cache (every
# entry is a GET), with the cache it left (the head only), and after 10 more entries appended from
# the first copy (the head and those 10). Each prints its wall time and the GETs, LISTs and
# requests the local EC2 recorded for it.
#
#   bench/ledger.sh        # as root, on a machine where scripts/setup ran; about a minute
#
# No anchor: Packer and Vagrant keep no history of what they built. The local EC2 answers on the
# loopback in about a millisecond; S3 takes tens, so there each GET the cache saves is worth more.
# BENCH_DEBUG=1 times the debug build instead of a release build.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
entries=${BENCH_ENTRIES:-1000}
say() { printf 'ledger: %s\n' "$*" >&2; }

if [[ -d $HOME/.cargo/bin ]]; then PATH="$HOME/.cargo/bin:$PATH"; fi
if [[ ${BENCH_DEBUG:-} == 1 ]]; then
  say "cargo build"
  (cd "$repo" && cargo build --quiet)
  pipe=$repo/target/debug/pipe
else
  say "cargo build --release"
  (cd "$repo" && cargo build --quiet --release)
  pipe=$repo/target/release/pipe
fi
"$pipe" box build debian-12 >/dev/null   # the local EC2 derives its source AMI from it

tmp=$(mktemp -d)
server=
cleanup() {
  local rc=$?
  if [[ -n $server ]]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

# As bench/ec2_bake.sh starts it: scripts/local-ec2 execs the server, so $server is the server
# itself (SIGTERM removes what it made), and --exit-with-parent stops it if this script is killed.
say "starting the local EC2"
"$repo/scripts/local-ec2" --port 0 --exit-with-parent >"$tmp/ready.json" 2>"$tmp/local-ec2.log" &
server=$!
for _ in $(seq 1 600); do
  [[ -s $tmp/ready.json ]] && break
  kill -0 "$server" 2>/dev/null || { say "the local EC2 exited: $(tail -n 5 "$tmp/local-ec2.log")"; exit 1; }
  sleep 0.5
done
endpoint=$(head -n 1 "$tmp/ready.json" | jq -r .endpoint)
[[ $endpoint == http://127.0.0.1:* ]] || { say "the local EC2 did not become ready"; exit 1; }
export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent \
  AWS_SHARED_CREDENTIALS_FILE=/nonexistent NO_COLOR=1
ctl() { curl -fsS -X "$1" "$endpoint/_local_ec2/$2"; }

bucket=pipe-bench-ledger
"$HOME/.cache/pipe/moto-venv/bin/python" -c "
import boto3; boto3.client('s3', endpoint_url='$endpoint', region_name='us-east-1').create_bucket(Bucket='$bucket')"

# Two working copies of a project that keeps its ledger in the bucket.
for copy in a b; do
  mkdir -p "$tmp/$copy"
  cat >"$tmp/$copy/Pipelinefile.toml" <<EOF
[pipeline]
name = "bench-ledger"

[box]
docker = { image = "debian:bookworm" }   # never pulled: nothing runs

[ledger]
backend = "s3"
bucket = "$bucket"
prefix = "bench"
region = "us-east-1"

[env.staging]
target = "docker"
EOF
done

# A local history of N rejections (of releases the ledger never saw: they change nothing in
# `pipe releases`, but each is an entry to read), chained as pipe chains its file.
say "writing $entries entries and pushing them"
python3 - "$tmp/a/.pipe/ledger.jsonl" "$entries" <<'PY'
import hashlib, json, os, sys
path, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
prev = "0" * 64
with open(path, "w") as f:
    for seq in range(1, n + 1):
        line = json.dumps({"seq": seq, "prev": prev, "time": "2026-01-01T00:00:00Z",
                           "who": "bench@host", "event": "reject",
                           "release": f"{seq:064x}", "reason": None}, separators=(",", ":"))
        f.write(line + "\n")
        prev = hashlib.sha256(line.encode()).hexdigest()
PY
(cd "$tmp/a" && "$pipe" ledger push >/dev/null)

declare -A seconds gets lists total
releases() {
  ctl DELETE requests >/dev/null
  local t0 t1
  t0=$(date +%s%N)
  (cd "$tmp/b" && "$pipe" releases >/dev/null)
  t1=$(date +%s%N)
  seconds[$1]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  local log
  log=$(ctl GET requests)
  gets[$1]=$(jq '[.requests[] | select(.action == "GetObject")] | length' <<<"$log")
  lists[$1]=$(jq '[.requests[] | select(.action == "ListObjectsV2")] | length' <<<"$log")
  total[$1]=$(jq '.requests | length' <<<"$log")
}

say "pipe releases in the second copy"
rm -rf "$tmp/b/.pipe/ledger-cache"
releases "empty cache"
releases "warm cache"
# Another writer appends 10 entries (written into the bucket as pipe writes them: chained on
# the last one, the head moved).
"$HOME/.cache/pipe/moto-venv/bin/python" - "$endpoint" "$bucket" "$entries" <<'PY'
import hashlib, json, sys
import boto3
endpoint, bucket, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
key = lambda seq: f"bench/entries/{seq:020d}.json"
prev = hashlib.sha256(s3.get_object(Bucket=bucket, Key=key(n))["Body"].read()).hexdigest()
for seq in range(n + 1, n + 11):
    body = json.dumps({"seq": seq, "prev": prev, "time": "2026-01-01T00:00:01Z",
                       "who": "other@host", "event": "reject",
                       "release": f"{seq:064x}", "reason": None}, separators=(",", ":")).encode()
    s3.put_object(Bucket=bucket, Key=key(seq), Body=body)
    prev = hashlib.sha256(body).hexdigest()
s3.put_object(Bucket=bucket, Key="bench/head.json",
              Body=json.dumps({"seq": n + 10, "sha256": prev}).encode())
PY
releases "10 entries appended elsewhere"

echo
echo "pipe $("$pipe" --version | awk '{print $NF}'), a ledger of $entries entries in the local EC2's S3, one run, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '  %-34s %8s %6s %6s %9s\n' "pipe releases" "seconds" "GETs" "LISTs" "requests"
for k in "empty cache" "warm cache" "10 entries appended elsewhere"; do
  printf '  %-34s %8s %6s %6s %9s\n' "$k" "${seconds[$k]}" "${gets[$k]}" "${lists[$k]}" "${total[$k]}"
done
