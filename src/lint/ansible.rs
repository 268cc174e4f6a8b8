//! Ansible playbooks through `ansible-playbook --syntax-check`, when it is installed on the
//! host (pipe runs playbooks on the machine, so the host needs Ansible only for this check).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::ProvisionerKind;
use crate::config::diagnostic::{Diagnostic, LineIndex};
use crate::config::model::{Pipelinefile, Span};

use super::{Report, Severity};

pub fn check(pf: &Pipelinefile, ansible_playbook: Option<&Path>, report: &mut Report) {
    let playbooks: Vec<&str> = [&pf.base, &pf.app]
        .into_iter()
        .flat_map(|l| &l.provision)
        .filter_map(|p| match &p.kind {
            ProvisionerKind::Ansible { playbook, .. } => Some(playbook.value.as_str()),
            _ => None,
        })
        .collect();
    if playbooks.is_empty() {
        return;
    }
    let Some(program) = ansible_playbook else {
        report.notes.push(
            "ansible-playbook is not installed: playbooks were not checked (it runs on the machine; install it on the host for this check)"
                .to_string(),
        );
        return;
    };
    for playbook in playbooks {
        let file = pf.root.join(playbook);
        let mut cmd = Command::new(program);
        cmd.args(["--syntax-check", "-i", "localhost,", "-c", "local"])
            .arg(&file)
            .stdin(Stdio::null());
        let out = match crate::process::run(&mut cmd) {
            Ok(out) => out,
            Err(e) => {
                report.notes.push(format!("ansible-playbook: {e}"));
                continue;
            }
        };
        if out.status.success() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("ERROR!"))
            .unwrap_or("the playbook does not parse")
            .to_string();
        let at = located(&stderr)
            .map(|(line, col)| LineIndex::new(&text).offset(line, col))
            .unwrap_or(0);
        report.add(
            Severity::Error,
            &file,
            &text,
            Diagnostic::new(message, Span::new(at, at)).with_hint(format!(
                "`ansible-playbook --syntax-check {playbook}` shows the whole report"
            )),
        );
    }
}

/// `line N, column M` from Ansible's error text.
fn located(stderr: &str) -> Option<(usize, usize)> {
    let rest = &stderr[stderr.find("line ")? + 5..];
    let (line, rest) = rest.split_once(", column ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_ansible_locations() {
        let e = "ERROR! A malformed block was encountered\n\nThe error appears to be in '/p/site.yml': line 3, column 3, but may\n";
        assert_eq!(super::located(e), Some((3, 3)));
        assert_eq!(super::located("ERROR! no location"), None);
    }
}
