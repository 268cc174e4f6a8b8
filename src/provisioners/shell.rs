//! The `shell` and `inline` provisioners: upload the script, run it, retry as asked.

use std::time::Duration;

use crate::communicators::ExecRequest;
use crate::config::{ShellProvisioner, ShellSource};

use super::{ProvisionContext, ProvisionError, WORK_DIR};

pub fn run(
    source: &str,
    index: usize,
    s: &ShellProvisioner,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let (script, name) = match &s.source {
        ShellSource::Script(path) => {
            let abs = ctx.root.join(&path.value);
            let data = std::fs::read(&abs).map_err(|e| ProvisionError {
                provisioner: source.to_string(),
                what: format!("cannot read {}: {e}", abs.display()),
                exit_code: None,
                tail: Vec::new(),
                interrupted: false,
                unreachable: false,
            })?;
            let name = abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into());
            (data, name)
        }
        ShellSource::Inline(lines) => {
            let mut text = String::from("#!/bin/sh\nset -e\n");
            for l in lines {
                text.push_str(&ctx.render(l));
                text.push('\n');
            }
            (text.into_bytes(), format!("inline-{}.sh", index + 1))
        }
    };
    let dest = format!("{WORK_DIR}/{index:02}-{name}");
    ctx.comm
        .upload_bytes(&script, &dest, 0o755)
        .map_err(|e| ctx.transport(source, e))?;
    // A script without a shebang still runs: `sh` reads it.
    let has_shebang = script.starts_with(b"#!");
    let argv = if has_shebang {
        vec![dest.clone()]
    } else {
        vec!["sh".into(), dest.clone()]
    };
    let req = ExecRequest {
        argv,
        env: ctx.render_env(&s.env),
        workdir: s.workdir.clone(),
        user: s.run_as.clone(),
        timeout: s.timeout.map(Duration::from_secs),
        stdin: None,
    };
    let valid = if s.valid_exit_codes.is_empty() {
        vec![0]
    } else {
        s.valid_exit_codes.clone()
    };
    let mut attempt = 0;
    loop {
        let (code, tail) = ctx.run(source, &req)?;
        if valid.contains(&code) {
            return Ok(());
        }
        if attempt >= s.retries || crate::interrupt::requested() {
            return Err(ProvisionError {
                provisioner: source.to_string(),
                what: if attempt > 0 {
                    format!(
                        "failed with exit code {code} (after {} attempts)",
                        attempt + 1
                    )
                } else {
                    format!("failed with exit code {code}")
                },
                exit_code: Some(code),
                tail,
                interrupted: crate::interrupt::requested(),
                unreachable: false,
            });
        }
        attempt += 1;
        ctx.printer.warn(
            format!(
                "{source} exited with code {code}; retrying ({attempt} of {})",
                s.retries
            ),
            None,
        );
        std::thread::sleep(Duration::from_secs(2u64.pow(attempt.min(4))));
    }
}
