//! `[[service]]` entries as the machine runs them: a supervisor script in containers, systemd
//! units on VMs and EC2. Either way the rendered command, user, folder and environment are the
//! same, so a service behaves alike everywhere.
//!
//! Environments are delivered at start into `/run/pipe` (a tmpfs), never into an image: a
//! service may use sensitive variables.

use std::collections::BTreeMap;

/// Where pipe writes the supervisor and service environments on a running machine.
pub const RUN_DIR: &str = "/run/pipe";
/// Where an AMI keeps its baked services' non-sensitive environments (read at boot, before
/// [`RUN_DIR`]'s, which something at boot may write: user data from SSM, say).
pub const BAKED_ENV_DIR: &str = "/etc/pipe/env";
/// Where service logs go in containers.
pub const LOG_DIR: &str = "/var/log/pipe";

/// A service with its templates rendered for one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedService {
    pub name: String,
    pub command: String,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
}

/// `'text'` for sh, with embedded quotes escaped.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The content of `/run/pipe/env/<name>`: `export K='v'` lines.
pub fn env_file(service: &RenderedService) -> String {
    service
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect()
}

/// The content of `/run/pipe/env/<name>` for systemd's `EnvironmentFile=`: `KEY="value"`
/// lines. systemd does not run a shell over the file: inside double quotes it takes `\"`,
/// `\\`, `\$` and `` \` `` as escapes and keeps newlines, so every value round-trips.
pub fn systemd_env_file(service: &RenderedService) -> String {
    service
        .env
        .iter()
        .map(|(k, v)| {
            let mut q = String::with_capacity(v.len() + 2);
            for c in v.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    q.push('\\');
                }
                q.push(c);
            }
            format!("{k}=\"{q}\"\n")
        })
        .collect()
}

/// The script [`exec_as_service`] runs (as root): the service's environment files are read in
/// the shell, as the supervisor and systemd read them, so its values reach the command only
/// through the process environment; then the service's folder and user.
const EXEC_AS_SERVICE: &str = r#"__pipe_name=$1 __pipe_user=$2 __pipe_dir=$3; shift 3
__pipe_found=
for __pipe_f in "$@"; do
  [ "$__pipe_f" = -- ] && break
  [ -f "$__pipe_f" ] && __pipe_found=1
done
if [ -z "$__pipe_found" ]; then
  echo "pipe: service $__pipe_name has no environment on this machine (are its services delivered? pipe up)" >&2
  exit 125
fi
set -a
while [ "$1" != -- ]; do
  if [ -f "$1" ]; then . "$1"; fi
  shift
done
set +a
shift
if [ -n "$__pipe_dir" ]; then cd "$__pipe_dir" || exit 125; fi
if [ -n "$__pipe_user" ] && [ "$__pipe_user" != root ]; then
  exec runuser -u "$__pipe_user" -- "$@"
fi
exec "$@""#;

/// argv that runs `command` on a machine the way `service` runs there (`pipe exec --service`):
/// with the environment files the machine has for it (`env_files`, later ones win: the baked
/// [`BAKED_ENV_DIR`] then [`RUN_DIR`]), in its `workdir`, as its `user`. Nothing is written:
/// the values go from the files into the process environment.
pub fn exec_as_service(
    name: &str,
    user: Option<&str>,
    workdir: Option<&str>,
    env_files: &[String],
    command: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        EXEC_AS_SERVICE.into(),
        "pipe-exec".into(),
        name.into(),
        user.unwrap_or("").into(),
        workdir.unwrap_or("").into(),
    ];
    argv.extend(env_files.iter().cloned());
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    argv
}

/// Where a machine keeps a service's environment, in the order systemd and the supervisor
/// read them.
pub fn env_files(name: &str) -> Vec<String> {
    vec![
        format!("{BAKED_ENV_DIR}/{name}"),
        format!("{RUN_DIR}/env/{name}"),
    ]
}

/// The systemd unit name of a service (prefixed, so `nginx` never clashes with a package's).
pub fn systemd_unit_name(name: &str) -> String {
    format!("pipe-{name}.service")
}

/// The log file of a service in a container.
pub fn log_path(name: &str) -> String {
    format!("{LOG_DIR}/{name}.log")
}

/// The container supervisor: starts every service, restarts one that dies (with a capped
/// back-off), and restarts one at once on SIGHUP (`pipe up --watch`, [`restart_script`]).
/// Each service runs in its own process group (`setsid`), so a stop or a restart reaches
/// whatever the service started, as systemd's control group does on VMs and EC2. Each
/// service's supervising shell writes its pid to `RUN_DIR/supervisors/NAME` and the pid of
/// the service's current process to `RUN_DIR/started/NAME`.
pub fn supervisor_script(services: &[RenderedService]) -> String {
    let mut s = format!(
        r#"#!/bin/sh
# Written by pipe at container start: supervises the Pipelinefile's [[service]] entries.
mkdir -p /var/log/pipe {RUN_DIR}/supervisors {RUN_DIR}/started
pids=""
stop() {{ for p in $pids; do kill -TERM "$p" 2>/dev/null; done; wait $pids; exit 0; }}
trap stop TERM INT
# The service's process group (its own, with setsid), or the process alone without setsid.
signal_child() {{ kill "-$1" "-$child" 2>/dev/null || kill "-$1" "$child" 2>/dev/null; }}
supervise() {{
  name=$1; user=$2; dir=$3; cmd=$4
  log=/var/log/pipe/$name.log
  delay=1; now=""
  trap 'signal_child TERM; wait "$child"; exit 0' TERM
  # SIGHUP: restart now (pipe up --watch synced new files).
  trap 'now=1; signal_child TERM' HUP
  while :; do
    echo "pipe: starting $name" >>"$log"
    started=$(date +%s)
    (
      set -a; [ -f "{RUN_DIR}/env/$name" ] && . "{RUN_DIR}/env/$name"; set +a
      [ -n "$dir" ] && cd "$dir"
      sid=""; command -v setsid >/dev/null && sid=setsid
      if [ -n "$user" ] && [ "$user" != root ] && command -v setpriv >/dev/null; then
        # setpriv execs the service itself, as systemd's User= does; runuser would stay in
        # between and sleep 2 s on every stop before it passes SIGKILL on.
        entry=$(getent passwd "$user") || {{ echo "pipe: no user $user" >&2; exit 1; }}
        HOME=$(echo "$entry" | cut -d: -f6) SHELL=$(echo "$entry" | cut -d: -f7)
        USER=$user LOGNAME=$user
        export HOME SHELL USER LOGNAME
        exec $sid setpriv --reuid="$user" --regid="$(echo "$entry" | cut -d: -f4)" --init-groups -- sh -c "$cmd"
      elif [ -n "$user" ] && [ "$user" != root ]; then
        exec $sid runuser -u "$user" -- sh -c "$cmd"
      else
        exec $sid sh -c "$cmd"
      fi
    ) >>"$log" 2>&1 &
    child=$!
    echo "$child" >"{RUN_DIR}/started/$name"
    wait "$child"
    code=$?
    # A signal ends the wait early: wait for the service itself to be gone, then for the rest
    # of its process group (a port it held is free again), killing what is left after 10 s.
    while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
    left=500
    while kill -0 "-$child" 2>/dev/null; do
      left=$(( left - 1 )); [ "$left" -eq 0 ] && kill -KILL "-$child" 2>/dev/null
      [ "$left" -lt -250 ] && break
      sleep 0.02
    done
    if [ -n "$now" ]; then
      now=""; delay=1
      echo "pipe: restarting $name (asked to)" >>"$log"
      continue
    fi
    echo "pipe: $name exited with code $code; restarting in ${{delay}}s" >>"$log"
    if [ $(( $(date +%s) - started )) -gt 30 ]; then delay=1; fi
    sleep "$delay"
    delay=$(( delay * 2 )); [ "$delay" -gt 30 ] && delay=30
  done
}}
"#
    );
    for svc in services {
        s.push_str(&format!(
            "supervise {name} {} {} {} &\npids=\"$pids $!\"\necho $! >{RUN_DIR}/supervisors/{name}\n",
            sh_quote(svc.user.as_deref().unwrap_or("")),
            sh_quote(svc.workdir.as_deref().unwrap_or("")),
            sh_quote(&svc.command),
            name = sh_quote(&svc.name),
        ));
    }
    // Stay up even with no services (a machine without [[service]] is still a machine); the
    // TERM trap interrupts the wait.
    s.push_str("while :; do sleep 86400 & wait $!; done\n");
    s
}

/// A script that restarts every service of a running container in place, through the
/// supervisor (SIGHUP), once each returns a new process (at most `timeout_s` seconds).
/// `staging` holds what [`supervisor_script`] and the env files would deliver now: when its
/// supervisor is the one the container runs, the env files move into place and the services
/// restart; otherwise (another command, a machine started by an older pipe) the script exits
/// 3 and changes nothing, and the caller restarts the container.
pub fn restart_script(services: &[RenderedService], staging: &str, timeout_s: u32) -> String {
    let mut s = format!(
        r#"set -u
s={staging}
in_place() {{
  cmp -s "$s/supervise" {RUN_DIR}/supervise || return 1
"#
    );
    for svc in services {
        let n = sh_quote(&svc.name);
        s.push_str(&format!(
            "  [ -f {RUN_DIR}/started/{n} ] && kill -0 \"$(cat {RUN_DIR}/supervisors/{n} 2>/dev/null)\" 2>/dev/null || return 1\n"
        ));
    }
    s.push_str(&format!(
        r#"}}
in_place || {{ rm -rf "$s"; exit 3; }}
for f in "$s"/env/*; do [ -e "$f" ] || continue; mv -f "$f" {RUN_DIR}/env/; done
rm -rf "$s"
tries=$(( {timeout_s} * 50 ))
restarted() {{
  while [ "$(cat {RUN_DIR}/started/"$1")" = "$2" ]; do
    tries=$(( tries - 1 ))
    [ "$tries" -gt 0 ] || {{ echo "service $1 did not restart within {timeout_s}s" >&2; exit 1; }}
    sleep 0.02
  done
}}
"#
    ));
    for (i, svc) in services.iter().enumerate() {
        let n = sh_quote(&svc.name);
        s.push_str(&format!(
            "old{i}=$(cat {RUN_DIR}/started/{n}); kill -HUP \"$(cat {RUN_DIR}/supervisors/{n})\"\n"
        ));
    }
    for (i, svc) in services.iter().enumerate() {
        s.push_str(&format!("restarted {} \"$old{i}\"\n", sh_quote(&svc.name)));
    }
    s
}

/// The command a container runs: wait for pipe to deliver the supervisor, then run it. Until
/// then (and in build containers, which never get one) it idles: it looks every 20 ms for
/// the first 2 s (pipe delivers right after the start, and services start as soon as it
/// arrives), then every 200 ms.
pub fn container_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "trap 'exit 0' TERM INT; i=0; while [ ! -f {RUN_DIR}/supervise ]; do if [ $i -lt 100 ]; then i=$((i+1)); sleep 0.02; else sleep 0.2; fi; done; exec /bin/sh {RUN_DIR}/supervise"
        ),
    ]
}

/// One word for a systemd command line that reaches the program exactly as `s`: systemd
/// unescapes C escapes (`\r`, `\\`, ...) even inside quotes and expands `$VAR` and `%x`
/// itself, so all of those are escaped; the command then means what it means in a container.
pub fn systemd_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '$' => q.push_str("$$"),
            '%' => q.push_str("%%"),
            c if c.is_control() => q.push_str(&format!("\\x{:02x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A systemd unit for a service on a VM or EC2 instance.
pub fn systemd_unit(service: &RenderedService) -> String {
    let mut u = format!(
        "# Written by pipe from the Pipelinefile's [[service]] `{name}`.\n[Unit]\nDescription=pipe service {name}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart=/bin/sh -c {cmd}\nRestart=always\nRestartSec=1\nEnvironmentFile=-{BAKED_ENV_DIR}/{name}\nEnvironmentFile=-{RUN_DIR}/env/{name}\n",
        name = service.name,
        cmd = systemd_quote(&service.command),
    );
    if let Some(user) = service.user.as_deref().filter(|u| *u != "root") {
        u.push_str(&format!("User={user}\n"));
    }
    if let Some(dir) = &service.workdir {
        u.push_str(&format!("WorkingDirectory={dir}\n"));
    }
    u.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> RenderedService {
        RenderedService {
            name: "app".into(),
            command: "node /opt/app/server.js --greet 'hi'".into(),
            user: Some("app".into()),
            workdir: Some("/opt/app".into()),
            env: BTreeMap::from([("NODE_ENV".into(), "it's prod".into())]),
            port: Some(8080),
        }
    }

    /// `pipe exec --service`: the command gets the service's environment, from either file
    /// format (the later file wins), in its folder; without any file it fails and says why.
    #[test]
    fn exec_as_service_runs_with_the_services_environment_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let mut s = svc();
        s.env.insert("TOKEN".into(), "a\"b$c`d\\e f\nline2".into());
        let baked = dir.path().join("baked");
        let run = dir.path().join("run");
        // A VM's: systemd's format; the later (delivered) file wins over the baked one.
        std::fs::write(&baked, "NODE_ENV=\"baked\"\n").unwrap();
        std::fs::write(&run, systemd_env_file(&s)).unwrap();
        let files = vec![
            baked.to_string_lossy().into_owned(),
            run.to_string_lossy().into_owned(),
        ];
        let command: Vec<String> = [
            "sh",
            "-c",
            r#"printf '%s|%s|%s' "$NODE_ENV" "$TOKEN" "$(pwd)""#,
        ]
        .map(String::from)
        .to_vec();
        let run_it = |files: &[String]| {
            let argv = exec_as_service("app", None, Some(work.to_str().unwrap()), files, &command);
            std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap()
        };
        let want = format!("it's prod|a\"b$c`d\\e f\nline2|{}", work.display());
        let out = run_it(&files);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{out:?}");
        // A container's: `export K='v'` lines.
        std::fs::write(&run, env_file(&s)).unwrap();
        let out = run_it(&files[1..]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{out:?}");
        // Nothing delivered: it says so instead of running without the environment.
        let gone = vec![dir.path().join("none").to_string_lossy().into_owned()];
        let out = run_it(&gone);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no environment"),
            "{out:?}"
        );
    }

    #[test]
    fn quotes_survive_sh() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}; printf %s \"$NODE_ENV\"",
                env_file(&svc()).trim()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's prod");
    }

    #[test]
    fn supervisor_is_valid_sh_and_names_each_service() {
        let script = supervisor_script(&[svc()]);
        assert!(script.contains(
            "supervise 'app' 'app' '/opt/app' 'node /opt/app/server.js --greet '\\''hi'\\'''"
        ));
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn systemd_env_values_are_escaped() {
        let mut s = svc();
        s.env = BTreeMap::from([
            ("A".into(), "plain".into()),
            ("B".into(), "q\"uo$te `x` \\ 'y'\nz".into()),
        ]);
        assert_eq!(
            systemd_env_file(&s),
            "A=\"plain\"\nB=\"q\\\"uo\\$te \\`x\\` \\\\ 'y'\nz\"\n"
        );
    }

    #[test]
    fn unit_passes_dollars_and_percents_to_sh() {
        let mut s = svc();
        s.command = "echo $HOME 100%".into();
        assert!(systemd_unit(&s).contains("ExecStart=/bin/sh -c \"echo $$HOME 100%%\"\n"));
        assert_eq!(
            systemd_quote(r#"printf "a\r\n" 'b'"#),
            r#""printf \"a\\r\\n\" 'b'""#
        );
    }

    #[test]
    fn unit_runs_as_the_user() {
        let unit = systemd_unit(&svc());
        assert!(unit.contains("User=app\n"));
        assert!(unit.contains("WorkingDirectory=/opt/app\n"));
        assert!(unit.contains("EnvironmentFile=-/run/pipe/env/app\n"));
    }
}
