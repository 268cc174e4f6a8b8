//! The command lines the SSH communicator sends: sshd hands them to the login user's shell
//! with `-c`, so everything is quoted for sh here, once.
//!
//! Every command runs as `exec env PIPE_EXEC_ID=<id> /bin/sh -c SCRIPT`: sshd makes that shell
//! a session (and process group) leader, and the marker is in the environment of everything
//! the command starts. To stop a command (timeout, Ctrl-C) pipe runs [`kill_command`] on a
//! second channel, which kills the process group of every process carrying the marker and
//! then every such process, so children that left the group or survived sudo die too. No pid
//! file is written, so nothing is left on the machine either way.
//!
//! The request's environment travels on the command line (`env K=V ...`), after `sudo` /
//! `runuser`, because sshd rejects `setenv` for anything not in `AcceptEnv` and sudo resets
//! the environment. Those values may be secrets: this module's output is never logged.

use std::collections::BTreeMap;

use crate::communicators::ExecError;
use crate::services::sh_quote;

/// The variable that marks every process of one exec (the same name docker exec uses).
pub const EXEC_MARKER_VAR: &str = crate::communicators::docker::EXEC_MARKER_VAR;

/// How a command becomes root or another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user pipe logs in as.
    pub login: String,
    /// Run commands without an explicit user as root (through `sudo -n` unless the login is
    /// root), as docker exec does.
    pub root_by_default: bool,
}

impl Identity {
    fn login_is_root(&self) -> bool {
        self.login == "root"
    }

    /// The argv prefix that runs a command as `user` (None: the default user).
    fn prefix(&self, user: Option<&str>) -> Vec<String> {
        let want = match user {
            Some("0") | Some("root") => Some("root"),
            Some(u) => Some(u),
            None if self.root_by_default => Some("root"),
            None => None,
        };
        match want {
            None => Vec::new(),
            Some(u) if u == self.login => Vec::new(),
            Some(u) if self.login_is_root() => {
                vec!["runuser".into(), "-u".into(), u.into(), "--".into()]
            }
            Some("root") => vec!["sudo".into(), "-n".into(), "--".into()],
            Some(u) => vec![
                "sudo".into(),
                "-n".into(),
                "-u".into(),
                u.into(),
                "--".into(),
            ],
        }
    }
}

/// Names a shell accepts as variables; anything else could break the command line.
fn check_env_name(k: &str) -> Result<(), ExecError> {
    let ok = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ExecError::Transport(format!(
            "environment variable name {k:?} is not valid"
        )))
    }
}

/// The command line for one exec. `marker` identifies its processes for [`kill_command`].
pub fn exec_command(
    who: &Identity,
    marker: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: Option<&str>,
    user: Option<&str>,
) -> Result<String, ExecError> {
    if argv.is_empty() {
        return Err(ExecError::Transport("exec: the command is empty".into()));
    }
    let mut inner: Vec<String> = who.prefix(user);
    inner.push("env".into());
    inner.push(format!("{EXEC_MARKER_VAR}={marker}"));
    for (k, v) in env {
        check_env_name(k)?;
        inner.push(format!("{k}={v}"));
    }
    // `env` treats a leading `NAME=` word as an assignment; `--` would not help, `./` would
    // change the meaning. Commands with `=` in their name are not worth the ambiguity.
    if argv[0].contains('=') {
        return Err(ExecError::Transport(format!(
            "exec: command names with `=` are not supported: {:?}",
            argv[0]
        )));
    }
    inner.extend(argv.iter().cloned());
    let mut script = String::new();
    if let Some(dir) = workdir {
        script.push_str(&format!("cd {} || exit 125\n", sh_quote(dir)));
    }
    script.push_str("exec ");
    script.push_str(&join(&inner));
    Ok(format!(
        "exec env {EXEC_MARKER_VAR}={marker} /bin/sh -c {}",
        sh_quote(&script)
    ))
}

/// Kills every process of the exec marked `marker`, and their process groups, as root when
/// the identity can become root.
pub fn kill_command(who: &Identity, marker: &str) -> String {
    const SCRIPT: &str = r#"id="$1"
for d in /proc/[0-9]*; do
  if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "PIPE_EXEC_ID=$id"; then
    p=${d#/proc/}
    pg=$(cut -d' ' -f5 "$d/stat" 2>/dev/null)
    [ -n "$pg" ] && [ "$pg" -gt 1 ] && kill -KILL -- "-$pg" 2>/dev/null
    kill -KILL "$p" 2>/dev/null
  fi
done
exit 0"#;
    let mut argv = if who.login_is_root() {
        Vec::new()
    } else {
        vec!["sudo".into(), "-n".into(), "--".into()]
    };
    argv.extend([
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "pipe-kill".into(),
        marker.into(),
    ]);
    let cmd = join(&argv);
    if who.login_is_root() {
        cmd
    } else {
        // Without sudo, the login user can still kill its own processes.
        let own = join(&argv[3..]);
        format!("{cmd} 2>/dev/null || {own}")
    }
}

/// `mkdir -p PARENT && tar -x` of the stream on stdin, as root.
pub fn untar_command(who: &Identity, parent: &str) -> Vec<String> {
    let mut argv = who.prefix(None);
    argv.extend(
        [
            "/bin/sh",
            "-c",
            r#"mkdir -p -- "$1" && exec tar -x -p --no-same-owner -f - -C "$1""#,
            "pipe-untar",
            parent,
        ]
        .map(String::from),
    );
    argv
}

/// `tar -c` of PARENT/NAME to stdout, as root.
pub fn tar_command(who: &Identity, parent: &str, name: &str) -> Vec<String> {
    let mut argv = who.prefix(None);
    argv.extend(["tar", "-c", "-f", "-", "-C", parent, "--", name].map(String::from));
    argv
}

/// Words quoted for sh and joined with spaces.
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
            {
                w.clone()
            } else {
                sh_quote(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Identity {
        Identity {
            login: "root".into(),
            root_by_default: true,
        }
    }

    fn admin() -> Identity {
        Identity {
            login: "admin".into(),
            root_by_default: true,
        }
    }

    /// Runs a command line with sh, as sshd would, and returns its stdout.
    fn run(cmd: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn argv_and_env_survive_two_shells() {
        let tricky = "a b 'q' \"d\" $HOME `x` \\ ; *\nline";
        let env = BTreeMap::from([("PIPE_T".to_string(), tricky.to_string())]);
        let who = Identity {
            login: whoami(),
            root_by_default: false,
        };
        let cmd = exec_command(
            &who,
            "m1",
            &[
                "sh".into(),
                "-c".into(),
                r#"printf '%s|%s|%s' "$PIPE_T" "$PIPE_EXEC_ID" "$(pwd)""#.into(),
            ],
            &env,
            Some("/"),
            None,
        )
        .unwrap();
        assert_eq!(run(&cmd), format!("{tricky}|m1|/"));
    }

    #[test]
    fn users() {
        assert!(root().prefix(None).is_empty());
        assert_eq!(root().prefix(Some("nobody"))[0], "runuser");
        assert_eq!(admin().prefix(None), ["sudo", "-n", "--"]);
        assert_eq!(admin().prefix(Some("0")), ["sudo", "-n", "--"]);
        assert!(admin().prefix(Some("admin")).is_empty());
        assert_eq!(
            admin().prefix(Some("app"))[..4],
            ["sudo", "-n", "-u", "app"]
        );
    }

    #[test]
    fn rejects_bad_env_names() {
        let env = BTreeMap::from([("A B".to_string(), "x".to_string())]);
        assert!(exec_command(&root(), "m", &["true".into()], &env, None, None).is_err());
    }

    fn whoami() -> String {
        std::env::var("USER").unwrap_or_else(|_| run("id -un").trim().to_string())
    }
}
