//! What a run works from: the environment, its effective target, resolved variables, template
//! values, layer digests and build trust, computed once per command.

use std::collections::BTreeMap;

use crate::config::template::{self, Context};
use crate::config::vars::{self, ResolvedVars};
use crate::config::{
    BoxSource, Pipelinefile, ProvisionerKind, ShellSource, TargetKind, TargetSettings, Template,
};
use crate::engine::aws::{AwsClient, AwsSettings};
use crate::error::{Error, Result};
use crate::layers::digest::{
    self, BoxIdentity, DigestError, DigestInputs, HostEnv, KeptTrust, LayerDigests, VarValue,
};
use crate::layers::key::DigestKey;
use crate::provisioners::trust::BuildTrust;
use crate::ui::Printer;

/// A run's inputs, ready to build.
pub struct Plan<'a> {
    pub pf: &'a Pipelinefile,
    /// The environment's name.
    pub env: String,
    /// Where this run builds and runs (the environment's target, or a local override).
    pub target: TargetKind,
    pub vars: ResolvedVars,
    pub template: Context,
    pub digests: LayerDigests,
    pub trust: BuildTrust,
    pub git_commit: String,
    /// The AMI the ec2 box resolved to (an `ami_filter`'s newest match), when the target is
    /// ec2; the base digest covers it.
    pub source_ami: Option<String>,
}

/// Where `--local` runs an environment whose target is remote.
pub const LOCAL: TargetKind = TargetKind::Docker;

/// How the environment and target were asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--env`.
    pub env: Option<String>,
    /// `--local`: run an environment whose target is remote on docker instead.
    pub local: bool,
    /// `--target KIND`.
    pub target: Option<String>,
    /// `--var`.
    pub cli_vars: Vec<(String, String)>,
}

/// Picks the environment: `--env`, else `dev`, else the first with a local target.
pub fn pick_env(pf: &Pipelinefile, asked: Option<&str>) -> Result<String> {
    if let Some(name) = asked {
        if pf.envs.contains_key(name) {
            return Ok(name.to_string());
        }
        let known: Vec<&str> = pf.envs.keys().map(String::as_str).collect();
        return Err(Error::usage(
            format!("unknown environment `{name}`"),
            Some(if known.is_empty() {
                "the Pipelinefile has no [env.NAME] tables".to_string()
            } else {
                format!("environments are: {}", known.join(", "))
            }),
        ));
    }
    if pf.envs.contains_key("dev") {
        return Ok("dev".into());
    }
    pf.envs
        .iter()
        .find(|(_, e)| e.target.value != TargetKind::Ec2)
        .or_else(|| pf.envs.first())
        .map(|(n, _)| n.clone())
        .ok_or_else(|| {
            Error::usage(
                "the Pipelinefile has no environments",
                Some("add one, e.g. [env.dev] with target = \"docker\"".to_string()),
            )
        })
}

/// The target a command runs on for `env`.
pub fn effective_target(pf: &Pipelinefile, env: &str, sel: &Selection) -> Result<TargetKind> {
    let declared = pf.envs[env].target.value;
    if let Some(t) = &sel.target {
        let kind = TargetKind::parse(t).ok_or_else(|| {
            Error::usage(
                format!("unknown target `{t}`"),
                Some("targets are docker, qemu, ec2".to_string()),
            )
        })?;
        if pf.boxes.get(kind).is_none() {
            return Err(Error::usage(
                format!("--target {kind} needs a [box] entry for {kind}"),
                Some(format!(
                    "add `{kind} = {{ box = \"debian-12\" }}` under [box]"
                )),
            ));
        }
        return Ok(kind);
    }
    if sel.local && declared == TargetKind::Ec2 {
        if pf.boxes.get(LOCAL).is_none() {
            return Err(Error::usage(
                format!("--local runs env `{env}` on docker, but [box] has no docker entry"),
                Some("add `docker = { box = \"debian-12\" }` under [box]".to_string()),
            ));
        }
        return Ok(LOCAL);
    }
    Ok(declared)
}

/// Resolves everything for a run.
pub fn make<'a>(pf: &'a Pipelinefile, sel: &Selection, printer: &Printer) -> Result<Plan<'a>> {
    let env = pick_env(pf, sel.env.as_deref())?;
    let target = effective_target(pf, &env, sel)?;
    let host = |k: &str| std::env::var(k).ok();
    let vars = vars::resolve(pf, Some(&env), &sel.cli_vars, &host)?;
    for s in vars.secrets() {
        printer.redactor().add(s);
    }
    let git_commit = vars::git_commit(&pf.root);
    let timestamp = vars::timestamp();
    let host_env: BTreeMap<String, String> = std::env::vars().collect();
    let template = vars.template_context(pf, &env, host_env, timestamp.clone(), git_commit.clone());
    // Vars from unset host variables are an error only when a layer or service uses them.
    vars.require(used_vars(pf).iter().map(String::as_str))?;
    let uses_secret = vars.vars.values().any(|v| v.sensitive);
    let (box_identity, kept_trust) = resolve_digest_host(pf, target, &HostEnv::Process)?;
    let (box_identity, source_ami) = if target == TargetKind::Ec2 {
        let ami = resolve_ami(pf, &env, &box_identity, printer)?;
        (BoxIdentity::Ami(ami.clone()), Some(ami))
    } else {
        (box_identity, None)
    };
    let inputs = DigestInputs {
        box_identity,
        kept_trust,
        target,
        vars: vars
            .vars
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    VarValue {
                        value: v.value.clone(),
                        sensitive: v.sensitive,
                    },
                )
            })
            .collect(),
        host_env: HostEnv::Process,
        timestamp,
        git_commit: git_commit.clone(),
        key: if uses_secret {
            Some(DigestKey::load()?)
        } else {
            None
        },
    };
    let digests = digest::compute(pf, &env, &inputs)?;
    let trust = BuildTrust::from_settings(&pf.build, &pf.root, &host).map_err(|e| {
        Error::runtime(
            format!("reading the [build] CA certificates: {e}"),
            Some("check [build].ca_certificates".to_string()),
        )
    })?;
    Ok(Plan {
        pf,
        env,
        target,
        vars,
        template,
        digests,
        trust,
        git_commit,
        source_ami,
    })
}

/// The AWS settings of environment `env`: its region and endpoint (the SDK's chain for what
/// it leaves out).
pub fn aws_settings(pf: &Pipelinefile, env: &str) -> AwsSettings {
    match pf.envs.get(env).map(|e| &e.settings) {
        Some(TargetSettings::Ec2(s)) => AwsSettings {
            region: s.region.clone(),
            endpoint_url: s.endpoint_url.clone(),
            ..AwsSettings::default()
        },
        _ => AwsSettings::default(),
    }
}

/// The source AMI of an ec2 bake: the `ami` as written, or the newest AMI (by creation date)
/// an `ami_filter` matches, looked up in the environment's region. Only an ec2 run asks AWS.
fn resolve_ami(
    pf: &Pipelinefile,
    env: &str,
    identity: &BoxIdentity,
    printer: &Printer,
) -> Result<String> {
    let (name, owners) = match identity {
        BoxIdentity::AmiFilter { name, owners } => (name, owners),
        BoxIdentity::Ami(id) => return Ok(id.clone()),
        _ => unreachable!("an ec2 box is an ami or an ami_filter"),
    };
    let client = AwsClient::connect(&aws_settings(pf, env))?;
    let found = client.newest_image(name, owners)?.ok_or_else(|| {
        Error::runtime(
            format!(
                "no AMI named `{name}` owned by {} in {}",
                owners.join(", "),
                client.region()
            ),
            Some("check [box] ec2's ami_filter (name wildcards: `*`, `?`) and the environment's region".into()),
        )
    })?;
    printer.info(format!(
        "ec2 box: {} ({}, created {}) is the newest match of `{name}`",
        found.id, found.name, found.creation_date
    ));
    Ok(found.id)
}

/// What the layer digests of `kind` need from outside the Pipelinefile's own files: what the
/// box resolves to, and (with `keep_build_trust`) the build trust layers keep, read as
/// provisioning injects it.
pub fn resolve_digest_host(
    pf: &Pipelinefile,
    kind: TargetKind,
    host_env: &HostEnv,
) -> Result<(BoxIdentity, Option<KeptTrust>), DigestError> {
    let source = pf.boxes.get(kind).ok_or(DigestError::NoBox { kind })?;
    let identity = match &source.value {
        BoxSource::Recipe(name) => BoxIdentity::Recipe {
            sha256: digest::file_sha256(&pf.root.join("boxes").join(format!("{name}.toml")))?,
        },
        BoxSource::Image(image) => BoxIdentity::Image(image.clone()),
        BoxSource::CloudImage { image, checksum } => {
            let path = pf.root.join(image);
            let sha256 = crate::boxes::cloud::image_sha256(&pf.root, image, checksum.as_deref())
                .map_err(|e| digest::read_error(&path, e))?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&sha256, &mut bytes)
                .map_err(|e| digest::read_error(&path, std::io::Error::other(e)))?;
            BoxIdentity::CloudImage { sha256: bytes }
        }
        BoxSource::Ami(ami) => BoxIdentity::Ami(ami.clone()),
        BoxSource::AmiFilter { name, owners } => BoxIdentity::AmiFilter {
            name: name.clone(),
            owners: owners.clone(),
        },
    };
    let build = &pf.build;
    if !build.keep_build_trust {
        return Ok((identity, None));
    }
    let host = |name: &str| host_env.get(name);
    let trust = BuildTrust::from_settings(build, &pf.root, &host).map_err(|e| {
        // Name the configured path that cannot be read.
        let path = build
            .ca_certificates
            .iter()
            .map(|p| pf.root.join(p))
            .find(|p| {
                let one = crate::config::BuildSettings {
                    ca_certificates: vec![p.clone()],
                    ..build.clone()
                };
                BuildTrust::from_settings(&one, &pf.root, &host).is_err()
            })
            .unwrap_or_else(|| pf.root.clone());
        digest::read_error(&path, e)
    })?;
    Ok((
        identity,
        Some(KeptTrust {
            certificates: trust.certificates,
            proxy_env: trust.proxy_env,
        }),
    ))
}

/// [`DigestInputs::new`] with the box and kept build trust resolved for `kind`.
pub fn digest_inputs(
    pf: &Pipelinefile,
    kind: TargetKind,
    host_env: HostEnv,
) -> Result<DigestInputs, DigestError> {
    let (box_identity, kept_trust) = resolve_digest_host(pf, kind, &host_env)?;
    let mut inputs = DigestInputs::new(kind, box_identity);
    inputs.kept_trust = kept_trust;
    inputs.host_env = host_env;
    Ok(inputs)
}

/// Every var referenced by layers, services and verify.
fn used_vars(pf: &Pipelinefile) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |raw: &str| {
        for r in template::references(raw) {
            if let template::Reference::Var(n) = r {
                out.push(n);
            }
        }
    };
    visit_templates(pf, &mut |t| add(&t.raw));
    out.sort();
    out.dedup();
    out
}

/// Calls `f` on every template of the layers, services and verify checks.
pub fn visit_templates(pf: &Pipelinefile, f: &mut dyn FnMut(&Template)) {
    for layer in [&pf.base, &pf.app] {
        if let Some(pre) = &layer.precache {
            f(&pre.run);
            pre.env.values().for_each(&mut *f);
        }
        for p in &layer.provision {
            match &p.kind {
                ProvisionerKind::File { to, .. } => f(to),
                ProvisionerKind::Shell(s) => {
                    if let ShellSource::Inline(lines) = &s.source {
                        lines.iter().for_each(&mut *f);
                    }
                    s.env.values().for_each(&mut *f);
                }
                ProvisionerKind::Ansible {
                    extra_vars, env, ..
                } => {
                    extra_vars.values().for_each(&mut *f);
                    env.values().for_each(&mut *f);
                }
            }
        }
    }
    for svc in &pf.services {
        f(&svc.command);
        svc.env.values().for_each(&mut *f);
    }
    pf.verify.commands.iter().for_each(&mut *f);
    for h in &pf.verify.http {
        f(&h.url);
        if let Some(c) = &h.contains {
            f(c);
        }
    }
}

impl Plan<'_> {
    /// The services with their templates rendered for this run.
    pub fn services(&self) -> Vec<crate::services::RenderedService> {
        self.pf
            .services
            .iter()
            .map(|s| crate::services::RenderedService {
                name: s.name.value.clone(),
                command: template::render(&s.command.raw, &self.template),
                user: s.user.clone(),
                workdir: s.workdir.clone(),
                env: s
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), template::render(&v.raw, &self.template)))
                    .collect(),
                port: s.port.as_ref().map(|p| p.value),
            })
            .collect()
    }

    /// Renders a template for this run.
    pub fn render(&self, t: &Template) -> String {
        template::render(&t.raw, &self.template)
    }
}
