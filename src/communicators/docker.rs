//! The docker-exec communicator: commands run with the Engine API's exec (attached, demuxed,
//! streamed), files travel as one tar stream through the archive endpoint.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::tar;
use super::{Collect, Communicator, ExecError, ExecRequest, OutputSink, Stream, UploadOptions};
use crate::engine::docker::{DockerClient, DockerError};

/// Every exec carries this variable with a unique value, so that on a timeout or an interrupt
/// pipe can find and kill everything the command started, even processes that left its
/// process group.
pub const EXEC_MARKER_VAR: &str = "PIPE_EXEC_ID";

/// How long to wait for the output to end after killing a timed-out command.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often a running exec checks for Ctrl-C.
const INTERRUPT_POLL: Duration = Duration::from_millis(200);

/// Kills a timed-out exec inside the container: its process group when known (`$1`), then
/// every process whose environment carries the exec's marker (`$2`).
const KILL_SCRIPT: &str = r#"pg="$1"; id="$2"
[ -n "$pg" ] && kill -KILL -- "-$pg" 2>/dev/null
for d in /proc/[0-9]*; do
  if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "PIPE_EXEC_ID=$id"; then
    kill -KILL "${d#/proc/}" 2>/dev/null
  fi
done
exit 0"#;

/// Commands and files for one running container.
#[derive(Debug, Clone)]
pub struct DockerExec {
    client: DockerClient,
    container: String,
    /// False for cleanup work that must finish after Ctrl-C (see [`DockerExec::uninterruptible`]).
    interruptible: bool,
}

impl DockerExec {
    /// A communicator for the running container `container` (id or name).
    pub fn new(client: DockerClient, container: impl Into<String>) -> Self {
        Self {
            client,
            container: container.into(),
            interruptible: true,
        }
    }

    /// Commands that keep running after Ctrl-C/SIGTERM (still bounded by their timeouts): for
    /// cleanup that must finish, such as handing services back to a container pipe stopped.
    pub fn uninterruptible(mut self) -> Self {
        self.interruptible = false;
        self
    }

    /// The container this communicator talks to.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Puts a tar into the folder `parent`, making it first only when the engine says it is
    /// missing: an upload into a folder that exists (nearly every one) is one request instead
    /// of an exec and a request.
    fn put_into<F>(&self, parent: &str, produce: F) -> Result<(), ExecError>
    where
        F: Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Sync,
    {
        match self
            .client
            .put_archive(&self.container, parent, |w| produce(w))
        {
            Err(e) if e.is_not_found() => {
                self.run_checked(&["mkdir", "-p", parent])?;
                self.client
                    .put_archive(&self.container, parent, |w| produce(w))
                    .map_err(transport)
            }
            r => r.map_err(transport),
        }
    }

    /// Runs a helper command as root and fails with its stderr on a non-zero exit.
    fn run_checked(&self, argv: &[&str]) -> Result<(), ExecError> {
        let req = ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            user: Some("0".into()),
            timeout: Some(Duration::from_secs(300)),
            ..ExecRequest::default()
        };
        let mut out = Collect::default();
        let code = self.exec(&req, &mut out)?;
        if code != 0 {
            return Err(ExecError::Transport(format!(
                "`{}` in container {} failed with exit code {code}: {}",
                argv.join(" "),
                self.container,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Kills what a timed-out or interrupted exec is running, from a second exec.
    async fn kill_exec(&self, exec_id: &str, marker: &str) {
        let docker = self.client.api();
        let host_pid = docker
            .inspect_exec(exec_id)
            .await
            .ok()
            .and_then(|i| i.pid)
            .filter(|p| *p > 0);
        // The engine reports the host's pid; the container sees its own. When the engine runs
        // on this host, /proc maps one to the other. The exec is its own process group leader.
        let pgid = host_pid.and_then(container_pid).unwrap_or_default();
        let config = ExecConfig {
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                KILL_SCRIPT.into(),
                "sh".into(),
                pgid.to_string(),
                marker.into(),
            ]),
            user: Some("0".into()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let Ok(created) = docker.create_exec(&self.container, config).await else {
            return;
        };
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            docker.start_exec(&created.id, None).await
        {
            let drain = async { while output.next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(30), drain).await;
        }
    }

    async fn run(&self, req: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError> {
        let docker = self.client.api();
        let marker = new_marker();
        let mut env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("{EXEC_MARKER_VAR}={marker}"));
        let config = ExecConfig {
            attach_stdin: Some(req.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env),
            cmd: Some(req.argv.clone()),
            user: req.user.clone(),
            working_dir: req.workdir.clone(),
            ..Default::default()
        };
        // Errors name the command (argv[0]) but never the env, which may hold secrets.
        let what = format!("`{}` in container {}", req.argv[0], self.container);
        let created = docker
            .create_exec(&self.container, config)
            .await
            .map_err(|e| transport(DockerError::api("exec", &what, e)))?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let (mut output, input) = match docker.start_exec(&created.id, Some(options)).await {
            Ok(StartExecResults::Attached { output, input }) => (output, input),
            Ok(StartExecResults::Detached) => {
                return Err(ExecError::Transport(format!("exec {what}: not attached")));
            }
            Err(e) => return Err(transport(DockerError::api("exec", &what, e))),
        };
        // Stdin is written concurrently with reading the output, so neither side can fill a
        // pipe and wait for the other. Without stdin the write side stays open (a half-close
        // would end the exec's stdin, which it does not have anyway).
        let stdin_task = req.stdin.clone().map(|data| {
            let mut input = input;
            tokio::spawn(async move {
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await;
                // Keep the connection alive until the output is done.
                std::future::pending::<()>().await;
            })
        });
        // When the runtime cannot start the command, the engine says so on stdout and the exit
        // code is 126; hold such a first chunk until the exit code tells what it was.
        let mut held: Option<bytes::Bytes> = None;
        let mut seen_output = false;
        let deadline = req.timeout.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(INTERRUPT_POLL);
        let stopped: Option<ExecError> = loop {
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        if !seen_output && message.starts_with(RUNTIME_FAILED) {
                            held = Some(message);
                        } else {
                            if let Some(h) = held.take() {
                                sink.chunk(Stream::Stdout, &h);
                            }
                            sink.chunk(Stream::Stdout, &message);
                        }
                        seen_output = true;
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        seen_output = true;
                        sink.chunk(Stream::Stderr, &message);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if let Some(t) = &stdin_task { t.abort(); }
                        return Err(transport(DockerError::api("exec", &what, e)));
                    }
                    None => break None,
                },
                _ = expired => break Some(ExecError::TimedOut(req.timeout.unwrap_or_default())),
                _ = tick.tick() => if self.interruptible && crate::interrupt::requested() {
                    break Some(ExecError::Interrupted);
                },
            }
        };
        if let Some(err) = stopped {
            self.kill_exec(&created.id, &marker).await;
            let drain = async { while output.next().await.is_some() {} };
            let _ = tokio::time::timeout(KILL_GRACE, drain).await;
            if let Some(t) = &stdin_task {
                t.abort();
            }
            return Err(err);
        }
        if let Some(t) = &stdin_task {
            t.abort();
        }
        // The output ends as the process exits; the exit code may trail it by a moment.
        for _ in 0..100 {
            let info = docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| transport(DockerError::api("inspect exec", &what, e)))?;
            if info.running != Some(true)
                && let Some(code) = info.exit_code
            {
                return Ok(runtime_failure(code as i32, held, sink));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ExecError::Transport(format!(
            "exec {what}: the engine reported no exit code"
        )))
    }
}

impl Communicator for DockerExec {
    fn describe(&self) -> String {
        format!("docker exec {}", self.container)
    }

    fn exec(&self, req: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError> {
        if req.argv.is_empty() {
            return Err(ExecError::Transport("exec: the command is empty".into()));
        }
        self.client.block_on(self.run(req, sink))
    }

    fn upload(&self, src: &Path, dest: &str, opts: &UploadOptions) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        // Fail before creating anything when the source is missing.
        std::fs::symlink_metadata(src).map_err(|e| {
            std::io::Error::new(e.kind(), format!("upload source {}: {e}", src.display()))
        })?;
        self.put_into(&parent, |w| tar::write_tree(src, &name, w))?;
        if let Some(owner) = &opts.owner {
            let dest = format!("{parent}/{name}").replace("//", "/");
            self.run_checked(&["chown", "-R", &format!("{owner}:"), &dest])?;
        }
        Ok(())
    }

    fn upload_bytes(&self, data: &[u8], dest: &str, mode: u32) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        self.put_into(&parent, |w| tar::write_bytes(data, &name, mode, w))
    }

    fn download(&self, src: &str, dest: &Path) -> Result<(), ExecError> {
        self.client
            .get_archive(&self.container, src, |r| tar::unpack_tree(r, dest))
            .map_err(transport)
    }
}

/// How the engine starts its message when the runtime could not start a command.
const RUNTIME_FAILED: &[u8] = b"OCI runtime exec failed";

/// The exit code a shell would give: 127 when the command does not exist, 126 when it cannot
/// be executed. The runtime's message goes to stderr, where a shell would print it.
fn runtime_failure(code: i32, held: Option<bytes::Bytes>, sink: &mut dyn OutputSink) -> i32 {
    let Some(msg) = held else {
        return code;
    };
    if code != 126 {
        sink.chunk(Stream::Stdout, &msg);
        return code;
    }
    let text = String::from_utf8_lossy(&msg);
    sink.chunk(Stream::Stderr, format!("{}\n", text.trim_end()).as_bytes());
    if text.contains("executable file not found") || text.contains("no such file or directory") {
        127
    } else {
        126
    }
}

fn transport(e: DockerError) -> ExecError {
    ExecError::Transport(e.to_string())
}

/// A value unique to this exec across processes and time.
fn new_marker() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid a host process has in its innermost pid namespace (`NSpid:` in /proc/PID/status).
fn container_pid(host_pid: i64) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}
