//! `pipe up --watch`, written once over [`LocalTarget`]: after `up`, the app layer's inputs
//! (what its `file` provisioners upload, its `shell` scripts, its playbooks' folders) are
//! scanned for changes (mtime and size, `.pipeignore` honoured as uploads honour it); a burst of
//! saves is applied once it has been quiet for a moment: changed and new files are uploaded
//! through the machine's communicator and deleted ones removed, the provisioners from the first
//! changed input on run again (those of a `restart_only` upload do not), the services restart
//! and are waited for, and one line says what happened and how long it took. Polling keeps pipe
//! free of a file-notification crate; a scan of a project's app inputs takes milliseconds.
//!
//! The machine is marked as changed by watch ([`LocalTarget::mark_watched`]): its image is
//! behind it until the next `pipe up`, and `pipe status` says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Layer, LayerName, Pipelinefile, ProvisionerKind, RestartOnly, ShellSource};
use crate::error::{Error, Result};
use crate::layers::tree::{self, EntryKind};
use crate::plan::Plan;
use crate::provisioners::{self, ProvisionContext};
use crate::ui::Printer;

use super::local::{LocalTarget, Running};

/// How often the inputs are scanned (a scan of an app's inputs takes a millisecond or two).
pub const POLL: Duration = Duration::from_millis(100);

/// How long the inputs must stay unchanged before a burst of saves is applied: an editor's
/// save (write, rename, chmod) is over within it; a `git checkout` is a few such bursts.
pub const QUIET: Duration = Duration::from_millis(100);

/// What an app provisioner reads from the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The provisioner's index in the app layer.
    pub index: usize,
    pub path: PathBuf,
    /// A `file` provisioner's source: synced into the machine, not uploaded again whole.
    pub upload: bool,
    /// A `file` provisioner's `restart_only`: which of its changes need no provisioning.
    pub restart_only: RestartOnly,
}

/// The app layer's inputs under the project (`root`), one per provisioner that reads any.
pub fn inputs(root: &std::path::Path, app: &Layer) -> Vec<Input> {
    let mut out = Vec::new();
    for (index, p) in app.provision.iter().enumerate() {
        let (path, upload, restart_only) = match &p.kind {
            ProvisionerKind::File {
                source,
                restart_only,
                ..
            } => (
                root.join(source.value.trim_end_matches('/')),
                true,
                restart_only.clone(),
            ),
            ProvisionerKind::Shell(s) => match &s.source {
                ShellSource::Script(path) => (root.join(&path.value), false, RestartOnly::No),
                ShellSource::Inline(_) => continue,
            },
            // The playbook's folder is what the provisioner uploads.
            ProvisionerKind::Ansible { playbook, .. } => {
                let abs = root.join(&playbook.value);
                (
                    abs.parent().unwrap_or(root).to_path_buf(),
                    false,
                    RestartOnly::No,
                )
            }
        };
        out.push(Input {
            index,
            path,
            upload,
            restart_only,
        });
    }
    out
}

/// What a scan sees of one entry. A folder is only there or not: its mtime changes with every
/// file saved in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: EntryKind,
    size: u64,
    mtime: Option<SystemTime>,
    mode: u32,
}

/// One input's entries by path relative to it (`""` for the input itself); empty when it is
/// missing.
pub type Entries = BTreeMap<String, SeenEntry>;

/// An entry as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEntry(Seen);

/// Scans every input (the walk uploads use), never what is under `skip` (the state folder:
/// pipe writes there while it watches, e.g. a VM's watch mark).
pub fn scan(inputs: &[Input], skip: &std::path::Path) -> Vec<Entries> {
    inputs
        .iter()
        .map(|i| {
            let Ok(entries) = tree::walk(&i.path) else {
                return Entries::new();
            };
            entries
                .into_iter()
                .filter(|e| !e.abs.starts_with(skip))
                .filter_map(|e| {
                    let meta = std::fs::symlink_metadata(&e.abs).ok()?;
                    let dir = e.kind == EntryKind::Dir;
                    let seen = Seen {
                        size: if dir { 0 } else { meta.len() },
                        mtime: if dir { None } else { meta.modified().ok() },
                        mode: e.mode,
                        kind: e.kind,
                    };
                    Some((e.rel, SeenEntry(seen)))
                })
                .collect()
        })
        .collect()
}

/// What changed in one input between two scans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New or changed entries, sorted (a folder before what is in it).
    pub upserts: Vec<String>,
    /// Which of `upserts` are folders.
    pub folders: Vec<String>,
    /// How many of `upserts` are new.
    pub added: usize,
    /// Entries that are gone (or changed kind), topmost only.
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// The changes from `old` to `new`.
pub fn diff(old: &Entries, new: &Entries) -> Changes {
    let mut c = Changes::default();
    for (rel, seen) in new {
        let changed = old.get(rel) != Some(seen);
        if changed && seen.0.kind == EntryKind::Dir {
            c.folders.push(rel.clone());
        }
        match old.get(rel) {
            None => {
                c.upserts.push(rel.clone());
                c.added += 1;
            }
            Some(before) if before == seen => {}
            Some(before) => {
                // A file that became a folder (or a link) is removed first, then uploaded.
                if before.0.kind != seen.0.kind {
                    c.removed.push(rel.clone());
                }
                c.upserts.push(rel.clone());
            }
        }
    }
    for rel in old.keys() {
        if !new.contains_key(rel) {
            c.removed.push(rel.clone());
        }
    }
    c.removed.sort();
    // `rm -rf` of a folder takes what was in it.
    let mut top: Vec<String> = Vec::new();
    for r in c.removed {
        let under = top
            .iter()
            .any(|t| t.is_empty() || r.starts_with(&format!("{t}/")));
        if !under {
            top.push(r);
        }
    }
    c.removed = top;
    c
}

/// What one sync does: the uploads to bring up to date and the provisioners to run again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    /// Per `file` provisioner (by index), its changes.
    pub uploads: Vec<(usize, Changes)>,
    /// Provisioners (by index) that run again: from the first changed input that needs
    /// provisioning on, those that are not uploads (a build would run them again too).
    pub rerun: Vec<usize>,
}

/// The sync for the changes of each input (as [`inputs`] lists them).
pub fn plan_sync(app: &Layer, inputs: &[Input], changes: &[Changes]) -> Sync {
    let mut sync = Sync::default();
    let mut first: Option<usize> = None;
    for (input, c) in inputs.iter().zip(changes) {
        if c.is_empty() {
            continue;
        }
        if input.upload {
            sync.uploads.push((input.index, c.clone()));
        }
        if !needs_no_provisioning(&input.restart_only, c) {
            first = Some(first.map_or(input.index, |f| f.min(input.index)));
        }
    }
    if let Some(first) = first {
        sync.rerun = app
            .provision
            .iter()
            .enumerate()
            .filter(|(i, p)| *i >= first && !matches!(p.kind, ProvisionerKind::File { .. }))
            .map(|(i, _)| i)
            .collect();
    }
    sync
}

/// Whether `restart_only` covers every change of an upload: each new or changed file (a new
/// folder is only where files go) and each removed path matches a pattern (or an ancestor
/// folder does).
fn needs_no_provisioning(restart_only: &RestartOnly, c: &Changes) -> bool {
    let patterns = match restart_only {
        RestartOnly::No => return false,
        RestartOnly::All => return true,
        RestartOnly::Paths(p) => p,
    };
    let mut b = ignore::gitignore::GitignoreBuilder::new("/");
    for p in patterns {
        // The parser checked each pattern.
        let _ = b.add_line(None, p);
    }
    let Ok(matcher) = b.build() else {
        return false;
    };
    let covered = |rel: &str, dir: bool| {
        !rel.is_empty()
            && matcher
                .matched_path_or_any_parents(std::path::Path::new("/").join(rel), dir)
                .is_ignore()
    };
    c.upserts
        .iter()
        .filter(|u| !c.folders.contains(u))
        .all(|u| covered(u, false))
        && c.removed
            .iter()
            .all(|r| covered(r, false) || covered(r, true))
}

/// How a watch ended.
pub struct Watched {
    pub machine: String,
    /// How many syncs changed the machine.
    pub syncs: usize,
}

/// Watches the app layer's inputs and syncs their changes into the environment's running
/// machine until Ctrl-C; the machine keeps running.
pub fn run(target: &dyn LocalTarget, plan: &Plan, printer: &Printer) -> Result<Watched> {
    crate::interrupt::install();
    let pf = plan.pf;
    let inputs = inputs(&pf.root, &pf.app);
    let machine = target.running(pf, &plan.env)?;
    // The first scan before saying so: a save right after "watching" is a change, not part of
    // what the machine is taken to hold.
    let skip = crate::state::dir(&pf.root);
    let mut applied = scan(&inputs, &skip);
    printer.info(format!(
        "watching {} input(s) of the app layer for {} (Ctrl-C stops watching; the machine keeps running)",
        inputs.len(),
        machine.name
    ));
    let mut latest = applied.clone();
    let mut changed_at = Instant::now();
    let mut syncs = 0;
    let mut marked = false;
    while !crate::interrupt::requested() {
        // Right after a change, look again once it has been quiet for QUIET.
        let pending = latest != applied;
        nap(if pending {
            QUIET
                .saturating_sub(changed_at.elapsed())
                .max(Duration::from_millis(10))
        } else {
            POLL
        });
        if crate::interrupt::requested() {
            break;
        }
        let now = scan(&inputs, &skip);
        if now != latest {
            latest = now;
            changed_at = Instant::now();
            continue;
        }
        if latest == applied || changed_at.elapsed() < QUIET {
            continue;
        }
        let changes: Vec<Changes> = applied
            .iter()
            .zip(&latest)
            .map(|(old, new)| diff(old, new))
            .collect();
        applied = latest.clone();
        let sync = plan_sync(&pf.app, &inputs, &changes);
        match apply(target, pf, plan, &machine, &sync, &mut marked, printer) {
            Ok(line) => {
                syncs += 1;
                printer.info(line);
            }
            Err(Error::Interrupted) => {
                syncs += 1;
                printer.warn(
                    format!("a sync into {} was interrupted", machine.name),
                    Some(
                        "the machine may be half synced: `pipe up` makes it from its image again"
                            .into(),
                    ),
                );
                break;
            }
            Err(e) => {
                syncs += 1;
                printer.warn(
                    format!("sync into {} failed: {e}", machine.name),
                    Some("still watching: save again to retry, or `pipe up` to rebuild".into()),
                );
            }
        }
    }
    Ok(Watched {
        machine: machine.name,
        syncs,
    })
}

/// Sleeps `d`, waking early on Ctrl-C.
fn nap(d: Duration) {
    let until = Instant::now() + d;
    while !crate::interrupt::requested() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// One sync: mark, uploads, provisioners, restart and readiness; the line saying so.
fn apply(
    target: &dyn LocalTarget,
    pf: &Pipelinefile,
    plan: &Plan,
    m: &Running,
    sync: &Sync,
    marked: &mut bool,
    printer: &Printer,
) -> Result<String> {
    let started = Instant::now();
    // First: a machine half synced is changed by watch too. Once is enough: the mark says
    // since when the machine is ahead of its image.
    if !*marked {
        let _p = printer.phase("watch: mark the machine");
        target.mark_watched(pf, &plan.env, m, &chrono::Utc::now().to_rfc3339())?;
        *marked = true;
    }
    let pctx = ProvisionContext {
        comm: &*m.comm,
        printer,
        root: &pf.root,
        template: &plan.template,
        build_env: plan.trust.env(),
    };
    let (mut changed, mut added, mut removed) = (0, 0, 0);
    for (index, c) in &sync.uploads {
        let p = &pf.app.provision[*index];
        let source = provisioners::describe(LayerName::App, *index, p);
        let _p = printer.phase(format!("watch: sync {source}"));
        provisioners::sync_file(&source, p, &c.upserts, &c.removed, &pctx)?;
        added += c.added;
        changed += c.upserts.len() - c.added;
        removed += c.removed.len();
    }
    if !sync.rerun.is_empty() {
        provisioners::rerun(LayerName::App, &pf.app, &sync.rerun, &pctx, &plan.trust)?;
    }
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    {
        let _p = printer.phase("watch: restart services (stop, start, ready)");
        target.restart_services(pf, plan, m)?;
    }
    let mut what = vec![];
    for (n, word) in [(changed, "changed"), (added, "new"), (removed, "deleted")] {
        if n > 0 {
            what.push(format!("{n} {word}"));
        }
    }
    let files = if what.is_empty() {
        "no files".to_string()
    } else {
        format!("{} file(s)", what.join(", "))
    };
    let reran = match sync.rerun.len() {
        0 => String::new(),
        n => format!(", re-ran {n} provisioner(s)"),
    };
    Ok(format!(
        "synced {files} into {}{reran}, services ready in {}",
        m.name,
        crate::ui::format_duration(started.elapsed())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(root: &std::path::Path) -> Entries {
        scan(
            &[Input {
                index: 0,
                path: root.to_path_buf(),
                upload: true,
                restart_only: RestartOnly::No,
            }],
            &root.join(".pipe"),
        )
        .remove(0)
    }

    #[test]
    fn a_scan_sees_edits_new_and_deleted_files_but_not_ignored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("old")).unwrap();
        std::fs::write(root.join("old/a.txt"), "a").unwrap();
        std::fs::write(root.join("index.html"), "one").unwrap();
        std::fs::write(root.join(".pipeignore"), "*.tmp\n").unwrap();
        let before = entries(root);
        std::fs::write(root.join("index.html"), "two!").unwrap();
        std::fs::create_dir_all(root.join("new")).unwrap();
        std::fs::write(root.join("new/b.txt"), "b").unwrap();
        std::fs::write(root.join("junk.tmp"), "ignored").unwrap();
        std::fs::create_dir_all(root.join(".pipe/qemu")).unwrap();
        std::fs::write(root.join(".pipe/qemu/watched"), "now").unwrap();
        std::fs::remove_dir_all(root.join("old")).unwrap();
        let c = diff(&before, &entries(root));
        assert_eq!(c.upserts, vec!["index.html", "new", "new/b.txt"]);
        assert_eq!(c.added, 2);
        assert_eq!(c.removed, vec!["old"], "the folder, not what was in it");
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn a_file_that_becomes_a_folder_is_removed_then_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("x"), "file").unwrap();
        let before = entries(root);
        std::fs::remove_file(root.join("x")).unwrap();
        std::fs::create_dir(root.join("x")).unwrap();
        let c = diff(&before, &entries(root));
        assert_eq!(c.removed, vec!["x"]);
        assert_eq!(c.upserts, vec!["x"]);
    }

    fn layer(toml: &str) -> Layer {
        let text = format!(
            "[pipeline]\nname = \"w\"\n[box]\ndocker = {{ image = \"debian:12\" }}\n[app]\nprovision = [{toml}]\n[env.dev]\ntarget = \"docker\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Pipelinefile.toml"), text).unwrap();
        for f in ["a.sh", "b.sh", "www/index.html"] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        crate::config::load(&dir.path().join("Pipelinefile.toml"), dir.path())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .app
    }

    fn changed() -> Changes {
        Changes {
            upserts: vec!["f".into()],
            folders: vec![],
            added: 0,
            removed: vec![],
        }
    }

    #[test]
    fn provisioners_from_the_first_changed_input_on_run_again() {
        let app = layer(
            r#"{ shell = "a.sh" }, { file = "www/", to = "/srv" }, { inline = ["true"] }, { shell = "b.sh" }"#,
        );
        let ins = inputs(std::path::Path::new("/p"), &app);
        assert_eq!(
            ins.iter().map(|i| i.index).collect::<Vec<_>>(),
            vec![0, 1, 3],
            "inline has no input"
        );
        let none = Changes::default();
        let s = plan_sync(&app, &ins, &[none.clone(), changed(), none.clone()]);
        assert_eq!(s.uploads, vec![(1, changed())]);
        assert_eq!(s.rerun, vec![2, 3]);
        let s = plan_sync(&app, &ins, &[none.clone(), none.clone(), changed()]);
        assert!(s.uploads.is_empty());
        assert_eq!(s.rerun, vec![3]);
        let s = plan_sync(&app, &ins, &[changed(), none.clone(), none]);
        assert_eq!(s.rerun, vec![0, 2, 3]);
    }

    #[test]
    fn a_restart_only_upload_runs_no_provisioner() {
        let app =
            layer(r#"{ file = "www/", to = "/srv", restart_only = true }, { inline = ["true"] }"#);
        let ins = inputs(std::path::Path::new("/p"), &app);
        let s = plan_sync(&app, &ins, &[changed()]);
        assert_eq!(s.uploads, vec![(0, changed())]);
        assert!(s.rerun.is_empty());
    }

    #[test]
    fn restart_only_patterns_cover_the_paths_they_match_and_nothing_else() {
        let app = layer(
            r#"{ file = "www/", to = "/srv", restart_only = ["*.js", "public/"] }, { inline = ["true"] }"#,
        );
        let ins = inputs(std::path::Path::new("/p"), &app);
        let c = |upserts: &[&str], folders: &[&str], removed: &[&str]| Changes {
            upserts: upserts.iter().map(|s| s.to_string()).collect(),
            folders: folders.iter().map(|s| s.to_string()).collect(),
            added: 0,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        };
        let reran = |ch: Changes| plan_sync(&app, &ins, &[ch]).rerun;
        // Matched files, a new folder with a matched file in it, a removed matched folder.
        assert!(reran(c(&["server.js", "lib", "lib/a.js"], &["lib"], &[])).is_empty());
        assert!(reran(c(&["public/css/site.css"], &[], &["public/old"])).is_empty());
        assert!(reran(c(&[], &[], &["public"])).is_empty());
        // One file the patterns do not match is enough to provision again.
        assert_eq!(reran(c(&["server.js", "package.json"], &[], &[])), vec![1]);
        assert_eq!(reran(c(&[], &[], &["nginx/site.conf"])), vec![1]);
        // A removed folder might have held anything.
        assert_eq!(reran(c(&[], &[], &["lib"])), vec![1]);
    }
}
