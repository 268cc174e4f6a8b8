//! Shared by the integration tests that drive the real `pipe` binary against the real Docker
//! engine: throwaway projects with their own pipeline name, and cleanup that runs even when a
//! test panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pipe::engine::docker::DockerClient;

/// The repository's root (for boxes/ and the example).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project folder with a Pipelinefile; removes every container and image labelled with its
/// pipeline when dropped.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// A unique pipeline name for a test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Project {
    /// `pipelinefile` may use `@NAME@` for the pipeline name.
    pub fn new(prefix: &str, pipelinefile: &str, files: &[(&str, &str)]) -> Self {
        let name = unique(prefix);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boxes")).unwrap();
        std::fs::copy(
            repo().join("boxes/debian-12.toml"),
            dir.path().join("boxes/debian-12.toml"),
        )
        .unwrap();
        let p = Self { dir, name };
        p.write(
            "Pipelinefile.toml",
            &pipelinefile.replace("@NAME@", &p.name),
        );
        for (path, content) in files {
            p.write(path, content);
        }
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A second working copy of this project (another folder, the same pipeline name and
    /// files, without `.pipe/`), as a teammate's checkout on another machine would be.
    pub fn second_copy(&self) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for e in walkdir::WalkDir::new(self.path())
            .into_iter()
            .filter_entry(|e| e.file_name() != ".pipe")
        {
            let e = e.unwrap();
            let to = dir.path().join(e.path().strip_prefix(self.path()).unwrap());
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
        Self {
            dir,
            name: self.name.clone(),
        }
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Runs `pipe ARGS` in the project.
    pub fn pipe(&self, args: &[&str]) -> Run {
        self.pipe_env(args, &[])
    }

    pub fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_pipe(self.path(), args, env)
    }

    /// Image ids of this pipeline's layers.
    pub fn layer_images(&self) -> Vec<String> {
        let client = DockerClient::connect().unwrap();
        let mut ids: Vec<String> = client
            .images_by_labels(&[&format!("pipe.pipeline={}", self.name), "pipe.layer"])
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    }

    /// Names of every container of this pipeline, running or not.
    pub fn containers(&self) -> Vec<String> {
        let client = DockerClient::connect().unwrap();
        let mut names: Vec<String> = client
            .containers_by_labels(&[&format!("pipe.pipeline={}", self.name)], true)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        names
    }

    /// Files left in `.pipe/journal`.
    pub fn journals(&self) -> Vec<String> {
        match std::fs::read_dir(self.path().join(".pipe/journal")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let Ok(client) = DockerClient::connect() else {
            return;
        };
        let label = format!("pipe.pipeline={}", self.name);
        if let Ok(cs) = client.containers_by_labels(&[&label], true) {
            for c in cs {
                let _ = client.remove_container(&c.id);
            }
        }
        if let Ok(imgs) = client.images_by_labels(&[&label]) {
            let mut imgs = imgs;
            // Children before parents.
            imgs.sort_by_key(|i| std::cmp::Reverse(i.created));
            for i in imgs {
                let _ = client.remove_image(&i.id, true);
            }
        }
    }
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "pipe failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run_pipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
    cmd.current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PIPE_DIGEST_KEY")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap().into()
}

/// Builds the debian-12 box once per test process (a no-op when it exists).
pub fn ensure_box() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let r = run_pipe(&repo(), &["box", "build", "debian-12"], &[]);
        assert_eq!(r.code, 0, "box build failed:\n{}\n{}", r.stdout, r.stderr);
    });
}

/// The repository's example project (its Pipelinefile, app/ and provisioners/), with its own
/// pipeline name, container name and host port.
pub fn example(prefix: &str, port: u16) -> Project {
    let repo = repo();
    let text = std::fs::read_to_string(repo.join("Pipelinefile.toml"))
        .unwrap()
        .replace("name = \"ponyfoo\"", "name = \"@NAME@\"")
        .replace(
            "container_name = \"ponyfoo-dev\"",
            "container_name = \"@NAME@-dev\"",
        )
        .replace("host_port = 8080", &format!("host_port = {port}"));
    assert!(text.contains("@NAME@-dev") && text.contains(&format!("host_port = {port}")));
    let mut files: Vec<(String, String)> = Vec::new();
    for dir in ["app", "provisioners"] {
        for e in walkdir::WalkDir::new(repo.join(dir)) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(&repo)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().is_file() && !rel.contains("node_modules") {
                files.push((rel, std::fs::read_to_string(e.path()).unwrap()));
            }
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Project::new(prefix, &text, &refs)
}

/// GET http://127.0.0.1:PORT/PATH with a plain TCP client: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Retries `http_get` until it answers or `secs` pass.
pub fn http_get_retry(port: u16, path: &str, secs: u64) -> (u16, String) {
    let start = std::time::Instant::now();
    loop {
        match http_get(port, path) {
            Ok(r) if r.0 != 0 => return r,
            other => {
                if start.elapsed().as_secs() > secs {
                    panic!("no answer on 127.0.0.1:{port}{path}: {other:?}");
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `docker` CLI output, for what users would look at (history, inspect).
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `pipe` process started in the background, its stderr read line by line.
pub struct Spawned {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

/// Starts `pipe ARGS` in `dir` without waiting for it.
pub fn spawn_pipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
    cmd.current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PIPE_DIGEST_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Spawned {
        child,
        lines: rx,
        stderr: Vec::new(),
    }
}

impl Spawned {
    /// Waits (up to `secs`) for a stderr line containing `text`; panics with what was read.
    #[track_caller]
    pub fn wait_for(&mut self, text: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(text);
                    self.stderr.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no `{text}` on pipe's stderr within {secs}s:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit; returns the exit code (or 128+signal) and the rest of stderr.
    pub fn finish(mut self) -> (i32, String) {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        (code, self.stderr.join("\n"))
    }
}

impl Project {
    /// QEMU processes started for this project (their command lines name its folder).
    pub fn qemu_processes(&self) -> Vec<String> {
        let root = self.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.starts_with("qemu-system") && cmd.contains(&root) {
                found.push(cmd);
            }
        }
        found
    }

    /// Runs ids of the journals left in `.pipe/journal`.
    pub fn journal_runs(&self) -> Vec<String> {
        self.journals()
            .into_iter()
            .filter_map(|f| f.strip_suffix(".json").map(str::to_string))
            .collect()
    }

    /// Containers and images (by name or id) labelled `pipe.run=<run>` or (build machines)
    /// `pipe.build=<run>`.
    pub fn labelled_with_run(&self, run: &str) -> Vec<String> {
        let client = DockerClient::connect().unwrap();
        let l = format!("pipe.run={run}");
        let build = format!("pipe.build={run}");
        let mut out: Vec<String> = client
            .containers_by_labels(&[&l], true)
            .unwrap()
            .into_iter()
            .chain(client.containers_by_labels(&[&build], true).unwrap())
            .map(|c| format!("container {}", c.name))
            .collect();
        out.extend(
            client
                .images_by_labels(&[&l])
                .unwrap()
                .into_iter()
                .map(|i| format!("image {}", i.id)),
        );
        out
    }

    /// The ledger's lines.
    pub fn ledger_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join(".pipe/ledger.jsonl"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}
