//! The `ansible` provisioner: the playbook's folder is uploaded and run on the machine with
//! `ansible-playbook -c local` (like Packer's ansible-local), so it works the same everywhere.

use std::path::Path;

use crate::communicators::{ExecRequest, UploadOptions};
use indexmap::IndexMap;

use crate::config::{Spanned, Template};

use super::{ProvisionContext, ProvisionError, WORK_DIR};

pub fn run(
    source: &str,
    playbook: &Spanned<String>,
    extra_vars: &IndexMap<String, Template>,
    env: &IndexMap<String, Template>,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let abs = ctx.root.join(&playbook.value);
    let folder = abs.parent().unwrap_or(Path::new("."));
    let file = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = format!("{WORK_DIR}/ansible");
    ctx.comm
        .upload(folder, &dest, &UploadOptions::default())
        .map_err(|e| ctx.transport(source, e))?;
    let check = ExecRequest::shell("command -v ansible-playbook >/dev/null");
    let (code, _) = ctx.run(source, &check)?;
    if code != 0 {
        return Err(ProvisionError {
            provisioner: source.to_string(),
            what: "needs ansible-playbook on the machine, and it is not installed".into(),
            exit_code: Some(code),
            tail: vec![
                "install it in an earlier provisioner, e.g. { inline = [\"apt-get install -y ansible-core\"] }".into(),
            ],
            interrupted: false,
            unreachable: false,
        });
    }
    let vars: serde_json::Map<String, serde_json::Value> = extra_vars
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(ctx.render(v))))
        .collect();
    let vars_file = format!("{WORK_DIR}/ansible-extra-vars.json");
    ctx.comm
        .upload_bytes(
            serde_json::to_string(&vars).expect("json").as_bytes(),
            &vars_file,
            0o600,
        )
        .map_err(|e| ctx.transport(source, e))?;
    let mut env = ctx.render_env(env);
    env.insert("ANSIBLE_FORCE_COLOR".into(), "0".into());
    env.insert("ANSIBLE_NOCOWS".into(), "1".into());
    let req = ExecRequest {
        argv: vec![
            "ansible-playbook".into(),
            "-c".into(),
            "local".into(),
            "-i".into(),
            "localhost,".into(),
            "-e".into(),
            format!("@{vars_file}"),
            file,
        ],
        env,
        workdir: Some(dest),
        ..Default::default()
    };
    ctx.run_checked(source, &req)
}
