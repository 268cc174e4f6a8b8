//! The `file` provisioner: one tar stream of a file or a tree.

use std::path::PathBuf;

use crate::communicators::{ExecRequest, UploadOptions};
use crate::config::{Spanned, Template};

use super::{ProvisionContext, ProvisionError};

pub fn run(
    source: &str,
    src: &Spanned<String>,
    to: &Template,
    owner: Option<&str>,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let (abs, dest) = source_and_dest(src, to, ctx);
    let opts = UploadOptions {
        owner: owner.map(str::to_string),
    };
    ctx.comm
        .upload(&abs, &dest, &opts)
        .map_err(|e| ctx.transport(source, e))?;
    // Show what arrived, so the log says where files went.
    ctx.printer.output(
        source,
        "stdout",
        &format!("uploaded {} -> {dest}", src.value),
    );
    Ok(())
}

/// The source on the host and where it lands on the machine: `dir/` uploads the folder's
/// contents into `to`; `dir` uploads the folder into `to/dir` (rsync's and Packer's
/// convention).
fn source_and_dest(
    src: &Spanned<String>,
    to: &Template,
    ctx: &ProvisionContext,
) -> (PathBuf, String) {
    let abs = ctx.root.join(src.value.trim_end_matches('/'));
    let to = ctx.render(to);
    let dest = if abs.is_dir() && !src.value.ends_with('/') {
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{name}", to.trim_end_matches('/'))
    } else {
        to
    };
    (abs, dest)
}

/// Uploads the entries of the source that are new or changed (relative paths, `""` for the
/// source itself) with the same upload as [`run`], and deletes those that are gone.
pub fn sync(
    source: &str,
    src: &Spanned<String>,
    to: &Template,
    owner: Option<&str>,
    upserts: &[String],
    removed: &[String],
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let (abs, dest) = source_and_dest(src, to, ctx);
    let at = |rel: &str| {
        if rel.is_empty() {
            dest.clone()
        } else {
            format!("{}/{rel}", dest.trim_end_matches('/'))
        }
    };
    if !removed.is_empty() {
        let mut argv = vec!["rm".to_string(), "-rf".into(), "--".into()];
        argv.extend(removed.iter().map(|r| at(r)));
        let (code, tail) = ctx.run(
            source,
            &ExecRequest {
                argv,
                ..Default::default()
            },
        )?;
        if code != 0 {
            return Err(ProvisionError {
                provisioner: source.to_string(),
                what: format!("removing deleted files exited with code {code}"),
                exit_code: Some(code),
                tail,
                interrupted: false,
                unreachable: false,
            });
        }
    }
    let opts = UploadOptions {
        owner: owner.map(str::to_string),
    };
    // A new folder is uploaded whole, with what is in it (`upserts` is sorted: its entries
    // follow it).
    let mut folder: Option<String> = None;
    for rel in upserts {
        if let Some(f) = &folder
            && rel.starts_with(&format!("{f}/"))
        {
            continue;
        }
        let host = if rel.is_empty() {
            abs.clone()
        } else {
            abs.join(rel)
        };
        if host.is_dir() && !host.is_symlink() {
            folder = Some(rel.clone());
        }
        ctx.comm
            .upload(&host, &at(rel), &opts)
            .map_err(|e| ctx.transport(source, e))?;
    }
    Ok(())
}
