//! Provisioners: `file`, `shell` (script or inline), `ansible`, and the precache step. They
//! talk only to a [`Communicator`], so the same layer is built the same way on every target.

mod ansible;
mod file;
pub mod output;
mod precache;
mod shell;
pub mod trace;
pub mod trust;

use std::collections::BTreeMap;
use std::path::Path;

use crate::communicators::{Communicator, ExecError, ExecRequest};
use crate::config::template::{self, Context};
use indexmap::IndexMap;

use crate::config::{Layer, LayerName, Provisioner, ProvisionerKind, ShellSource, Template};
use crate::error::Error;
use crate::ui::Printer;

use output::LineSink;
use trust::BuildTrust;

/// Where pipe keeps scripts and uploads on the machine while provisioning; removed after.
pub const WORK_DIR: &str = "/tmp/pipe-provision";

/// Everything a provisioner needs.
pub struct ProvisionContext<'a> {
    pub comm: &'a dyn Communicator,
    pub printer: &'a Printer,
    /// The Pipelinefile's folder: relative paths resolve here.
    pub root: &'a Path,
    /// Values for `{{ ... }}`.
    pub template: &'a Context,
    /// Environment added to every command (proxy settings); never persisted.
    pub build_env: BTreeMap<String, String>,
}

impl ProvisionContext<'_> {
    fn render(&self, t: &Template) -> String {
        template::render(&t.raw, self.template)
    }

    fn render_env(&self, env: &IndexMap<String, Template>) -> BTreeMap<String, String> {
        let mut out = self.build_env.clone();
        for (k, v) in env {
            out.insert(k.clone(), self.render(v));
        }
        out
    }

    /// Runs a command with live, prefixed output; returns its exit code and last lines.
    fn run(&self, source: &str, req: &ExecRequest) -> Result<(i32, Vec<String>), ProvisionError> {
        let mut sink = LineSink::new(self.printer, source, true);
        let res = self.comm.exec(req, &mut sink);
        let tail = sink.finish();
        match res {
            Ok(code) => Ok((code, tail)),
            Err(e) => Err(ProvisionError {
                provisioner: source.to_string(),
                interrupted: matches!(e, ExecError::Interrupted),
                unreachable: matches!(e, ExecError::Transport(_) | ExecError::Io(_)),
                what: match e {
                    ExecError::TimedOut(d) => format!("timed out after {}s", d.as_secs()),
                    ExecError::Interrupted => "interrupted".into(),
                    other => other.to_string(),
                },
                exit_code: None,
                tail,
            }),
        }
    }

    /// Runs a command that must succeed (setup steps pipe itself needs).
    fn run_checked(&self, source: &str, req: &ExecRequest) -> Result<(), ProvisionError> {
        let (code, tail) = self.run(source, req)?;
        if code == 0 {
            Ok(())
        } else {
            Err(ProvisionError {
                provisioner: source.to_string(),
                what: format!("exited with code {code}"),
                exit_code: Some(code),
                tail,
                interrupted: false,
                unreachable: false,
            })
        }
    }

    fn transport(&self, source: &str, e: ExecError) -> ProvisionError {
        ProvisionError {
            provisioner: source.to_string(),
            interrupted: matches!(e, ExecError::Interrupted),
            unreachable: matches!(e, ExecError::Transport(_) | ExecError::Io(_)),
            what: e.to_string(),
            exit_code: None,
            tail: Vec::new(),
        }
    }
}

/// A provisioner failed.
#[derive(Debug)]
pub struct ProvisionError {
    /// e.g. `base/shell provisioners/primal.sh`.
    pub provisioner: String,
    pub what: String,
    pub exit_code: Option<i32>,
    /// The last lines of its output.
    pub tail: Vec<String>,
    pub interrupted: bool,
    /// The machine could not be reached, or the connection broke while the command ran.
    pub unreachable: bool,
}

impl From<ProvisionError> for Error {
    fn from(e: ProvisionError) -> Self {
        if e.interrupted {
            return Error::Interrupted;
        }
        let mut message = format!("{} {}", e.provisioner, e.what);
        if !e.tail.is_empty() {
            message.push_str(&format!(
                "\n---- last {} lines ----\n{}\n----",
                e.tail.len(),
                e.tail.join("\n")
            ));
        }
        let hint = if e.unreachable {
            // Running it again on a new connection could run half of it twice.
            "the connection to the machine could not be made or broke; pipe does not start a provisioner again on a new connection, since it cannot know how far it got: check the machine and its network, then run again (--keep-on-error keeps the machine)"
        } else {
            "fix it and run again; --keep-on-error keeps the machine so you can look inside"
        };
        Error::runtime(message, Some(hint.to_string()))
    }
}

/// A short name for a provisioner in output prefixes: `base/shell primal.sh`.
pub fn describe(layer: LayerName, index: usize, p: &Provisioner) -> String {
    let what = match &p.kind {
        ProvisionerKind::File { source, .. } => format!("file {}", source.value),
        ProvisionerKind::Shell(s) => match &s.source {
            ShellSource::Script(path) => format!("shell {}", path.value),
            ShellSource::Inline(_) => format!("inline #{}", index + 1),
        },
        ProvisionerKind::Ansible { playbook, .. } => format!("ansible {}", playbook.value),
    };
    format!("{layer}/{what}")
}

/// Runs a layer: build trust in, its provisioners in order, then its precache step (base
/// only), and build trust out.
pub fn run_layer(
    name: LayerName,
    layer: &Layer,
    ctx: &ProvisionContext,
    trust: &BuildTrust,
) -> Result<(), ProvisionError> {
    in_work_dir(name, ctx, trust, || {
        for (i, p) in layer.provision.iter().enumerate() {
            run_one(name, i, p, ctx)?;
        }
        // After the provisioners: they install the runtime the install command needs (node
        // and npm for `npm ci`), as the primal image of the original article did.
        if let Some(pre) = &layer.precache {
            let _p = ctx.printer.phase(format!("{name}/precache"));
            precache::run(name, pre, ctx)?;
        }
        Ok(())
    })
}

/// Runs some of a layer's provisioners again (by index, in order) on a running machine, without
/// its precache step, with build trust in and out: `pipe up --watch` after an input of theirs
/// changed.
pub fn rerun(
    name: LayerName,
    layer: &Layer,
    indices: &[usize],
    ctx: &ProvisionContext,
    trust: &BuildTrust,
) -> Result<(), ProvisionError> {
    in_work_dir(name, ctx, trust, || {
        for (i, p) in layer.provision.iter().enumerate() {
            if indices.contains(&i) {
                run_one(name, i, p, ctx)?;
            }
        }
        Ok(())
    })
}

/// Brings the changes of a `file` provisioner's source into the machine: `upserts` (paths
/// relative to the source, `""` for the source itself) uploaded as the provisioner uploads
/// them, `removed` deleted.
pub fn sync_file(
    source: &str,
    p: &Provisioner,
    upserts: &[String],
    removed: &[String],
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    match &p.kind {
        ProvisionerKind::File {
            source: src,
            to,
            owner,
            ..
        } => file::sync(source, src, to, owner.as_deref(), upserts, removed, ctx),
        _ => Ok(()),
    }
}

/// Runs one provisioner, unless Ctrl-C was pressed.
fn run_one(
    name: LayerName,
    i: usize,
    p: &Provisioner,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let source = describe(name, i, p);
    if crate::interrupt::requested() {
        return Err(ProvisionError {
            provisioner: source,
            what: "interrupted".into(),
            exit_code: None,
            tail: Vec::new(),
            interrupted: true,
            unreachable: false,
        });
    }
    let _p = ctx.printer.phase(source.clone());
    match &p.kind {
        ProvisionerKind::File {
            source: src,
            to,
            owner,
            ..
        } => file::run(&source, src, to, owner.as_deref(), ctx),
        ProvisionerKind::Shell(s) => shell::run(&source, i, s, ctx),
        ProvisionerKind::Ansible {
            playbook,
            extra_vars,
            env,
        } => ansible::run(&source, playbook, extra_vars, env, ctx),
    }
}

/// Runs `work` with pipe's work folder on the machine, removed after (it never stays in an
/// image), and the build trust in place meanwhile. Making the folder and trusting are one exec,
/// as are removing both: each exec is a round trip.
fn in_work_dir(
    name: LayerName,
    ctx: &ProvisionContext,
    trust: &BuildTrust,
    work: impl FnOnce() -> Result<(), ProvisionError>,
) -> Result<(), ProvisionError> {
    {
        let _p = ctx.printer.phase(format!("{name}/setup (build trust in)"));
        let mut setup = ExecRequest::shell(format!("mkdir -p {WORK_DIR}"));
        if let Some(install) = trust.install_script() {
            // The certificates arrive as a tar on stdin: no upload round trips.
            let files = trust.files();
            let files: Vec<(&str, &[u8], u32)> = files
                .iter()
                .map(|(name, pem)| (name.as_str(), pem.as_slice(), 0o644))
                .collect();
            let mut archive = Vec::new();
            crate::communicators::tar::write_files(&files, &mut archive).map_err(|e| {
                ProvisionError {
                    provisioner: "build-trust".into(),
                    what: format!("packing the certificates: {e}"),
                    exit_code: None,
                    tail: Vec::new(),
                    interrupted: false,
                    unreachable: false,
                }
            })?;
            setup = ExecRequest {
                stdin: Some(archive),
                ..ExecRequest::shell(format!(
                    "mkdir -p {WORK_DIR} {CA_DIR} && tar -x -f - -C {CA_DIR} --no-same-owner && {{ {install}; }}",
                    CA_DIR = trust::CA_DIR
                ))
            };
        }
        ctx.run_checked(&format!("{name}/setup"), &setup)?;
    }
    let result = work();
    // The connection broke: the layer fails and is not committed, and tidying up would first
    // wait up to the whole SSH timeout for a new connection.
    if matches!(&result, Err(e) if e.unreachable) {
        return result;
    }
    let mut cleanup = format!("rm -rf {WORK_DIR}");
    if let Some(remove) = trust.remove_script() {
        cleanup = format!("{cleanup} && {{ {remove}; }}");
    }
    let cleaned = {
        let _p = ctx
            .printer
            .phase(format!("{name}/cleanup (build trust out)"));
        ctx.run_checked(&format!("{name}/cleanup"), &ExecRequest::shell(cleanup))
    };
    result.and(cleaned)
}
