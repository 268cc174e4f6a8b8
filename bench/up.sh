#!/usr/bin/env bash
# bench/up.sh: wall-clock seconds for pipe against its anchors, Packer 1.6.6 (docker builder) and
# Vagrant 2.3.4 (docker provider), on the same Docker engine and the same work: the repository's
# example (box debian-12, primal.sh + precache, app/ + carnivore.sh, nginx in front of node),
# from the same local box image, until the app answers through nginx on 127.0.0.1.
#
#   bench/up.sh            # as root, on a machine where scripts/setup ran; ~10-20 minutes
#
# Scenarios (one run each; the table shows seconds and anchor/pipe ratios):
#   cold        no layer images. pipe: `destroy --layers`, then `up --local`. Packer: primal
#               build (box -> base image), carnivore build (base -> app image), `docker run`.
#               Vagrant: `vagrant up --provider=docker` of a destroyed machine.
#   warm        nothing changed. pipe: `up --local`. Packer: both builds again (Packer has no
#               reuse) and the container replaced. Vagrant: `vagrant up` of the running machine
#               (only the run: "always" services provisioner runs).
#   app edit    a comment appended to app/server.js. pipe: `up --local` (rebuilds the app layer
#               only). Packer: the carnivore build only (what a user of the primal/carnivore split
#               runs), container replaced. Vagrant: `vagrant provision` (Vagrant has no layers: all
#               provisioners run again; that is how a Vagrant user applies a change).
#   app edit, from scratch   another comment. pipe: `up --local` again. Packer: primal and
#               carnivore builds (the one-template habit, or a base that must be refreshed).
#               Vagrant: `vagrant reload --provision` (a fresh container, every provisioner).
# Every timing ends when `curl http://127.0.0.1:PORT/` answers with the page (NODE_ENV=...), and
# after each edit the script checks that the machine really runs the edited server.js.
#
# The same work, tool by tool:
# - Box: pipe's `pipe-box/debian-12` image (`pipe box build`, untimed, a no-op when present) is
#   the starting point for all three: Packer `"image": <box id>, "pull": false`; Vagrant builds
#   FROM it.
# - Vagrant 2.3.4's docker provider has no docker-exec communicator: file and shell provisioners
#   only run over SSH. So its container comes from vagrant/Dockerfile (the box + openssh-server +
#   a throwaway key, `d.build_dir`, `d.has_ssh = true`), with sshd as the main process; Vagrant
#   reaches it on a published 127.0.0.1 port. That image build is part of Vagrant's cold time.
# - Build trust: pipe installs the host's extra CA certificates (/usr/local/share/ca-certificates)
#   for provisioning, gives commands NODE_EXTRA_CA_CERTS (and the host's proxy variables), and
#   removes the certificates before committing. Packer and Vagrant do the same: build-trust.sh
#   install/remove around the provisioners, env.sh / the Vagrantfile's build_env.
# - Provisioning, in pipe's order: primal.sh (NGINX_WORKERS), then the precache step (package.json
#   + lock uploaded to /opt/precache, the Pipelinefile's precache `run` there), then app/ uploaded
#   to /opt/app and carnivore.sh (NODE_ENV, SERVER_NAME, NGINX_WORKERS). Values come from the
#   Pipelinefile's [vars] and [base.precache].
# - Services: pipe supervises node (as `app`) and nginx itself. The anchors use services.sh: the
#   Packer image's entrypoint; on the Vagrant machine a run: "always" provisioner restarts it.
#
# Isolation: everything happens in a temp copy of the example whose Pipelinefile is renamed
# (pipeline `ponyfoo-bench`, so `destroy --layers` never touches the repository's own images),
# with its own container names and 127.0.0.1 ports (BENCH_PORT_BASE+1..+4, default 18081-18084).
# Packer and Vagrant get their own home/temp folders in the temp copy and no update checks.
# On exit (also on error or Ctrl-C) the script removes the containers, the anchors' images
# (labelled pipe-bench.tool), the Vagrant machine, pipe's layer images of `ponyfoo-bench`, and
# the temp copy. The box image stays: it is shared. Re-running is safe: leftovers of a killed run
# are removed first.
#
# One run, as the project's rule for benchmarks says: the figures move with the network (apt and
# npm registries) and with whatever else the machine runs; the ratios are what to read.
#
# Environment: BENCH_PORT_BASE (default 18080), BENCH_KEEP=1 keeps the temp copy and its logs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=$repo/bench
port_base=${BENCH_PORT_BASE:-18080}
pipe_port=$((port_base + 1))
packer_port=$((port_base + 2))
vagrant_port=$((port_base + 3))
vagrant_ssh_port=$((port_base + 4))
pipeline_name=ponyfoo-bench
pipe_container=pipe-bench-pipe
packer_container=pipe-bench-packer
vagrant_container=pipe-bench-vagrant
packer_primal=pipe-bench/packer-primal
packer_carnivore=pipe-bench/packer-carnivore
wait_timeout=180

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (like scripts/setup): Docker, Packer and Vagrant need it here"
for tool in cargo docker packer vagrant curl jq python3 ssh-keygen; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup first"
done
docker info >/dev/null 2>&1 || die "no Docker daemon answers: run scripts/setup first"

# No update checks or telemetry: all traffic stays on 127.0.0.1 and in containers.
export CHECKPOINT_DISABLE=1 VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_NO_PLUGINS=1
export VAGRANT_DEFAULT_PROVIDER=docker

work=$(mktemp -d "${TMPDIR:-/tmp}/pipe-bench.XXXXXX")
pipeline=$work/pipeline
logs=$work/logs
mkdir -p "$pipeline" "$logs" "$work/build/certs" "$work/vagrant/box" "$work/packer-tmp" "$work/vagrant.d"
export PACKER_TMP_DIR=$work/packer-tmp PACKER_CACHE_DIR=$work/packer-tmp/cache
export PACKER_CONFIG_DIR=$work/packer-tmp VAGRANT_HOME=$work/vagrant.d VAGRANT_CWD=$work/vagrant
pipe=$repo/target/release/pipe

# --- cleanup --------------------------------------------------------------------------------------

remove_anchor_images() {
  local ids
  ids=$(docker images -q --filter "label=pipe-bench.tool=$1" | sort -u)
  # Children before parents: retry while something still goes away.
  while [[ -n $ids ]]; do
    local left="" removed=false id
    for id in $ids; do
      if docker rmi -f "$id" >/dev/null 2>&1; then removed=true; else left+="$id "; fi
    done
    ids=$left
    $removed || break
  done
  [[ -z $ids ]] || say "warning: could not remove $1 images: $ids"
}

cleanup_anchors() {
  if [[ -f $work/vagrant/Vagrantfile ]]; then
    vagrant destroy -f >>"$logs/cleanup.log" 2>&1 || true
  fi
  docker rm -f "$packer_container" "$vagrant_container" >/dev/null 2>&1 || true
  # Packer's build containers are named by Docker; its images and Vagrant's carry our label.
  local tool c
  for tool in packer vagrant; do
    for c in $(docker ps -aq --filter "label=pipe-bench.tool=$tool"); do
      docker rm -f "$c" >/dev/null 2>&1 || true
    done
  done
  remove_anchor_images packer
  remove_anchor_images vagrant
}

cleanup_pipe() {
  if [[ -x $pipe && -f $pipeline/Pipelinefile.toml ]]; then
    (cd "$pipeline" && "$pipe" destroy --layers && "$pipe" clean) >>"$logs/cleanup.log" 2>&1 ||
      say "warning: pipe destroy --layers failed in the temp copy (see $logs/cleanup.log)"
  fi
  # What a killed run's temp copy (another project folder) left: the names are the bench's own.
  docker rm -f "$pipe_container" >/dev/null 2>&1 || true
  local left
  left=$(docker images -q --filter "label=pipe.pipeline=$pipeline_name" | sort -u)
  if [[ -n $left ]]; then
    # shellcheck disable=SC2086
    docker rmi -f $left >/dev/null 2>&1 || say "warning: could not remove pipe/$pipeline_name-* images"
  fi
}

finish() {
  local code=$?
  trap - EXIT INT TERM
  say "cleaning up"
  cleanup_anchors
  cleanup_pipe
  if [[ ${BENCH_KEEP:-0} == 1 || $code -ne 0 ]]; then
    say "temp copy and logs kept in $work"
    [[ ${BENCH_KEEP:-0} == 1 ]] || say "(remove it with: rm -rf $work)"
  else
    rm -rf "$work"
  fi
  exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

# --- helpers --------------------------------------------------------------------------------------

now() { date +%s.%N; }

# run LOG CMD...: a step's output goes to its log; on failure the log's tail is shown.
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

wait_page() {
  local port=$1 deadline
  deadline=$(($(date +%s) + wait_timeout))
  until curl -fsS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null | grep -q "NODE_ENV=$node_env"; do
    (($(date +%s) < deadline)) || die "nothing answered on 127.0.0.1:$port within ${wait_timeout}s"
    sleep 0.1
  done
}

declare -A seconds
# timed SCENARIO TOOL CMD...: wall clock of CMD (a function doing the tool's whole workflow).
timed() {
  local scenario=$1 tool=$2 start end
  shift 2
  say "$scenario: $tool"
  start=$(now)
  "$@"
  end=$(now)
  seconds[$scenario/$tool]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
  say "$scenario: $tool ${seconds[$scenario/$tool]}s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- prepare (untimed) ----------------------------------------------------------------------------

for p in "$pipe_port" "$packer_port" "$vagrant_port" "$vagrant_ssh_port"; do
  if ! port_free "$p"; then
    docker rm -f "$pipe_container" "$packer_container" "$vagrant_container" >/dev/null 2>&1 || true
    port_free "$p" || die "127.0.0.1:$p is in use: set BENCH_PORT_BASE to a free range"
  fi
done

say "cargo build --release"
(cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"

say "temp copy of the example in $work"
cp -a "$repo/Pipelinefile.toml" "$repo/app" "$repo/provisioners" "$repo/boxes" "$pipeline/"
rm -rf "$pipeline/app/node_modules"
sed -i -e "s/^name = \"ponyfoo\"\$/name = \"$pipeline_name\"/" \
  -e "s/^container_name = \"ponyfoo-dev\"\$/container_name = \"$pipe_container\"/" \
  -e "s/^host_port = 8080\$/host_port = $pipe_port/" "$pipeline/Pipelinefile.toml"

# The values the anchors need, from the Pipelinefile (env dev), so they do the same work as pipe.
eval "$(python3 - "$pipeline/Pipelinefile.toml" "$pipeline_name" "$pipe_container" "$pipe_port" \
  "$work/build/precache.sh" <<'PY'
import re, shlex, sys, tomllib
path, name, container, port, precache_script = sys.argv[1:]
d = tomllib.load(open(path, "rb"))
def fail(msg):
    sys.exit(f"bench: error: the example's Pipelinefile changed shape: {msg}")
if d["pipeline"]["name"] != name:
    fail("could not rename [pipeline].name")
dev = d.get("env", {}).get("dev", {})
if dev.get("container_name") != container:
    fail("could not set [env.dev].container_name")
if not any(s.get("host_port") == int(port) for s in d.get("service", [])):
    fail("could not set nginx's host_port")
def var(n):
    v = dev.get("vars", {}).get(n, d["vars"][n])
    return str(v["value"] if isinstance(v, dict) else v)
def render(t):
    t = re.sub(r"\{\{\s*vars\.([A-Za-z0-9_]+)\s*\}\}", lambda m: var(m.group(1)), t)
    if "{{" in t:
        fail(f"a template the bench cannot render: {t}")
    return t
pre = d["base"]["precache"]
# The anchors' templates upload these two files into /opt/precache, as pipe does.
if pre["files"] != ["app/package.json", "app/package-lock.json"] or pre.get("to", "/opt/precache").rstrip("/") != "/opt/precache":
    fail("[base.precache] files/to differ from what packer/primal.json and the Vagrantfile upload")
# The precache step as one script for the anchors: pipe uploads the files into `to`, then runs
# `sh -c RUN` there with the step's env.
lines = ["set -e", "cd /opt/precache"]
lines += [f"export {k}={shlex.quote(render(v))}" for k, v in pre.get("env", {}).items()]
lines.append(f"exec sh -c {shlex.quote(render(pre['run']))}")
with open(precache_script, "w") as f:
    f.write("\n".join(lines) + "\n")
for k, v in {"node_env": var("node_env"), "server_name": var("server_name"),
             "nginx_workers": var("nginx_workers")}.items():
    print(f"{k}={shlex.quote(v)}")
PY
)" || die "could not read the example's Pipelinefile"

cleanup_anchors
cleanup_pipe

say "box debian-12 (untimed; a no-op when it exists)"
box=$(cd "$pipeline" && "$pipe" box build debian-12 --json | jq -r 'select(.event == "result") | .data.id')
[[ $box == sha256:* ]] || die "pipe box build debian-12 gave no image id"

# Build trust and environment for the anchors' provisioners (see the header).
cp /usr/local/share/ca-certificates/*.crt "$work/build/certs/" 2>/dev/null || true
cp "$bench/build-trust.sh" "$work/build/"
{
  echo "NODE_EXTRA_CA_CERTS=/opt/bench-build/bundle.pem"
  for k in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [[ -n ${!k:-} ]]; then printf '%s=%q\n' "$k" "${!k}"; fi
  done
} >"$work/build/env.sh"

cp "$bench/vagrant/Vagrantfile" "$work/vagrant/"
cp "$bench/vagrant/Dockerfile" "$work/vagrant/box/"
ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C pipe-bench -f "$work/vagrant/key"
cp "$work/vagrant/key.pub" "$work/vagrant/box/authorized_keys"
export BENCH_PIPELINE=$pipeline BENCH_BUILD=$work/build BENCH_BOX=$box BENCH_PORT=$vagrant_port \
  BENCH_SSH_PORT=$vagrant_ssh_port BENCH_SSH_KEY=$work/vagrant/key BENCH_CONTAINER=$vagrant_container \
  BENCH_VAGRANT_BUILD_DIR=$work/vagrant/box BENCH_SERVICES=$bench/services.sh \
  BENCH_NODE_ENV=$node_env BENCH_SERVER_NAME=$server_name BENCH_NGINX_WORKERS=$nginx_workers

# Load each tool once so no timing pays for a cold page cache or a first-run setup.
"$pipe" --version >/dev/null
packer version >/dev/null
run vagrant.log vagrant status

# --- the three tools' workflows ---------------------------------------------------------------------

pipe_up() {
  (cd "$pipeline" && run pipe.log "$pipe" up --local --no-progress)
  wait_page "$pipe_port"
}

packer_primal() {
  run packer.log packer build -color=false \
    -var "box=$box" -var "pipeline=$pipeline" -var "build=$work/build" \
    -var "nginx_workers=$nginx_workers" \
    -var "repository=$packer_primal" "$bench/packer/primal.json"
}

packer_carnivore() {
  run packer.log packer build -color=false \
    -var "primal=$packer_primal:latest" -var "pipeline=$pipeline" -var "build=$work/build" \
    -var "bench=$bench" -var "node_env=$node_env" -var "server_name=$server_name" \
    -var "nginx_workers=$nginx_workers" -var "repository=$packer_carnivore" \
    "$bench/packer/carnivore.json"
}

packer_run() {
  run packer.log docker rm -f "$packer_container"
  run packer.log docker run -d --name "$packer_container" --label pipe-bench.tool=packer \
    -p "127.0.0.1:$packer_port:80" "$packer_carnivore:latest"
  wait_page "$packer_port"
}

packer_full() { packer_primal && packer_carnivore && packer_run; }
packer_app() { packer_carnivore && packer_run; }

vagrant_up() {
  run vagrant.log vagrant up --provider=docker
  wait_page "$vagrant_port"
}

vagrant_provision() {
  run vagrant.log vagrant provision
  wait_page "$vagrant_port"
}

vagrant_reload() {
  run vagrant.log vagrant reload --provision
  wait_page "$vagrant_port"
}

edit_app() {
  marker="// bench edit $1 $(date +%s%N)"
  printf '%s\n' "$marker" >>"$pipeline/app/server.js"
}

# The page answering is not enough after an edit: the machine must run the edited file.
check_edit() {
  local tool=$1 out
  case $tool in
    pipe) out=$(cd "$pipeline" && "$pipe" exec -- tail -n 1 /opt/app/server.js) ;;
    packer) out=$(docker exec "$packer_container" tail -n 1 /opt/app/server.js) ;;
    vagrant) out=$(docker exec "$vagrant_container" tail -n 1 /opt/app/server.js) ;;
  esac || die "could not read /opt/app/server.js in $tool's machine"
  [[ $out == "$marker" ]] || die "$tool's machine does not run the edited app/server.js (last line: $out)"
}

# --- scenarios ------------------------------------------------------------------------------------

say "box $box, ports 127.0.0.1:$pipe_port (pipe) :$packer_port (packer) :$vagrant_port (vagrant)"

# cold: no layer images anywhere (cleanup above removed them).
timed cold pipe pipe_up
timed cold packer packer_full
timed cold vagrant vagrant_up

timed warm pipe pipe_up
timed warm packer packer_full
timed warm vagrant vagrant_up

edit_app 1
timed app pipe pipe_up
check_edit pipe
timed app packer packer_app
check_edit packer
timed app vagrant vagrant_provision
check_edit vagrant

edit_app 2
timed scratch pipe pipe_up
check_edit pipe
timed scratch packer packer_full
check_edit packer
timed scratch vagrant vagrant_reload
check_edit vagrant

# --- report ---------------------------------------------------------------------------------------

secs() { [[ -n $1 ]] && awk -v a="$1" 'BEGIN { printf "%.2f", a }' || echo -; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }

rows=(
  "cold|cold: no layer images -> page|pipe up|packer primal+carnivore, run|vagrant up"
  "warm|warm: nothing changed -> page|pipe up|packer primal+carnivore, run|vagrant up"
  "app|app edit -> page|pipe up|packer carnivore, run|vagrant provision"
  "scratch|app edit, from scratch -> page|pipe up|packer primal+carnivore, run|vagrant reload --provision"
)
echo
echo "pipe $("$pipe" --version | awk '{print $NF}') vs $(packer version | head -n 1) and $(vagrant --version), Docker $(docker version -f '{{.Server.Version}}'), one run, seconds"
printf '%-34s %8s %8s %8s %13s %14s\n' scenario pipe packer vagrant packer/pipe vagrant/pipe
for row in "${rows[@]}"; do
  IFS='|' read -r key label _ _ _ <<<"$row"
  p=${seconds[$key/pipe]:-} k=${seconds[$key/packer]:-} v=${seconds[$key/vagrant]:-}
  printf '%-34s %8s %8s %8s %13s %14s\n' "$label" "$(secs "$p")" "$(secs "$k")" "$(secs "$v")" "$(ratio "$k" "$p")" "$(ratio "$v" "$p")"
done
echo
echo "what each tool ran:"
for row in "${rows[@]}"; do
  IFS='|' read -r _ label p k v <<<"$row"
  printf '  %-34s %s | %s | %s\n' "$label" "$p" "$k" "$v"
done
