//! The local EC2 (`scripts/local-ec2`) for tests that bake on ec2: one server per test binary,
//! started on first use with `--exit-with-parent` (it stops, removing every container it
//! made, when the test process exits), reset before each test, which holds it alone.
//!
//! Each test binary starts its own server (a second or two once the instance image exists);
//! sharing one across binaries would need a reset protocol between processes, which the
//! control API does not have.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::Value;

/// A running local EC2.
pub struct LocalEc2 {
    pub endpoint: String,
    pub source_ami: String,
    port: u16,
    _child: Mutex<Child>,
}

/// The server of this test binary, held by one test at a time, reset for it.
pub struct Held {
    pub ec2: &'static LocalEc2,
    _guard: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Held {
    type Target = LocalEc2;
    fn deref(&self) -> &LocalEc2 {
        self.ec2
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The python of the venv scripts/setup makes for the local EC2 (moto, boto3, PyYAML).
pub fn python() -> PathBuf {
    let venv = std::env::var("PIPE_MOTO_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/pipe/moto-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    Path::new(&venv).join("bin/python")
}

/// Starts the server once per test binary; returns it reset and held for the calling test.
pub fn hold() -> Held {
    static SERVER: OnceLock<LocalEc2> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let ec2 = SERVER.get_or_init(start);
    ec2.ctl("POST", "/_local_ec2/reset", "");
    Held { ec2, _guard: guard }
}

/// Starts the server; a start that fails is tried once more (a server that exits before its
/// ready line is a harness hiccup, not what the test is about), and the panic quotes its log.
fn start() -> LocalEc2 {
    // Its source AMI is the debian-12 box's image: build it first (a no-op when it exists), so
    // a test binary run alone on a fresh machine needs nothing else to have run before it.
    crate::common::ensure_box();
    let mut failures = Vec::new();
    for attempt in 1..=2 {
        match try_start(attempt) {
            Ok(ec2) => return ec2,
            Err(e) => {
                failures.push(e);
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
    }
    panic!("local EC2 did not become ready:\n{}", failures.join("\n\n"));
}

fn try_start(attempt: u32) -> Result<LocalEc2, String> {
    // The server's log goes to a file next to the test binary's scratch space, so that a start
    // that fails says why.
    let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("local-ec2-{}-{attempt}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("create the local EC2's log file");
    let mut child = Command::new(repo().join("scripts/local-ec2"))
        .args(["--port", "0", "--exit-with-parent"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start scripts/local-ec2 (scripts/setup makes its venv)");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let ready: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "attempt {attempt}: {e}: {line:?} ({status}); the end of {}:\n{}",
                log_path.display(),
                tail.join("\n")
            ));
        }
    };
    let endpoint = ready["endpoint"].as_str().unwrap().to_string();
    let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    Ok(LocalEc2 {
        endpoint,
        source_ami: ready["source_ami"].as_str().unwrap_or_default().to_string(),
        port,
        _child: Mutex::new(child),
    })
}

impl LocalEc2 {
    /// What a `pipe` child needs to use this server: the endpoint, dummy credentials, the
    /// region, and no instance metadata service (nothing leaves the loopback).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ]
    }

    /// A control API call (`/_local_ec2/...`): the answer's body.
    pub fn ctl(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(
            head.starts_with("HTTP/1.0 2") || head.starts_with("HTTP/1.1 2"),
            "{method} {path}: {head}\n{body}"
        );
        body.to_string()
    }

    /// Injects faults (see the README's control API).
    pub fn fault(&self, json: &str) {
        self.ctl("POST", "/_local_ec2/faults", json);
    }

    /// The recorded API requests of `action`, oldest first: their parameters.
    pub fn requests(&self, action: &str) -> Vec<serde_json::Map<String, Value>> {
        let body = self.ctl("GET", &format!("/_local_ec2/requests?action={action}"), "");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["params"].as_object().unwrap().clone())
            .collect()
    }

    /// The action of every recorded request (of every service), oldest first.
    pub fn actions(&self) -> Vec<String> {
        let body = self.ctl("GET", "/_local_ec2/requests", "");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Registers a newer Debian source AMI (`POST /_local_ec2/source_amis`): its id.
    pub fn register_source_ami(&self) -> String {
        let body = self.ctl("POST", "/_local_ec2/source_amis", "{}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["image_id"].as_str().unwrap().to_string()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.ctl("DELETE", "/_local_ec2/requests", "");
    }

    /// An EC2 call through boto3 (from the local EC2's own venv): `call` with `args` (JSON
    /// keyword arguments), the answer as JSON.
    pub fn ec2(&self, call: &str, args: &str) -> Value {
        self.call("ec2", "us-east-1", call, args)
    }

    /// A call of any service the local EC2 serves, in `region`, through boto3.
    pub fn call(&self, service: &str, region: &str, call: &str, args: &str) -> Value {
        let script = "import boto3, json, sys\nc = boto3.client(sys.argv[4], endpoint_url=sys.argv[1], region_name=sys.argv[5], aws_access_key_id='test', aws_secret_access_key='test')\nprint(json.dumps(getattr(c, sys.argv[2])(**json.loads(sys.argv[3])), default=str))";
        let out = Command::new(python())
            .args(["-c", script, &self.endpoint, call, args, service, region])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{service} {call}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `call` (a `describe_*` of the EC2 API) filtered to `pipeline`'s `pipe:pipeline` tag.
    fn tagged(&self, call: &str, pipeline: &str) -> Value {
        self.ec2(
            call,
            &format!(
                r#"{{"Filters": [{{"Name": "tag:pipe:pipeline", "Values": ["{pipeline}"]}}]}}"#
            ),
        )
    }

    /// The instances of `pipeline` that are not terminated: (id, state, tags).
    pub fn live_instances(&self, pipeline: &str) -> Vec<(String, String)> {
        let v = self.tagged("describe_instances", pipeline);
        v["Reservations"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["Instances"].as_array().unwrap().iter())
            .map(|i| {
                (
                    i["InstanceId"].as_str().unwrap().to_string(),
                    i["State"]["Name"].as_str().unwrap().to_string(),
                )
            })
            .filter(|(_, state)| state != "terminated")
            .collect()
    }

    /// Names of `pipeline`'s key pairs.
    pub fn key_pairs(&self, pipeline: &str) -> Vec<String> {
        let v = self.tagged("describe_key_pairs", pipeline);
        v["KeyPairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["KeyName"].as_str().unwrap().to_string())
            .collect()
    }

    /// Names of `pipeline`'s security groups.
    pub fn security_groups(&self, pipeline: &str) -> Vec<String> {
        let v = self.tagged("describe_security_groups", pipeline);
        v["SecurityGroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["GroupName"].as_str().unwrap().to_string())
            .collect()
    }

    /// `pipeline`'s own AMIs, with their tags as a map.
    pub fn images(&self, pipeline: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
        self.images_in("us-east-1", pipeline)
    }

    /// `pipeline`'s own snapshots in `region`.
    pub fn snapshots_in(&self, region: &str, pipeline: &str) -> Vec<String> {
        let v = self.call(
            "ec2",
            region,
            "describe_snapshots",
            &format!(
                r#"{{"OwnerIds": ["self"], "Filters": [{{"Name": "tag:pipe:pipeline", "Values": ["{pipeline}"]}}]}}"#
            ),
        );
        let mut ids: Vec<String> = v["Snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The recorded requests of `action` with their region: (region, parameters).
    pub fn requests_in(&self, action: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
        let body = self.ctl("GET", &format!("/_local_ec2/requests?action={action}"), "");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["region"].as_str().unwrap_or_default().to_string(),
                    r["params"].as_object().unwrap().clone(),
                )
            })
            .collect()
    }

    /// `pipeline`'s own AMIs in `region`, with their tags as a map.
    pub fn images_in(
        &self,
        region: &str,
        pipeline: &str,
    ) -> Vec<(String, serde_json::Map<String, Value>)> {
        let v = self.call(
            "ec2",
            region,
            "describe_images",
            &format!(
                r#"{{"Owners": ["self"], "Filters": [{{"Name": "tag:pipe:pipeline", "Values": ["{pipeline}"]}}]}}"#
            ),
        );
        v["Images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let tags = i["Tags"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                (i["ImageId"].as_str().unwrap().to_string(), tags)
            })
            .collect()
    }
}
