//! Layer digests: sha256 over everything that determines what a layer contains, so that an
//! existing image with the same digest is reused instead of rebuilt.
//!
//! What enters, in this order (the byte format is in `layers::encode`):
//!
//! - **base**: the format tag [`FORMAT`], the layer name, the target kind, the box identity (a
//!   recipe's file content hash, a cloud image's sha256 (its `checksum`, or a local file's own),
//!   or the image/AMI/filter text), the build trust that stays in the
//!   image (only with `keep_build_trust = true`: the CA certificates' names and contents and the
//!   effective proxy variables, as `provisioners::trust` injects them), the precache step, then
//!   each base provisioner in order.
//! - **app**: the format tag, the layer name, the base digest, the app provisioners in order, and
//!   the services (sorted by name; on VMs they are baked as systemd units).
//! - **checkpoint** (only when the base has a precache step): the base's input without its
//!   precache step, i.e. the digest the base would have with no `[base.precache]`.
//!
//! A template enters as its raw text plus, for each distinct reference it makes, the value
//! resolved for this environment; a sensitive variable only as an HMAC under the digest key.
//! Variables a layer does not reference do not enter its digest. TOML text never enters (key
//! order and comments do not matter); files enter as path relative to the walked root, mode and
//! content hash, from the same walk uploads use (`layers::tree`), so mtimes and `.pipeignore`d
//! files do not count.
//!
//! Left out on purpose because they do not change what is built: `retries`, `timeout` and
//! `valid_exit_codes` (they decide whether a run succeeds, not what a successful run leaves),
//! a shell script's file name (only its content is run), a service's `host_port` and `publish`
//! (host side only), `[verify]` and the environment's target settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::encode::Encoder;
use super::key::DigestKey;
use super::tree::{self, EntryKind};
use crate::config::template::{self, Reference};
use crate::config::{
    BuildSettings, Layer, LayerName, Pipelinefile, Precache, ProvisionerKind, Service, ShellSource,
    TargetKind, Template,
};

/// The format tag every digest input starts with; bump it when the encoding changes.
pub const FORMAT: &str = "pipe-layer-v1";

pub use super::error::DigestError;
pub use super::value::Digest;

/// The two layers' digests for one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    pub base: Digest,
    pub app: Digest,
    /// When the base has a precache step: the digest of the base without it (its provisioners
    /// alone), hashed exactly as a base with no precache step would be. Targets that keep this
    /// checkpoint build the base on it when only the precache inputs changed (a dependency
    /// bump), instead of running every base provisioner again.
    pub checkpoint: Option<Digest>,
}

/// The exact bytes each digest was computed from (for tests and debugging; file contents
/// appear only as their sha256, sensitive values only as HMACs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcripts {
    pub base: Vec<u8>,
    pub app: Vec<u8>,
}

/// A variable's value resolved for the environment. `Debug` masks sensitive values.
#[derive(Clone, PartialEq, Eq)]
pub struct VarValue {
    pub value: String,
    /// Enters digests only as an HMAC under the digest key.
    pub sensitive: bool,
}

impl std::fmt::Debug for VarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.sensitive {
            "<sensitive>"
        } else {
            &self.value
        };
        f.debug_struct("VarValue")
            .field("value", &value)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

/// Where `{{ env.NAME }}` and the inherited proxy variables are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEnv {
    /// This process's environment.
    Process,
    /// Fixed values (tests; a replayed run).
    Fixed(BTreeMap<String, String>),
}

impl HostEnv {
    /// The variable's value; unset and non-UTF-8 read as absent.
    pub fn get(&self, name: &str) -> Option<String> {
        match self {
            HostEnv::Process => std::env::var(name).ok(),
            HostEnv::Fixed(map) => map.get(name).cloned(),
        }
    }
}

/// Everything besides the Pipelinefile that a digest depends on.
#[derive(Debug, Clone)]
pub struct DigestInputs {
    /// The kind the layers are built on: normally the environment's target, but `up --local`
    /// on an ec2 environment builds on docker.
    pub target: TargetKind,
    /// Every variable resolved for the environment (missing ones are only an error when a
    /// layer references them).
    pub vars: BTreeMap<String, VarValue>,
    pub host_env: HostEnv,
    /// The run's start, UTC, `YYYYMMDDHHMMSS`.
    pub timestamp: String,
    /// Short commit of the Pipelinefile's repository, or `unknown`.
    pub git_commit: String,
    /// Needed only when a layer references a sensitive variable.
    pub key: Option<DigestKey>,
    /// What the box of `target` resolved to.
    pub box_identity: BoxIdentity,
    /// The build trust layers keep, read when `keep_build_trust = true`.
    pub kept_trust: Option<KeptTrust>,
}

impl DigestInputs {
    /// Inputs for `target` (whose box resolved to `box_identity`) with no variables, the
    /// process environment, now as the timestamp, an `unknown` commit, no key and no kept
    /// build trust.
    pub fn new(target: TargetKind, box_identity: BoxIdentity) -> Self {
        Self {
            target,
            vars: BTreeMap::new(),
            host_env: HostEnv::Process,
            timestamp: chrono::Utc::now().format("%Y%m%d%H%M%S").to_string(),
            git_commit: "unknown".into(),
            key: None,
            box_identity,
            kept_trust: None,
        }
    }
}

/// What a box is, as the base digest hashes it. Resolving it is the caller's (the plan's):
/// the recipe file's sum, the cloud image's sum, and for EC2 the AMI a filter resolves to;
/// this module reads no box and asks no cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxIdentity {
    /// `boxes/NAME.toml`'s content.
    Recipe {
        sha256: [u8; 32],
    },
    /// A registry image, by reference.
    Image(String),
    /// A cloud image's content, not where it comes from: a mirror's URL for the same file
    /// builds the same layers, a new file (new checksum) rebuilds them.
    CloudImage {
        sha256: [u8; 32],
    },
    Ami(String),
    /// An AMI filter, as written (not resolved).
    AmiFilter {
        name: String,
        owners: Vec<String>,
    },
}

/// The build trust that stays in committed layers (`keep_build_trust = true`), exactly as
/// provisioning injects it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptTrust {
    /// (file name, PEM bytes), sorted by name.
    pub certificates: Vec<(String, Vec<u8>)>,
    /// The effective proxy variables.
    pub proxy_env: BTreeMap<String, String>,
}

/// The base and app digests of environment `env`.
pub fn compute(
    pf: &Pipelinefile,
    env: &str,
    inputs: &DigestInputs,
) -> Result<LayerDigests, DigestError> {
    Ok(run(pf, env, inputs, false)?.0)
}

/// [`compute`], also returning the exact bytes hashed.
pub fn compute_with_transcripts(
    pf: &Pipelinefile,
    env: &str,
    inputs: &DigestInputs,
) -> Result<(LayerDigests, Transcripts), DigestError> {
    let (digests, t) = run(pf, env, inputs, true)?;
    Ok((digests, t.expect("transcripts were kept")))
}

fn run(
    pf: &Pipelinefile,
    env: &str,
    inputs: &DigestInputs,
    keep: bool,
) -> Result<(LayerDigests, Option<Transcripts>), DigestError> {
    if !pf.envs.contains_key(env) {
        return Err(DigestError::UnknownEnvironment {
            name: env.to_string(),
            known: pf.envs.keys().cloned().collect(),
        });
    }
    let mut h = Hashing {
        pf,
        env,
        inputs,
        layer: LayerName::Base,
    };

    let mut enc = Encoder::new(keep);
    h.base(&mut enc, &pf.base)?;
    let (base, base_t) = enc.finish();
    let checkpoint = match pf.base.precache {
        Some(_) => {
            let provisioners_only = Layer {
                precache: None,
                ..pf.base.clone()
            };
            let mut enc = Encoder::new(false);
            h.base(&mut enc, &provisioners_only)?;
            Some(enc.finish().0)
        }
        None => None,
    };

    h.layer = LayerName::App;
    let mut enc = Encoder::new(keep);
    h.app(&mut enc, &base)?;
    let (app, app_t) = enc.finish();

    let transcripts = base_t
        .zip(app_t)
        .map(|(base, app)| Transcripts { base, app });
    Ok((
        LayerDigests {
            base,
            app,
            checkpoint,
        },
        transcripts,
    ))
}

type R = Result<(), DigestError>;

struct Hashing<'a> {
    pf: &'a Pipelinefile,
    env: &'a str,
    inputs: &'a DigestInputs,
    /// The layer being hashed, for error messages.
    layer: LayerName,
}

impl Hashing<'_> {
    /// The base layer `base` (the Pipelinefile's, or it without its precache step).
    fn base(&self, enc: &mut Encoder, base: &Layer) -> R {
        enc.str("format", FORMAT);
        enc.str("layer", LayerName::Base.as_str());
        let kind = self.inputs.target;
        enc.str("target", kind.as_str());
        self.box_identity(enc, kind)?;
        self.build_trust(enc, &self.pf.build)?;
        self.layer_steps(enc, base)
    }

    fn app(&self, enc: &mut Encoder, base: &super::digest::Digest) -> R {
        enc.str("format", FORMAT);
        enc.str("layer", LayerName::App.as_str());
        enc.bytes("base", base.as_bytes());
        self.layer_steps(enc, &self.pf.app)?;
        let mut services: Vec<&Service> = self.pf.services.iter().collect();
        services.sort_by(|a, b| a.name.value.cmp(&b.name.value));
        enc.list("services", services.len());
        for s in services {
            self.service(enc, s)?;
        }
        Ok(())
    }

    fn box_identity(&self, enc: &mut Encoder, kind: TargetKind) -> R {
        self.pf.boxes.get(kind).ok_or(DigestError::NoBox { kind })?;
        match &self.inputs.box_identity {
            BoxIdentity::Recipe { sha256 } => {
                enc.str("box", "recipe");
                enc.bytes("sha256", sha256);
            }
            BoxIdentity::Image(image) => {
                enc.str("box", "image");
                enc.str("image", image);
            }
            BoxIdentity::CloudImage { sha256 } => {
                enc.str("box", "cloud_image");
                enc.bytes("sha256", sha256);
            }
            BoxIdentity::Ami(ami) => {
                enc.str("box", "ami");
                enc.str("ami", ami);
            }
            BoxIdentity::AmiFilter { name, owners } => {
                enc.str("box", "ami_filter");
                enc.str("name", name);
                let owners: BTreeSet<&String> = owners.iter().collect();
                enc.list("owners", owners.len());
                for o in owners {
                    enc.str("owner", o);
                }
            }
        }
        Ok(())
    }

    /// Certificates and proxy settings are removed before a layer is committed unless
    /// `keep_build_trust` is set, so only then do they change its content. What is hashed is
    /// what provisioning injects: the same `BuildTrust` is read here.
    fn build_trust(&self, enc: &mut Encoder, build: &BuildSettings) -> R {
        enc.bool("keep_build_trust", build.keep_build_trust);
        if !build.keep_build_trust {
            return Ok(());
        }
        let trust = self
            .inputs
            .kept_trust
            .as_ref()
            .ok_or(DigestError::TrustNotRead)?;
        enc.list("ca_certificates", trust.certificates.len());
        for (name, pem) in &trust.certificates {
            enc.str("name", name);
            enc.bytes("sha256", &Sha256::digest(pem));
        }
        // The effective values, not the mode: `inherit` and the same explicit values bake the
        // same image.
        enc.list("proxy", trust.proxy_env.len());
        for (name, value) in &trust.proxy_env {
            enc.str("name", name);
            enc.str("value", value);
        }
        Ok(())
    }

    fn layer_steps(&self, enc: &mut Encoder, layer: &Layer) -> R {
        match &layer.precache {
            Some(p) => self.precache(enc, p)?,
            None => enc.opt_str("precache", None),
        }
        enc.list("provision", layer.provision.len());
        for p in &layer.provision {
            self.provisioner(enc, &p.kind)?;
        }
        Ok(())
    }

    fn precache(&self, enc: &mut Encoder, p: &Precache) -> R {
        enc.str("precache", "precache");
        enc.list("files", p.files.len());
        for f in &p.files {
            enc.str("path", &normalize(&f.value).0);
            self.tree(enc, &self.pf.root.join(&f.value))?;
        }
        enc.str("to", &p.to);
        self.template(enc, "run", &p.run)?;
        self.templates(enc, "env", &p.env)
    }

    fn provisioner(&self, enc: &mut Encoder, kind: &ProvisionerKind) -> R {
        match kind {
            ProvisionerKind::File {
                source, to, owner, ..
            } => {
                enc.str("kind", "file");
                let (path, contents) = normalize(&source.value);
                enc.str("source", &path);
                // `app/` uploads the folder's contents, `app` the folder itself.
                enc.bool("contents", contents);
                self.tree(enc, &self.pf.root.join(&source.value))?;
                self.template(enc, "to", to)?;
                enc.opt_str("owner", owner.as_deref());
            }
            ProvisionerKind::Shell(shell) => {
                // retries, valid_exit_codes and timeout decide whether a run succeeds, not what
                // a successful run leaves behind: they stay out.
                match &shell.source {
                    ShellSource::Script(script) => {
                        // Uploaded under a name and mode of pipe's choosing and removed after
                        // provisioning: only the content counts.
                        enc.str("kind", "shell");
                        let path = self.pf.root.join(&script.value);
                        enc.bytes("sha256", &file_sha256(&path)?);
                    }
                    ShellSource::Inline(commands) => {
                        enc.str("kind", "inline");
                        enc.list("commands", commands.len());
                        for c in commands {
                            self.template(enc, "command", c)?;
                        }
                    }
                }
                self.templates(enc, "env", &shell.env)?;
                enc.opt_str("run_as", shell.run_as.as_deref());
                enc.opt_str("workdir", shell.workdir.as_deref());
            }
            ProvisionerKind::Ansible {
                playbook,
                extra_vars,
                env,
            } => {
                enc.str("kind", "ansible");
                let path = self.pf.root.join(&playbook.value);
                let name = file_name(&path);
                let folder = path.parent().unwrap_or(&self.pf.root).to_path_buf();
                enc.str("playbook", &name);
                // The playbook's whole folder is uploaded (roles, templates, vars files).
                self.tree(enc, &folder)?;
                self.templates(enc, "extra_vars", extra_vars)?;
                self.templates(enc, "env", env)?;
            }
        }
        Ok(())
    }

    fn service(&self, enc: &mut Encoder, s: &Service) -> R {
        enc.str("name", &s.name.value);
        self.template(enc, "command", &s.command)?;
        enc.opt_str("user", s.user.as_deref());
        enc.opt_str("workdir", s.workdir.as_deref());
        self.templates(enc, "env", &s.env)?;
        enc.opt_u64("port", s.port.as_ref().map(|p| u64::from(p.value)));
        Ok(())
    }

    /// Every entry of the tree at `path` as uploads see it: relative path, type, mode, and a
    /// file's content hash (or a symlink's target).
    fn tree(&self, enc: &mut Encoder, path: &Path) -> R {
        let entries = tree::walk(path).map_err(|e| read_error(path, e))?;
        enc.list("tree", entries.len());
        for e in entries {
            enc.str("path", &e.rel);
            enc.u64("mode", u64::from(e.mode));
            match &e.kind {
                EntryKind::File => {
                    enc.str("type", "file");
                    enc.bytes("sha256", &file_sha256(&e.abs)?);
                }
                EntryKind::Dir => enc.str("type", "dir"),
                EntryKind::Symlink(target) => {
                    enc.str("type", "symlink");
                    enc.str("target", &target.to_string_lossy());
                }
            }
        }
        Ok(())
    }

    /// A table of templates, sorted by key: their order in the file does not matter.
    fn templates(
        &self,
        enc: &mut Encoder,
        label: &str,
        table: &indexmap::IndexMap<String, Template>,
    ) -> R {
        let sorted: BTreeMap<&String, &Template> = table.iter().collect();
        enc.list(label, sorted.len());
        for (k, t) in sorted {
            enc.str("key", k);
            self.template(enc, "value", t)?;
        }
        Ok(())
    }

    /// The raw text, then each distinct reference (sorted) with its value.
    fn template(&self, enc: &mut Encoder, label: &str, t: &Template) -> R {
        enc.str(label, &t.raw);
        let refs: BTreeSet<Reference> = template::references(&t.raw).into_iter().collect();
        enc.list("references", refs.len());
        for r in refs {
            match r {
                Reference::Var(name) => {
                    enc.str("ref", &format!("vars.{name}"));
                    let v =
                        self.inputs
                            .vars
                            .get(&name)
                            .ok_or_else(|| DigestError::UnresolvedVar {
                                name: name.clone(),
                                layer: self.layer,
                            })?;
                    if v.sensitive {
                        let key =
                            self.inputs
                                .key
                                .as_ref()
                                .ok_or_else(|| DigestError::MissingKey {
                                    name: name.clone(),
                                    layer: self.layer,
                                })?;
                        enc.bytes("hmac-sha256", &key.mac(v.value.as_bytes()));
                    } else {
                        enc.str("value", &v.value);
                    }
                }
                Reference::HostEnv(name) => {
                    enc.str("ref", &format!("env.{name}"));
                    // Renders as empty when unset, so it hashes the same as empty.
                    let v = self.inputs.host_env.get(&name).unwrap_or_default();
                    enc.str("value", &v);
                }
                Reference::PipelineName => {
                    enc.str("ref", "pipeline.name");
                    enc.str("value", &self.pf.pipeline.name.value);
                }
                Reference::Environment => {
                    enc.str("ref", "environment");
                    enc.str("value", self.env);
                }
                Reference::Timestamp => {
                    enc.str("ref", "timestamp");
                    enc.str("value", &self.inputs.timestamp);
                }
                Reference::GitCommit => {
                    enc.str("ref", "git.commit");
                    enc.str("value", &self.inputs.git_commit);
                }
            }
        }
        Ok(())
    }
}

/// A Pipelinefile path, `/`-separated without `.` or empty parts, and whether it ended in `/`.
fn normalize(raw: &str) -> (String, bool) {
    let contents = raw.ends_with('/') && raw.len() > 1;
    let absolute = raw.starts_with('/');
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    let path = if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    };
    (path, contents)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file the digest needs could not be read.
pub fn read_error(path: &Path, source: std::io::Error) -> DigestError {
    DigestError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of a file's content, streamed.
pub fn file_sha256(path: &Path) -> Result<[u8; 32], DigestError> {
    let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| read_error(path, e))?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_print_and_parse() {
        let d = Digest([0xab; 32]);
        let s = d.to_string();
        assert_eq!(s.len(), "sha256:".len() + 64);
        assert!(s.starts_with("sha256:abab"));
        assert_eq!(d.short(), "abababababab");
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("abab".parse::<Digest>().is_err());
        assert!("sha256:zz".parse::<Digest>().is_err());
    }

    #[test]
    fn debug_masks_sensitive_values() {
        let v = VarValue {
            value: "hunter22".into(),
            sensitive: true,
        };
        assert!(!format!("{v:?}").contains("hunter22"));
        let v = VarValue {
            sensitive: false,
            ..v
        };
        assert!(format!("{v:?}").contains("hunter22"));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("./app/"), ("app".to_string(), true));
        assert_eq!(normalize("app//x"), ("app/x".to_string(), false));
        assert_eq!(normalize("/etc/x"), ("/etc/x".to_string(), false));
    }
}
