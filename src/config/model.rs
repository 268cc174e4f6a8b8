//! The validated Pipelinefile: what every other module reads.
//!
//! Values that may hold `{{ ... }}` are kept as [`Template`]s and rendered per environment
//! (see `config::template`); everything carries the [`Span`] it came from so that later checks
//! can still point at the source.

use std::path::PathBuf;

use indexmap::IndexMap;

/// A byte range in the Pipelinefile's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(r: std::ops::Range<usize>) -> Self {
        Self::new(r.start, r.end)
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A string that may contain `{{ ... }}` interpolations, rendered per environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub raw: String,
    pub span: Span,
}

/// The whole, validated Pipelinefile.
#[derive(Debug, Clone)]
pub struct Pipelinefile {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// The folder holding it: relative paths in the file resolve against it.
    pub root: PathBuf,
    /// The file's text, kept for diagnostics raised after parsing.
    pub source: String,
    pub pipeline: Pipeline,
    pub vars: IndexMap<String, VarDef>,
    pub boxes: Boxes,
    pub build: BuildSettings,
    pub base: Layer,
    pub app: Layer,
    pub services: Vec<Service>,
    pub verify: Verify,
    pub envs: IndexMap<String, Environment>,
    /// `[ledger]`: where the ledger is kept.
    pub ledger: LedgerSettings,
    /// `[notify]`: where bakes and promotions are announced.
    pub notify: Notify,
}

/// `[ledger]`: the file in `.pipe/` (the default), or S3 shared by a team.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LedgerSettings {
    /// `.pipe/ledger.jsonl`.
    #[default]
    Local,
    /// `backend = "s3"`: one object per entry under `prefix` in `bucket`.
    S3(S3LedgerSettings),
}

/// Where a shared ledger lives in S3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3LedgerSettings {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `None`: the SDK's region chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// The S3 endpoint to use instead of AWS's; `AWS_ENDPOINT_URL` does the same from the host.
    pub endpoint_url: Option<String>,
}

/// `[notify]`: where pipe says that a bake or a promotion happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// An SNS topic that gets a JSON message with the AMI ids after each bake and promotion.
    pub sns_topic_arn: Option<String>,
}

/// `[pipeline]`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: Spanned<String>,
    pub description: Option<String>,
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarSource {
    /// `name = "text"` or `name = { value = "text" }`.
    Value(String),
    /// `name = { env = "HOST_VAR", default = "..." }`: read from the host environment.
    Env {
        name: String,
        default: Option<String>,
    },
}

/// One `[vars]` entry.
#[derive(Debug, Clone)]
pub struct VarDef {
    pub name: String,
    pub source: VarSource,
    /// Never printed, logged, written to the ledger or baked into an image.
    pub sensitive: bool,
    pub description: Option<String>,
    pub span: Span,
}

/// The target kinds pipe knows (`docker`, `qemu`, `ec2` in files and the ledger).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Docker,
    Qemu,
    Ec2,
}

impl TargetKind {
    pub const ALL: [TargetKind; 3] = [TargetKind::Docker, TargetKind::Qemu, TargetKind::Ec2];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Docker => "docker",
            TargetKind::Qemu => "qemu",
            TargetKind::Ec2 => "ec2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind builds a base with a precache step in two layers, its provisioners
    /// first (a checkpoint, kept by the checkpoint digest) and the precache step on that, so
    /// that a change of the precache inputs alone runs only the precache step. Worth it where a
    /// layer costs little to keep: an image on top of another costs only its own files, a qcow2
    /// overlay only the blocks it changed. Where each layer is one more image to store and pay
    /// for (an AMI and its snapshot), the base is built in one machine.
    pub fn checkpoints_base(self) -> bool {
        match self {
            TargetKind::Docker | TargetKind::Qemu => true,
            TargetKind::Ec2 => false,
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `[box]`: the base OS per target kind.
#[derive(Debug, Clone, Default)]
pub struct Boxes {
    pub docker: Option<Spanned<BoxSource>>,
    pub qemu: Option<Spanned<BoxSource>>,
    pub ec2: Option<Spanned<BoxSource>>,
}

impl Boxes {
    pub fn get(&self, kind: TargetKind) -> Option<&Spanned<BoxSource>> {
        match kind {
            TargetKind::Docker => self.docker.as_ref(),
            TargetKind::Qemu => self.qemu.as_ref(),
            TargetKind::Ec2 => self.ec2.as_ref(),
        }
    }

    /// The target kinds that have an entry.
    pub fn kinds(&self) -> Vec<TargetKind> {
        TargetKind::ALL
            .into_iter()
            .filter(|k| self.get(*k).is_some())
            .collect()
    }
}

/// What a `[box]` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxSource {
    /// `{ box = "debian-12" }`: a recipe under `boxes/`, built by pipe.
    Recipe(String),
    /// `{ image = "debian:bookworm" }`: a registry image (docker).
    Image(String),
    /// `{ image = "https://.../debian-12-genericcloud-amd64.qcow2", checksum = "sha256:..." }`
    /// (qemu): a cloud image with cloud-init, downloaded from an http(s) URL or read from a path
    /// relative to the Pipelinefile, and booted on its own bootloader.
    CloudImage {
        /// The URL or path as written.
        image: String,
        /// The sha256 of the file as published, 64 lowercase hex digits. Required for URLs.
        checksum: Option<String>,
    },
    /// `{ ami = "ami-..." }`: an explicit AMI (ec2).
    Ami(String),
    /// `{ ami_filter = { name = "...", owners = [...] } }` (ec2): the newest match.
    AmiFilter { name: String, owners: Vec<String> },
}

/// How provisioning reaches the network and whom it trusts (`[build]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Files or folders of PEM certificates the build machine trusts while provisioning.
    /// Default: the host's `/usr/local/share/ca-certificates` when it exists.
    pub ca_certificates: Vec<PathBuf>,
    /// Pass the host's `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` into provisioning.
    pub proxy: ProxyMode,
    /// Keep the injected certificates and proxy settings in committed layers (default: removed).
    pub keep_build_trust: bool,
    /// Absolute host paths outside the project that the Pipelinefile may read (see
    /// [`super::confine`]).
    pub host_paths: Vec<PathBuf>,
    /// Mount the box's package cache (apt, npm, pip) into build machines of local targets
    /// while provisioning (see [`crate::boxes::package_cache`]); never part of a layer or digest.
    pub package_cache: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            ca_certificates: vec![PathBuf::from(DEFAULT_CA_DIR)],
            proxy: ProxyMode::Inherit,
            keep_build_trust: false,
            host_paths: Vec::new(),
            package_cache: true,
        }
    }
}

/// Where the host's extra CA certificates live on Debian.
pub const DEFAULT_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// `[build].proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Take `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (any case) from the host.
    Inherit,
    /// No proxy variables at all.
    None,
    /// Explicit values.
    Explicit {
        http: Option<String>,
        https: Option<String>,
        no_proxy: Option<String>,
    },
}

/// Which layer a thing belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerName {
    /// Primal: OS packages, runtimes, precached dependencies.
    Base,
    /// Carnivore: the application, its config and services.
    App,
}

impl LayerName {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Base => "base",
            LayerName::App => "app",
        }
    }
}

impl std::fmt::Display for LayerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[base]` or `[app]`.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// Only `[base]` may have one.
    pub precache: Option<Precache>,
    pub provision: Vec<Provisioner>,
}

/// `[base].precache`: dependency manifests installed into the base layer.
#[derive(Debug, Clone)]
pub struct Precache {
    /// Files relative to the Pipelinefile's folder; uploaded keeping their relative paths'
    /// file names into `to`.
    pub files: Vec<Spanned<String>>,
    /// Folder on the machine the files go to, and where `run` runs (default `/opt/precache`).
    pub to: String,
    /// The install command, run with `sh -c` in `to`.
    pub run: Template,
    pub env: IndexMap<String, Template>,
    pub span: Span,
}

/// Default folder for precached dependencies.
pub const DEFAULT_PRECACHE_DIR: &str = "/opt/precache";

/// One entry of a layer's `provision` list.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pub kind: ProvisionerKind,
    pub span: Span,
}

/// A `file` provisioner's `restart_only`: which of its changes need no provisioning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RestartOnly {
    /// Every change runs the provisioners after it again (the default, `false`).
    #[default]
    No,
    /// No change does (`true`).
    All,
    /// Changes to paths these patterns match do not (gitignore syntax, relative to the
    /// source): `restart_only = ["*.js", "public/"]`.
    Paths(Vec<String>),
}

/// The provisioner kinds.
#[derive(Debug, Clone)]
pub enum ProvisionerKind {
    /// `{ file = "app/", to = "/opt/app", mode = "0644", owner = "app" }`: upload a file or
    /// a directory tree (a trailing `/` uploads the folder's contents).
    File {
        source: Spanned<String>,
        to: Template,
        owner: Option<String>,
        /// What of its changes `pipe up --watch` only syncs and restarts the services for,
        /// without running provisioners again (not part of the layer digest).
        restart_only: RestartOnly,
    },
    /// `{ shell = "script.sh" }` or `{ inline = ["cmd", ...] }`.
    Shell(ShellProvisioner),
    /// `{ ansible = "playbooks/site.yml" }`: the playbook's folder is uploaded and run with
    /// `ansible-playbook -c local` on the machine.
    Ansible {
        playbook: Spanned<String>,
        extra_vars: IndexMap<String, Template>,
        env: IndexMap<String, Template>,
    },
}

/// A shell provisioner's settings.
#[derive(Debug, Clone)]
pub struct ShellProvisioner {
    pub source: ShellSource,
    pub env: IndexMap<String, Template>,
    /// Run as this user (default root).
    pub run_as: Option<String>,
    /// Working directory on the machine.
    pub workdir: Option<String>,
    /// How many times to re-run on failure (default 0).
    pub retries: u32,
    /// Exit codes that count as success (default `[0]`).
    pub valid_exit_codes: Vec<i32>,
    /// Seconds before the script is killed (default: none).
    pub timeout: Option<u64>,
}

/// A shell provisioner's script.
#[derive(Debug, Clone)]
pub enum ShellSource {
    /// A script file, relative to the Pipelinefile.
    Script(Spanned<String>),
    /// Commands run in order by one `sh -e`.
    Inline(Vec<Template>),
}

/// One `[[service]]`: a long-running process the app declares.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: Spanned<String>,
    pub command: Template,
    /// User the process runs as (default root).
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub env: IndexMap<String, Template>,
    /// The port it listens on inside the machine, if any.
    pub port: Option<Spanned<u16>>,
    /// Port on the host's 127.0.0.1 (default: same as `port`).
    pub host_port: Option<Spanned<u16>>,
    /// Publish `port` on the host (default true when `port` is set).
    pub publish: bool,
    pub span: Span,
}

impl Service {
    /// The host port this service is published on, if any.
    pub fn published_port(&self) -> Option<u16> {
        if !self.publish {
            return None;
        }
        self.host_port
            .as_ref()
            .map(|p| p.value)
            .or(self.port.as_ref().map(|p| p.value))
    }
}

/// `[verify]`: checks run on a fresh machine from a baked image.
#[derive(Debug, Clone, Default)]
pub struct Verify {
    /// Shell commands run inside the machine; each must exit 0.
    pub commands: Vec<Template>,
    pub http: Vec<HttpCheck>,
    /// Seconds to keep retrying until the checks pass (default 60).
    pub timeout: u64,
}

/// One HTTP check, made from inside the machine.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub url: Template,
    /// Expected status (default 200).
    pub status: u16,
    /// Text the body must contain.
    pub contains: Option<Template>,
    pub span: Span,
}

/// `[env.NAME]`.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: Spanned<String>,
    pub target: Spanned<TargetKind>,
    /// Overrides of `[vars]` values for this environment.
    pub vars: IndexMap<String, Spanned<String>>,
    /// The environment whose verified releases this one promotes.
    pub promote_from: Option<Spanned<String>>,
    /// How long a release must have been verified before it may be promoted into this
    /// environment (`min_soak = "2h"`).
    pub min_soak: Option<Spanned<std::time::Duration>>,
    /// Whether a promotion into this environment needs an approval by another user
    /// (`pipe approve RELEASE --env NAME`).
    pub require_approval: bool,
    pub settings: TargetSettings,
    pub span: Span,
}

/// The target-specific keys of an `[env.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSettings {
    Docker(DockerSettings),
    Qemu(QemuSettings),
    /// Boxed: many more keys than the others.
    Ec2(Box<Ec2Settings>),
}

/// Settings of a docker environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerSettings {
    /// Container name prefix (default `pipe-<pipeline>-<env>`).
    pub container_name: Option<String>,
}

/// Settings of a qemu environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSettings {
    pub cpus: u32,
    /// MiB.
    pub memory: u32,
    /// `auto` (KVM if it works, else TCG), `kvm` or `tcg`.
    pub accel: String,
    /// Disk size, e.g. `8G`.
    pub disk_size: Option<String>,
}

impl Default for QemuSettings {
    fn default() -> Self {
        Self {
            cpus: 2,
            memory: 1024,
            accel: "auto".into(),
            disk_size: None,
        }
    }
}

/// Settings of an ec2 environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ec2Settings {
    pub region: Option<String>,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub ssh_username: Option<String>,
    pub auto_scaling_group: Option<String>,
    pub launch_template: Option<String>,
    pub ssm_parameter: Option<String>,
    /// The EC2 API endpoint to use instead of AWS's (the local EC2, a VPC endpoint);
    /// `AWS_ENDPOINT_URL` does the same from the host.
    pub endpoint_url: Option<String>,
    /// Seconds a wait for an instance or an image may take (default: 10 minutes for
    /// instances, 30 for images).
    pub wait_timeout: Option<u64>,
    /// Seconds SSH to a running instance may take to answer (default 300).
    pub ssh_timeout: Option<u64>,
    /// Security groups the build instances join besides the temporary one pipe makes.
    pub security_group_ids: Vec<String>,
    /// An instance profile for the build instances: a name, or an ARN (`arn:...`).
    pub iam_instance_profile: Option<String>,
    /// Give the build instance a public IP (a network interface in `subnet_id`); `None`
    /// keeps the subnet's default.
    pub associate_public_ip: Option<bool>,
    /// The build instance's root volume, on the source AMI's root device.
    pub root_volume: Option<RootVolume>,
    /// Where SSH to the build instance may come from (the temporary security group's rule);
    /// empty: this host's /32.
    pub ssh_cidrs: Vec<String>,
    /// Which of the instance's addresses pipe connects to.
    pub ssh_interface: SshInterface,
    /// Connect to this address instead of the instance's.
    pub ssh_host: Option<String>,
    /// sshd's port on the instance (default 22); the security group opens this port.
    pub ssh_port: Option<u16>,
    /// A jump host to reach the instance through.
    pub bastion: Option<Ec2Bastion>,
    /// Regions the app AMI is copied to after the bake (the release's artifact in each).
    pub ami_regions: Vec<String>,
    /// KMS key per copy region: that copy is encrypted with it.
    pub region_kms_key_ids: std::collections::BTreeMap<String, String>,
    /// How a promotion moves the environment to a release.
    pub strategy: Strategy,
    /// Blue/green: how many groups that served before stay (scaled to zero) for `pipe
    /// rollback` (default 1).
    pub keep_previous: Option<u32>,
    /// How a promotion's instance refresh replaces the group's instances.
    pub refresh: RefreshSettings,
    /// The KMS key a release's AMI is encrypted with when a promotion copies it into this
    /// environment's region.
    pub kms_key_id: Option<String>,
    /// The AWS account the environment runs in, when it is not the one that bakes: a
    /// promotion grants it launch permission on the release's AMI and snapshots.
    pub account_id: Option<String>,
    /// The role in `account_id` pipe assumes for the promotion's Auto Scaling, launch
    /// template and SSM calls there.
    pub role_arn: Option<String>,
}

/// `strategy` of an ec2 environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// A launch template version and an instance refresh of the one group (default).
    #[default]
    Refresh,
    /// A new group per promotion beside the serving one; the old one is scaled to zero and
    /// kept for rollback (`"blue-green"`).
    BlueGreen,
}

/// `[env.NAME].refresh`: the instance refresh's preferences (AWS's defaults when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Percent of desired capacity that stays healthy (default 90).
    pub min_healthy_percentage: Option<i32>,
    /// Percent it may grow to while replacing (over 100: new instances come before old ones
    /// go).
    pub max_healthy_percentage: Option<i32>,
    /// Seconds a new instance warms up before it counts as healthy.
    pub instance_warmup: Option<i32>,
    /// Percentages at which the refresh pauses for a check.
    pub checkpoints: Vec<i32>,
    /// CloudWatch alarms that fail (and roll back) the refresh.
    pub alarms: Vec<String>,
}

/// `root_volume = { size_gb, type, encrypted, kms_key_id }` of an ec2 environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootVolume {
    /// GiB.
    pub size_gb: Option<u32>,
    /// `gp3`, `gp2`, `io1`, `io2`, `st1`, `sc1`, `standard`.
    pub volume_type: Option<String>,
    /// `Some(true)` when written or implied by `kms_key_id`.
    pub encrypted: Option<bool>,
    /// A key id, alias (`alias/...`) or ARN.
    pub kms_key_id: Option<String>,
}

/// Which address of an instance SSH goes to (`ssh_interface`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SshInterface {
    /// The public IP, else the private one (default).
    #[default]
    PublicIp,
    /// The private IP (baking from inside the VPC, or through a bastion).
    PrivateIp,
}

/// `bastion = { host, port, user, key }` of an ec2 environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Bastion {
    pub host: String,
    /// Default 22.
    pub port: u16,
    /// Default: the environment's `ssh_username`.
    pub user: Option<String>,
    /// The private key for the bastion, as written (`~/` is the home folder, a relative path
    /// is relative to the Pipelinefile); only used to log in, never uploaded.
    pub key: String,
}
