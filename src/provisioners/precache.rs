//! The precache step: dependency manifests go into the base layer and are installed there, so
//! the app layer only adds what changed.

use std::path::Path;

use crate::communicators::{ExecRequest, UploadOptions};
use crate::config::{LayerName, Precache};

use super::{ProvisionContext, ProvisionError};

pub fn run(layer: LayerName, pre: &Precache, ctx: &ProvisionContext) -> Result<(), ProvisionError> {
    let source = format!("{layer}/precache");
    for f in &pre.files {
        let abs = ctx.root.join(&f.value);
        let name = Path::new(&f.value)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = format!("{}/{name}", pre.to.trim_end_matches('/'));
        ctx.comm
            .upload(&abs, &dest, &UploadOptions::default())
            .map_err(|e| ctx.transport(&source, e))?;
    }
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), ctx.render(&pre.run)],
        env: ctx.render_env(&pre.env),
        workdir: Some(pre.to.clone()),
        ..Default::default()
    };
    ctx.run_checked(&source, &req)
}
