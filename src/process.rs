//! Running the host's tools (qemu-img, debootstrap, curl, ...) and saying why one failed: the
//! command line as the user would type it, how it ended, and the end of what it wrote on stderr
//! between two rules:
//!
//! ```text
//! `qemu-img convert -O qcow2 a.raw b.qcow2` exited with status 1
//! ---- stderr ----
//! qemu-img: Could not open 'a.raw': No such file or directory
//! ----
//! ```
//!
//! A bottom-level module: it knows nothing of pipe, the module error enums wrap its
//! [`ProcessError`] as their source.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output};

/// Lines of stderr kept in an error; a longer stderr keeps only its last lines.
pub const TAIL_LINES: usize = 40;

/// Why a subprocess failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// It could not be started: not installed, not executable, ...
    #[error("could not start `{program}`: {source}")]
    Start {
        /// The program, quoted as in a shell.
        program: String,
        #[source]
        source: io::Error,
    },

    /// It ran and exited with a failure status, or was killed by a signal.
    #[error("`{command}` {}{}", describe_status(*.status), section(.label, .text))]
    Exited {
        /// The command line, quoted as in a shell.
        command: String,
        status: ExitStatus,
        /// What `text` is: `stderr`, or `output` for stdout and stderr together.
        label: &'static str,
        /// Trimmed, and only its last [`TAIL_LINES`] lines.
        text: String,
    },
}

impl ProcessError {
    /// `cmd` could not be started.
    pub fn start(cmd: &Command, source: io::Error) -> Self {
        ProcessError::Start {
            program: quote(cmd.get_program()),
            source,
        }
    }

    /// `cmd` ended with `status` (not a success), having written `stderr`.
    pub fn exited(cmd: &Command, status: ExitStatus, stderr: &[u8]) -> Self {
        ProcessError::Exited {
            command: describe(cmd),
            status,
            label: "stderr",
            text: tail(&String::from_utf8_lossy(stderr), TAIL_LINES),
        }
    }

    /// `cmd` ended with `status`; `output` is its stdout and stderr together (as read by a
    /// caller that streams both).
    pub fn exited_with_output(cmd: &Command, status: ExitStatus, output: &str) -> Self {
        ProcessError::Exited {
            command: describe(cmd),
            status,
            label: "output",
            text: tail(output, TAIL_LINES),
        }
    }

    /// True when the program never ran (a hint to install it fits).
    pub fn not_started(&self) -> bool {
        matches!(self, ProcessError::Start { .. })
    }
}

/// For callers bound to `io::Result` (a writer callback): the message is kept, and a failure
/// to start keeps its kind (`NotFound`, `PermissionDenied`).
impl From<ProcessError> for io::Error {
    fn from(e: ProcessError) -> Self {
        let kind = match &e {
            ProcessError::Start { source, .. } => source.kind(),
            ProcessError::Exited { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Runs `cmd` to the end with stdout and stderr captured (stdin closed); an error unless it
/// exits with status 0.
pub fn run(cmd: &mut Command) -> Result<Output, ProcessError> {
    let out = cmd.output().map_err(|e| ProcessError::start(cmd, e))?;
    check(cmd, out.status, &out.stderr)?;
    Ok(out)
}

/// Runs `cmd` to the end with the stdio it was given (inherited unless set), for commands
/// whose output goes to the terminal or a file. Only a failure to start is an error: the
/// status is the caller's to judge (or to pass to [`check`]).
pub fn status_of(cmd: &mut Command) -> Result<ExitStatus, ProcessError> {
    cmd.status().map_err(|e| ProcessError::start(cmd, e))
}

/// Starts `cmd` for a caller that reads its pipes and waits for it itself.
pub fn spawn(cmd: &mut Command) -> Result<Child, ProcessError> {
    cmd.spawn().map_err(|e| ProcessError::start(cmd, e))
}

/// An error unless `status` is a success; `stderr` is what the caller read of the command's
/// stderr (empty when it was not piped).
pub fn check(cmd: &Command, status: ExitStatus, stderr: &[u8]) -> Result<(), ProcessError> {
    if status.success() {
        Ok(())
    } else {
        Err(ProcessError::exited(cmd, status, stderr))
    }
}

/// The command line as the user would type it: program and arguments, each quoted for a POSIX
/// shell where needed. (Environment and working directory are not shown.)
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word for a POSIX shell: as is when it has only characters no shell treats specially,
/// otherwise in single quotes (a `'` inside as `'\''`). Not UTF-8: lossily.
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    // A leading `=` is expanded by zsh (`=ls` is the path of ls).
    if !word.is_empty() && !word.starts_with('=') && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `exited with status 1`, `was killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name}{core})"),
                None => format!("was killed by signal {sig}{core}"),
            }
        }
        None => format!("ended with {status}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// `text` trimmed; when it has more than `n` lines, its last `n` after a line saying how many
/// came before.
pub fn tail(text: &str, n: usize) -> String {
    let text = text.trim();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return text.to_string();
    }
    let skipped = lines.len() - n;
    format!(
        "[... {skipped} earlier line{} ...]\n{}",
        if skipped == 1 { "" } else { "s" },
        lines[skipped..].join("\n")
    )
}

/// The text between rules, after a line break; nothing when there is no text.
fn section(label: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("\n---- {label} ----\n{text}\n----")
    }
}

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args);
        c
    }

    #[test]
    fn quotes_only_what_a_shell_would_split_or_expand() {
        let q = |s: &str| quote(OsStr::new(s));
        assert_eq!(q("qemu-img"), "qemu-img");
        assert_eq!(
            q("/var/cache/pipe/a_b-1.2.qcow2"),
            "/var/cache/pipe/a_b-1.2.qcow2"
        );
        assert_eq!(q("--include=a,b"), "--include=a,b");
        assert_eq!(q("--proto=http,https"), "--proto=http,https");
        assert_eq!(q("=http,https"), "'=http,https'");
        assert_eq!(q(""), "''");
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("$HOME"), "'$HOME'");
        assert_eq!(q("*"), "'*'");
        assert_eq!(q("it's"), r"'it'\''s'");
        assert_eq!(q("two\nlines"), "'two\nlines'");
        assert_eq!(
            describe(&cmd("sh", &["-c", "echo 'x' >&2; exit 3"])),
            r"sh -c 'echo '\''x'\'' >&2; exit 3'"
        );
    }

    #[test]
    fn quoted_command_lines_survive_a_shell() {
        let args = ["a b", "it's", "$HOME", "", "*", "\\", "x\ny"];
        let line = describe(cmd("printf", &["%s|"]).args(args));
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a b|it's|$HOME||*|\\|x\ny|"
        );
    }

    #[test]
    fn the_message_names_command_status_and_stderr() {
        let e = ProcessError::exited(
            &cmd("qemu-img", &["convert", "-O", "qcow2", "a.raw", "b.qcow2"]),
            ExitStatus::from_raw(1 << 8),
            b"qemu-img: Could not open 'a.raw': No such file or directory\n\n",
        );
        assert_eq!(
            e.to_string(),
            "`qemu-img convert -O qcow2 a.raw b.qcow2` exited with status 1\n---- stderr ----\nqemu-img: Could not open 'a.raw': No such file or directory\n----"
        );
    }

    #[test]
    fn no_stderr_no_rules_and_signals_by_name() {
        let e = ProcessError::exited(&cmd("curl", &["x"]), ExitStatus::from_raw(9), b" \n");
        assert_eq!(e.to_string(), "`curl x` was killed by signal 9 (SIGKILL)");
        let e = ProcessError::exited_with_output(
            &cmd("debootstrap", &["bookworm"]),
            ExitStatus::from_raw(2 << 8),
            "I: Retrieving InRelease\nE: Couldn't download packages\n",
        );
        assert_eq!(
            e.to_string(),
            "`debootstrap bookworm` exited with status 2\n---- output ----\nI: Retrieving InRelease\nE: Couldn't download packages\n----"
        );
    }

    #[test]
    fn a_long_stderr_keeps_its_end() {
        let long: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&long, TAIL_LINES);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES + 1);
        assert_eq!(lines[0], "[... 60 earlier lines ...]");
        assert_eq!(lines[1], "line 61");
        assert_eq!(lines[TAIL_LINES], "line 100");
        assert_eq!(tail("  one\ntwo  \n\n", 2), "one\ntwo");
        assert_eq!(tail("a\nb\nc", 2), "[... 1 earlier line ...]\nb\nc");

        let e = ProcessError::exited(
            &cmd("tar", &[]),
            ExitStatus::from_raw(1 << 8),
            long.as_bytes(),
        );
        let msg = e.to_string();
        assert!(!msg.contains("line 60\n"), "{msg}");
        assert!(msg.ends_with("line 99\nline 100\n----"), "{msg}");
    }

    #[test]
    fn a_command_that_does_not_exist_could_not_start() {
        let mut c = cmd("pipe-no-such-tool", &["--flag"]);
        let e = run(&mut c).unwrap_err();
        assert!(e.not_started());
        let ProcessError::Start { source, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with("could not start `pipe-no-such-tool`: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(status_of(&mut c).unwrap_err().not_started());
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_command_that_fails_shows_its_stderr() {
        let mut c = cmd("sh", &["-c", "echo out; echo oops >&2; exit 3"]);
        let e = run(&mut c).unwrap_err();
        assert!(!e.not_started());
        assert_eq!(
            e.to_string(),
            "`sh -c 'echo out; echo oops >&2; exit 3'` exited with status 3\n---- stderr ----\noops\n----"
        );
        let ProcessError::Exited { status, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(status.code(), Some(3));

        let out = run(&mut cmd("sh", &["-c", "echo fine"])).unwrap();
        assert_eq!(out.stdout, b"fine\n");

        let status =
            status_of(cmd("sh", &["-c", "exit 4"]).stdout(std::process::Stdio::null())).unwrap();
        let e = check(&cmd("sh", &["-c", "exit 4"]), status, b"").unwrap_err();
        assert_eq!(e.to_string(), "`sh -c 'exit 4'` exited with status 4");
    }
}
