//! The `file` provisioner: one tar stream of a file or a tree.

use crate::communicators::UploadOptions;
use crate::config::{Spanned, Template};

use super::{ProvisionContext, ProvisionError};

pub fn run(
    source: &str,
    src: &Spanned<String>,
    to: &Template,
    owner: Option<&str>,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let abs = ctx.root.join(src.value.trim_end_matches('/'));
    let to = ctx.render(to);
    // `dir/` uploads the folder's contents into `to`; `dir` uploads the folder into `to/dir`
    // (rsync's and Packer's convention).
    let dest = if abs.is_dir() && !src.value.ends_with('/') {
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{name}", to.trim_end_matches('/'))
    } else {
        to
    };
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
