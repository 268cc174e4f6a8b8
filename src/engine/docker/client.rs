//! A synchronous Docker Engine API client: `bollard` plus a small tokio runtime it owns.
//!
//! Every method blocks the calling thread. Do not call them from inside another tokio runtime
//! (tokio forbids nested `block_on`); pipe's commands are synchronous, so this never happens.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, CreateImageOptions,
    DownloadFromContainerOptions, ListContainersOptions, ListImagesOptions, RemoveContainerOptions,
    RemoveImageOptions, StartContainerOptions, StopContainerOptions, TagImageOptions,
    UploadToContainerOptions,
};
use futures_util::StreamExt;

use super::error::DockerError;
use super::stream::{self, ChannelReader, ChannelWriter};

/// How long connecting and negotiating the API version may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// bollard's per-request timeout. Long because an attached exec, an import or a commit is one
/// request; callers bound what they wait for themselves (exec timeouts, interrupts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Where the engine listens when `DOCKER_HOST` is unset.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A connected engine. Cheap to clone; clones share the connection pool and the runtime.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    rt: Arc<tokio::runtime::Runtime>,
    endpoint: String,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// An image, as pipe needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    /// `repo:tag` names pointing at it.
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    /// Bytes.
    pub size: i64,
}

/// The config baked into an imported or committed image. Never put secrets here: images outlive
/// runs and are copied around.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A port to publish, always on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    /// `None`: the engine picks a free port (read it back with [`DockerClient::inspect_container`]).
    pub host_port: Option<u16>,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl PortSpec {
    /// `127.0.0.1:host:container/tcp`.
    pub fn tcp(container_port: u16, host_port: Option<u16>) -> Self {
        Self {
            container_port,
            host_port,
            protocol: "tcp".into(),
        }
    }
}

/// What to create a container from. `ContainerSpec::new(image)` gives the defaults pipe wants
/// (`init: true`, nothing published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: Option<String>,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// The container's environment. A commit merges it into the image, so never put secrets or
    /// build-only settings (proxies) here: pass those per exec.
    pub env: BTreeMap<String, String>,
    /// A commit merges these into the image's labels too.
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    /// Mount point -> mount options (`""`, or e.g. `"rw,size=64m"`).
    pub tmpfs: BTreeMap<String, String>,
    /// Bind mounts, `host path:container path[:options]`. A commit never includes what is
    /// mounted, only the mount point.
    pub binds: Vec<String>,
    /// Run a tiny init as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    pub hostname: Option<String>,
    pub workdir: Option<String>,
}

impl ContainerSpec {
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            name: None,
            image: image.into(),
            cmd: None,
            entrypoint: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            tmpfs: BTreeMap::new(),
            binds: Vec::new(),
            init: true,
            hostname: None,
            workdir: None,
        }
    }
}

/// A port the engine published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
}

/// A container, as pipe needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The image as the container was created from it (name or id).
    pub image: String,
    pub running: bool,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PublishedPort>,
}

impl DockerClient {
    /// Connects to the local engine (`DOCKER_HOST=unix://...` or `/var/run/docker.sock`) and
    /// negotiates the API version with it.
    pub fn connect() -> Result<Self, DockerError> {
        let endpoint = match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
                Some(path) => path.to_string(),
                None => return Err(DockerError::UnsupportedHost { value: h }),
            },
            _ => DEFAULT_SOCKET.to_string(),
        };
        let unreachable = |reason: String| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pipe-docker")
            .enable_all()
            .build()
            .map_err(|e| unreachable(format!("cannot start the I/O runtime: {e}")))?;
        if !std::path::Path::new(&endpoint).exists() {
            return Err(unreachable("no such socket".into()));
        }
        let docker = {
            let _guard = rt.enter();
            Docker::connect_with_unix(
                &endpoint,
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unreachable(e.to_string()))?
        };
        let docker = rt
            .block_on(async {
                tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await
            })
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            docker,
            rt: Arc::new(rt),
            endpoint,
        })
    }

    /// The socket path this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying bollard client, for calls this wrapper does not cover; drive its futures
    /// with [`DockerClient::block_on`].
    pub fn api(&self) -> &Docker {
        &self.docker
    }

    /// Runs a future on the client's runtime and waits for it.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // ---- images ----

    /// The image called `name` (a `repo:tag` or an id), or `None`.
    pub fn inspect_image(&self, name: &str) -> Result<Option<ImageInfo>, DockerError> {
        match self.block_on(self.docker.inspect_image(name)) {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                tags: i.repo_tags.unwrap_or_default(),
                labels: i
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                created: i
                    .created
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
                    .map(|d| d.timestamp())
                    .unwrap_or(0),
                size: i.size.unwrap_or(0),
            })),
            Err(e) => not_found_is_none(DockerError::api("inspect image", name, e)),
        }
    }

    /// Images carrying all these labels; each filter is `key` (present) or `key=value`.
    pub fn images_by_labels(&self, filters: &[&str]) -> Result<Vec<ImageInfo>, DockerError> {
        let options = ListImagesOptions {
            filters: Some(label_filters(filters)),
            ..Default::default()
        };
        let list = self
            .block_on(self.docker.list_images(Some(options)))
            .map_err(|e| DockerError::api("list images", format!("labelled {filters:?}"), e))?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels.into_iter().collect(),
                created: i.created,
                size: i.size,
            })
            .collect())
    }

    /// Removes an image (or just the tag, when `name` is one of several tags). `Ok(false)` when
    /// there was no such image. Without `force`, an image a container uses is kept (an error).
    pub fn remove_image(&self, name: &str, force: bool) -> Result<bool, DockerError> {
        let options = RemoveImageOptions {
            force,
            noprune: false,
        };
        match self.block_on(self.docker.remove_image(name, Some(options), None)) {
            Ok(_) => Ok(true),
            Err(e) => {
                not_found_is_none::<()>(DockerError::api("remove image", name, e)).map(|_| false)
            }
        }
    }

    /// Pulls `reference` (`name[:tag]`) from its registry; returns the image id. Progress
    /// lines from the engine go to `progress`.
    pub fn pull_image(
        &self,
        reference: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String, DockerError> {
        let (name, tag) = match reference.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (reference, "latest"),
        };
        let options = CreateImageOptions {
            from_image: Some(name.into()),
            tag: Some(tag.into()),
            ..Default::default()
        };
        self.block_on(async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| {
                    DockerError::api("pull image", reference, e).with_hint(
                        "check the name and that this engine can reach its registry (docker pull shows the same error)",
                    )
                })?;
                if let Some(status) = info.status {
                    progress(&status);
                }
            }
            Ok::<(), DockerError>(())
        })?;
        self.inspect_image(reference)?
            .map(|i| i.id)
            .ok_or_else(|| DockerError::NotFound {
                what: format!("image {reference} after pulling it"),
                hint: None,
            })
    }

    /// Tags `image` (name or id) as `repo:tag`.
    pub fn tag_image(&self, image: &str, repo: &str, tag: &str) -> Result<(), DockerError> {
        let options = TagImageOptions {
            repo: Some(repo.into()),
            tag: Some(tag.into()),
        };
        self.block_on(self.docker.tag_image(image, Some(options)))
            .map_err(|e| DockerError::api("tag image", format!("{image} as {repo}:{tag}"), e))
    }

    /// Imports a root filesystem tar (written by `produce` on another thread, streamed with
    /// backpressure) as the image `repo:tag` with `config`; returns the image id.
    pub fn import_image<F>(
        &self,
        repo: &str,
        tag: &str,
        config: &ImageConfig,
        produce: F,
    ) -> Result<String, DockerError>
    where
        F: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let what = format!("{repo}:{tag}");
        let changes = import_changes(config).map_err(|message| DockerError::Api {
            action: "import image",
            what: what.clone(),
            message,
            status: None,
            hint: None,
        })?;
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            changes,
            ..Default::default()
        };
        let (tx, rx) = stream::channel();
        let body = bollard::body_try_stream(stream::receiver_stream(rx));
        let request = async {
            let mut s = self.docker.create_image(Some(options), Some(body), None);
            while let Some(item) = s.next().await {
                item?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        let (produced, requested) = self.with_producer(tx, produce, request);
        if let Err(e) = requested {
            return Err(DockerError::api("import image", what, e));
        }
        produced.map_err(|source| DockerError::Io {
            action: "import image",
            what: what.clone(),
            source,
        })?;
        let info = self.inspect_image(&what)?.ok_or(DockerError::NotFound {
            what: format!("image {what} (just imported)"),
            hint: None,
        })?;
        Ok(info.id)
    }

    // ---- containers ----

    /// Creates a container; returns its id.
    pub fn create_container(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let what = spec.name.clone().unwrap_or_else(|| spec.image.clone());
        let mut exposed = HashMap::new();
        let mut bindings = HashMap::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container_port, p.protocol);
            exposed.insert(key.clone(), HashMap::new());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
                }]),
            );
        }
        let host_config = HostConfig {
            init: Some(spec.init),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            tmpfs: (!spec.tmpfs.is_empty())
                .then(|| spec.tmpfs.clone().into_iter().collect::<HashMap<_, _>>()),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.cmd.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: Some(env_list(&spec.env)),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            hostname: spec.hostname.clone(),
            working_dir: spec.workdir.clone(),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: spec.name.clone(),
            ..Default::default()
        };
        let created = self
            .block_on(self.docker.create_container(Some(options), body))
            .map_err(|e| match DockerError::api("create container", &what, e) {
                DockerError::Api {
                    status: Some(404),
                    message,
                    ..
                } => DockerError::NotFound {
                    what: format!("image {} (for container {what})", spec.image),
                    hint: Some(format!("{message}; build or pull it first")),
                },
                other => other,
            })?;
        Ok(created.id)
    }

    /// Starts a created (or stopped) container.
    pub fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.block_on(
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )
        .map_err(|e| DockerError::api("start container", id, e))
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. Stopping a stopped one is fine.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            t: Some(grace.as_secs().min(i32::MAX as u64) as i32),
            signal: None,
        };
        match self.block_on(self.docker.stop_container(id, Some(options))) {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api("stop container", id, e)),
        }
    }

    /// Removes a container, running or not, with its anonymous volumes. `Ok(false)` when there
    /// was none.
    pub fn remove_container(&self, id: &str) -> Result<bool, DockerError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.block_on(self.docker.remove_container(id, Some(options))) {
            Ok(()) => Ok(true),
            Err(e) => {
                not_found_is_none::<()>(DockerError::api("remove container", id, e)).map(|_| false)
            }
        }
    }

    /// Containers (running or not, with `all`) carrying all these labels (`key` or `key=value`).
    pub fn containers_by_labels(
        &self,
        filters: &[&str],
        all: bool,
    ) -> Result<Vec<ContainerInfo>, DockerError> {
        let options = ListContainersOptions {
            all,
            filters: Some(label_filters(filters)),
            ..Default::default()
        };
        let list = self
            .block_on(self.docker.list_containers(Some(options)))
            .map_err(|e| DockerError::api("list containers", format!("labelled {filters:?}"), e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let state = c
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_default()
                    .to_lowercase();
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    image: c.image.unwrap_or_default(),
                    running: state == "running",
                    state,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    ports: c
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| {
                            Some(PublishedPort {
                                container_port: p.private_port,
                                protocol: p.typ.map(|t| t.to_string()).unwrap_or_default(),
                                host_ip: p.ip.unwrap_or_default(),
                                host_port: p.public_port?,
                            })
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// The container `id` (or name), or `None`.
    pub fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let c = match self.block_on(self.docker.inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )) {
            Ok(c) => c,
            Err(e) => return not_found_is_none(DockerError::api("inspect container", id, e)),
        };
        let state = c.state.as_ref();
        let config = c.config.as_ref();
        let mut ports = Vec::new();
        for (key, bindings) in c.network_settings.and_then(|n| n.ports).unwrap_or_default() {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(container_port) = port.parse() else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                if let Some(host_port) = b.host_port.and_then(|p| p.parse().ok()) {
                    ports.push(PublishedPort {
                        container_port,
                        protocol: proto.to_string(),
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port,
                    });
                }
            }
        }
        ports.sort_by_key(|p| (p.container_port, p.host_port));
        Ok(Some(ContainerInfo {
            id: c.id.clone().unwrap_or_default(),
            name: c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            running: state.and_then(|s| s.running).unwrap_or(false),
            state: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            labels: config
                .and_then(|c| c.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ports,
        }))
    }

    /// Commits a container's filesystem as the image `repo:tag`; returns the image id.
    ///
    /// The engine merges the container's own env and labels into `config` (a key in `config`
    /// wins), which is why [`ContainerSpec::env`] must never hold secrets.
    pub fn commit_container(
        &self,
        id: &str,
        repo: &str,
        tag: &str,
        config: &ImageConfig,
    ) -> Result<String, DockerError> {
        let options = CommitContainerOptions {
            container: Some(id.into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            pause: true,
            ..Default::default()
        };
        let body = bollard::models::ContainerConfig {
            cmd: config.cmd.clone(),
            entrypoint: config.entrypoint.clone(),
            env: (!config.env.is_empty()).then(|| env_list(&config.env)),
            working_dir: config.workdir.clone(),
            labels: (!config.labels.is_empty())
                .then(|| config.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        let res = self
            .block_on(self.docker.commit_container(options, body))
            .map_err(|e| {
                DockerError::api("commit container", format!("{id} as {repo}:{tag}"), e)
            })?;
        Ok(res.id)
    }

    // ---- archives ----

    /// Extracts a tar (written by `produce` on another thread, streamed) into the existing
    /// folder `dir` of a container. Entries keep the uid/gid written in the tar.
    pub fn put_archive<F>(&self, container: &str, dir: &str, produce: F) -> Result<(), DockerError>
    where
        F: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let what = format!("{dir} in container {container}");
        let (tx, rx) = stream::channel();
        let body = bollard::body_try_stream(stream::receiver_stream(rx));
        let options = UploadToContainerOptions {
            path: dir.to_string(),
            ..Default::default()
        };
        let request = self
            .docker
            .upload_to_container(container, Some(options), body);
        let (produced, requested) = self.with_producer(tx, produce, request);
        requested.map_err(|e| DockerError::api("upload to", &what, e))?;
        produced.map_err(|source| DockerError::Io {
            action: "upload to",
            what,
            source,
        })
    }

    /// Reads `path` from a container as a tar (its first entry is `path`'s file name) and hands
    /// it to `consume` on another thread, streamed.
    pub fn get_archive<T, F>(
        &self,
        container: &str,
        path: &str,
        consume: F,
    ) -> Result<T, DockerError>
    where
        T: Send,
        F: FnOnce(&mut dyn Read) -> std::io::Result<T> + Send,
    {
        let what = format!("{path} in container {container}");
        let (tx, rx) = stream::channel();
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let docker = &self.docker;
        let (consumed, requested) = std::thread::scope(|scope| {
            let consumer = scope.spawn(move || {
                let mut reader = ChannelReader::new(rx);
                let out = consume(&mut reader);
                // Drain what is left so the pump never blocks on a full channel.
                if out.is_ok() {
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                }
                out
            });
            let requested = self.block_on(async {
                let mut s = docker.download_from_container(container, Some(options));
                while let Some(item) = s.next().await {
                    let chunk = item?;
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                Ok::<_, bollard::errors::Error>(())
            });
            let consumed = consumer.join().expect("archive consumer panicked");
            (consumed, requested)
        });
        requested.map_err(|e| match DockerError::api("download", &what, e) {
            DockerError::Api {
                status: Some(404), ..
            } => DockerError::NotFound {
                what: what.clone(),
                hint: None,
            },
            other => other,
        })?;
        consumed.map_err(|source| DockerError::Io {
            action: "download",
            what,
            source,
        })
    }

    /// Runs `produce` on a thread writing into `tx` while `request` (which reads the other end)
    /// runs on the runtime. Returns both outcomes; the request's error is the one to report
    /// first (a producer then usually only sees a broken pipe).
    fn with_producer<F, R>(
        &self,
        tx: tokio::sync::mpsc::Sender<stream::Chunk>,
        produce: F,
        request: impl Future<Output = Result<R, bollard::errors::Error>>,
    ) -> (std::io::Result<()>, Result<R, bollard::errors::Error>)
    where
        F: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        std::thread::scope(|scope| {
            let producer = scope.spawn(move || {
                let mut w = ChannelWriter::new(tx);
                let res = produce(&mut w).and_then(|()| w.flush());
                if let Err(e) = &res {
                    w.fail(e);
                }
                res
            });
            let requested = self.block_on(request);
            let produced = producer.join().expect("tar producer panicked");
            (produced, requested)
        })
    }
}

/// `Ok(None)` for a 404, the error otherwise.
fn not_found_is_none<T>(e: DockerError) -> Result<Option<T>, DockerError> {
    if e.is_not_found() { Ok(None) } else { Err(e) }
}

fn label_filters(filters: &[&str]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        filters.iter().map(|f| f.to_string()).collect(),
    )])
}

fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Dockerfile instructions applied on import (`docker import --change`).
fn import_changes(config: &ImageConfig) -> Result<Vec<String>, String> {
    let quote = |s: &str| -> Result<String, String> {
        if s.chars().any(char::is_control) {
            return Err(format!(
                "{s:?}: control characters cannot be set on an import"
            ));
        }
        Ok(serde_json::to_string(s).expect("strings serialize"))
    };
    let mut changes = Vec::new();
    if let Some(cmd) = &config.cmd {
        changes.push(format!(
            "CMD {}",
            serde_json::to_string(cmd).expect("serialize")
        ));
    }
    if let Some(ep) = &config.entrypoint {
        changes.push(format!(
            "ENTRYPOINT {}",
            serde_json::to_string(ep).expect("serialize")
        ));
    }
    if let Some(dir) = &config.workdir {
        changes.push(format!("WORKDIR {dir}"));
    }
    for (k, v) in &config.env {
        changes.push(format!("ENV {k}={}", quote(v)?));
    }
    for (k, v) in &config.labels {
        changes.push(format!("LABEL {}={}", quote(k)?, quote(v)?));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_changes_quote_values() {
        let config = ImageConfig {
            cmd: Some(vec!["bash".into()]),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            labels: BTreeMap::from([("pipe.box".into(), "debian 12".into())]),
            ..Default::default()
        };
        assert_eq!(
            import_changes(&config).unwrap(),
            vec![
                r#"CMD ["bash"]"#,
                r#"ENV PATH="/usr/bin:/bin""#,
                r#"LABEL "pipe.box"="debian 12""#
            ]
        );
        let bad = ImageConfig {
            labels: BTreeMap::from([("a".into(), "x\ny".into())]),
            ..Default::default()
        };
        assert!(import_changes(&bad).is_err());
    }
}
