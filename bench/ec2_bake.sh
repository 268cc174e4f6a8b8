#!/usr/bin/env bash
# bench/ec2_bake.sh: an EC2 bake through pipe and through its anchor, Packer 1.6.6's amazon-ebs
# builder, against the same local EC2 (scripts/local-ec2, started here): wall-clock seconds and
# the number of API calls each makes, and the ratios.
#
#   bench/ec2_bake.sh      # as root, on a machine where scripts/setup ran; ~2-4 minutes
#
# The same work (bench/ec2/): a base AMI from Debian's newest debian-12 AMI (the source AMI
# filter, newest first) provisioned with base.sh, then an app AMI on that base with app.sh. pipe:
# `pipe bake --env staging --skip-verify` of bench/ec2/Pipelinefile.toml (Packer verifies
# nothing, so neither does pipe here). Packer: packer-base.json, then packer-app.json from the
# base AMI it made: the primal/carnivore split as two Packer builds, the way a Packer user bakes
# two layers. Both from scratch: the local EC2 is reset before each (no AMI to reuse).
#
# Both do, per layer: a temporary key pair and security group, an instance, SSH, the shell
# provisioner (as root), stop, CreateImage, wait until the AMI is available, clean up. pipe also
# tags everything it creates at creation (key pair, security group, instance and its volumes,
# AMI and snapshots), makes its key on this host, opens SSH to this host's /32 only, requires
# IMDSv2 and installs (then removes) the host's extra CA certificates; Packer is run with its
# defaults (its key made by EC2, SSH open to 0.0.0.0/0, tags on the AMIs only), as users run it.
#
# AWS reports instances and images `pending` for a while; the local EC2 is told to do the same
# (`{"pending": {"instances": N, "images": N}}`: each new instance and AMI answers `pending` to
# its first N describes), so that each tool's waits are exercised: poll intervals decide how soon
# it notices. Packer's polling is fixed per waiter unless AWS_POLL_DELAY_SECONDS is set: it is
# unset here, as for most users.
#
# API calls: every request the local EC2 recorded during one tool's run (GET /_local_ec2/requests),
# by action in the logs. One run, as the project's rule for benchmarks says: read the ratios.
#
# Environment: BENCH_PENDING (default 3), PIPE (a pipe binary; default: cargo build --release),
# BENCH_KEEP=1 keeps the logs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=$repo/bench
pending=${BENCH_PENDING:-3}

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (like scripts/setup): Docker and the local EC2 need it here"
for tool in cargo docker packer curl jq python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup first"
done
docker info >/dev/null 2>&1 || die "no Docker daemon answers: run scripts/setup first"

work=$(mktemp -d "${TMPDIR:-/tmp}/pipe-bench-ec2.XXXXXX")
logs=$work/logs
mkdir -p "$logs" "$work/pipeline" "$work/packer-tmp"
ec2_pid=

finish() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n $ec2_pid ]]; then
    # SIGTERM: the local EC2 removes every container and image it made.
    kill -TERM "$ec2_pid" 2>/dev/null || true
    wait "$ec2_pid" 2>/dev/null || true
  fi
  if [[ ${BENCH_KEEP:-0} == 1 || $code -ne 0 ]]; then
    say "logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# run LOG CMD...: output goes to the log; on failure its tail is shown.
run() {
  local log=$logs/$1
  shift
  printf '\n$ %s\n' "$*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    say "failed: $*"
    tail -n 40 "$log" | sed 's/^/  | /' >&2
    return 1
  fi
}

# --- prepare (untimed) ----------------------------------------------------------------------------

if [[ -n ${PIPE:-} ]]; then
  pipe=$PIPE
else
  say "cargo build --release"
  (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
  pipe=$repo/target/release/pipe
fi
[[ -x $pipe ]] || die "no pipe binary at $pipe"

say "box debian-12 (untimed; a no-op when it exists; the local EC2's instances start from it)"
(cd "$repo" && run box.log "$pipe" box build debian-12)

say "starting the local EC2"
"$repo/scripts/local-ec2" --port 0 --exit-with-parent >"$work/ready.json" 2>"$logs/local-ec2.log" &
ec2_pid=$!
for _ in $(seq 1 600); do
  [[ -s $work/ready.json ]] && break
  kill -0 "$ec2_pid" 2>/dev/null || die "the local EC2 exited (see $logs/local-ec2.log)"
  sleep 0.5
done
endpoint=$(head -n 1 "$work/ready.json" | jq -r .endpoint)
[[ $endpoint == http://127.0.0.1:* ]] || die "the local EC2 did not become ready"

ctl() { curl -fsS -X "$1" -H 'Content-Type: application/json' "$endpoint/_local_ec2/$2" ${3:+-d "$3"}; }

cp "$bench/ec2/Pipelinefile.toml" "$bench/ec2/base.sh" "$bench/ec2/app.sh" "$work/pipeline/"

# pipe and Packer reach the local EC2 only: dummy credentials, no instance metadata, no profile
# files, and a proxy nobody listens on for anything that is not on the loopback.
export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent
export CHECKPOINT_DISABLE=1 PACKER_TMP_DIR=$work/packer-tmp PACKER_CACHE_DIR=$work/packer-tmp/cache
export PACKER_CONFIG_DIR=$work/packer-tmp
unset AWS_POLL_DELAY_SECONDS AWS_MAX_ATTEMPTS AWS_TIMEOUT_SECONDS
packer_env=(env HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
  https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.0/8,localhost
  no_proxy=127.0.0.0/8,localhost)

"$pipe" --version >/dev/null
packer version >/dev/null

# --- the two tools ----------------------------------------------------------------------------------

pipe_bake() {
  (cd "$work/pipeline" && run pipe.log "$pipe" bake --env staging --skip-verify --no-progress)
}

packer_bake() {
  local run_id base
  run_id=$(date +%s)
  run packer.log "${packer_env[@]}" packer build -color=false -machine-readable \
    -var "endpoint=$endpoint" -var "dir=$work/pipeline" -var "run=$run_id" \
    "$bench/ec2/packer-base.json"
  base=$(grep -o ',artifact,0,id,us-east-1:ami-[0-9a-f]*' "$logs/packer.log" | tail -n 1 | sed 's/.*us-east-1://')
  [[ $base == ami-* ]] || { say "no base AMI in Packer's output"; return 1; }
  run packer.log "${packer_env[@]}" packer build -color=false -machine-readable \
    -var "endpoint=$endpoint" -var "dir=$work/pipeline" -var "run=$run_id" -var "base=$base" \
    "$bench/ec2/packer-app.json"
}

declare -A seconds calls
# measured TOOL CMD: from a reset local EC2 with `pending` armed, the wall clock of CMD and the
# API calls it made; checks that two AMIs came out.
measured() {
  local tool=$1 start end
  shift
  ctl POST reset >/dev/null
  ctl POST faults "{\"pending\": {\"instances\": $pending, \"images\": $pending}}" >/dev/null
  say "$tool"
  start=$(now)
  "$@"
  end=$(now)
  seconds[$tool]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  ctl GET requests >"$logs/$tool-requests.json"
  calls[$tool]=$(jq '.requests | length' "$logs/$tool-requests.json")
  jq -r '.requests[] | .action' "$logs/$tool-requests.json" | sort | uniq -c | sort -rn >"$logs/$tool-calls.txt"
  local amis
  amis=$(aws_images | jq '[.Images[] | select(.State == "available")] | length')
  [[ $amis == 2 ]] || die "$tool made $amis available AMIs, not 2"
  say "$tool: ${seconds[$tool]} s, ${calls[$tool]} API calls"
}

# The account's own AMIs, through the local EC2's venv (boto3).
aws_images() {
  "${PIPE_MOTO_VENV:-$HOME/.cache/pipe/moto-venv}/bin/python" -c '
import boto3, json, sys
c = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")
print(json.dumps(c.describe_images(Owners=["self"]), default=str))' "$endpoint"
}

measured pipe pipe_bake
measured packer packer_bake

# --- report -----------------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo
echo "pipe $("$pipe" --version | awk '{print $NF}') vs $(packer version | head -n 1), local EC2 with pending $pending, one run"
printf '%-44s %10s %10s %12s\n' "base + app AMI from scratch" pipe packer pipe/packer
printf '%-44s %10s %10s %12s\n' "wall time (s)" "${seconds[pipe]}" "${seconds[packer]}" "$(ratio "${seconds[pipe]}" "${seconds[packer]}")"
printf '%-44s %10s %10s %12s\n' "API calls" "${calls[pipe]}" "${calls[packer]}" "$(ratio "${calls[pipe]}" "${calls[packer]}")"
echo
echo "API calls by action:"
printf '  %-34s %6s %6s\n' action pipe packer
join -a1 -a2 -e0 -o 0,1.2,2.2 \
  <(awk '{ print $2, $1 }' "$logs/pipe-calls.txt" | sort) \
  <(awk '{ print $2, $1 }' "$logs/packer-calls.txt" | sort) |
  sort -k2,2nr -k3,3nr | awk '{ printf "  %-34s %6s %6s\n", $1, $2, $3 }'
