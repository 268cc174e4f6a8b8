//! Checks that need only the Pipelinefile and the provisioners' text: a `[verify]` URL on the
//! machine whose port no `[[service]]` declares, and a service whose `user` no provisioner
//! creates. Both are warnings: a package's own daemon may listen on the port (an image
//! started by systemd runs it), and a box may already have the user.

use crate::config::model::{Pipelinefile, ProvisionerKind, ShellSource};

use super::{Report, Severity, in_pipelinefile};

/// Users every Debian system has (base-passwd), which no provisioner needs to create.
const SYSTEM_USERS: &[&str] = &[
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "_apt", "nobody",
];

pub fn check(pf: &Pipelinefile, report: &mut Report) {
    verify_ports(pf, report);
    service_users(pf, report);
}

fn verify_ports(pf: &Pipelinefile, report: &mut Report) {
    let declared: Vec<u16> = pf
        .services
        .iter()
        .filter_map(|s| s.port.as_ref().map(|p| p.value))
        .collect();
    for check in &pf.verify.http {
        let Some(port) = local_port(&check.url.raw) else {
            continue;
        };
        if declared.contains(&port) {
            continue;
        }
        let hint = if declared.is_empty() {
            "no [[service]] declares a `port`: add `port = ...` to the service that serves it"
                .to_string()
        } else {
            let list: Vec<String> = declared.iter().map(u16::to_string).collect();
            format!(
                "services declare {}; unless a package's own daemon listens there, the check will time out",
                list.join(", ")
            )
        };
        in_pipelinefile(
            report,
            pf,
            Severity::Warning,
            format!("[verify] checks port {port}, which no [[service]] declares"),
            check.url.span,
            Some(hint),
        );
    }
}

/// The port of an `http(s)://` URL on the machine itself (127.0.0.1, localhost, [::1]); `None`
/// for another host or a host or port that is a template.
fn local_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains("{{") {
        return None;
    }
    let authority = authority.rsplit('@').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return None;
    }
    match port {
        Some(p) => p.parse().ok(),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    }
}

fn service_users(pf: &Pipelinefile, report: &mut Report) {
    // Everything the provisioners say, as text; when a part cannot be read (a playbook's
    // roles, a missing file), no user is reported missing: that cannot be seen.
    let mut text = String::new();
    for p in [&pf.base, &pf.app].into_iter().flat_map(|l| &l.provision) {
        let part = match &p.kind {
            ProvisionerKind::Shell(s) => match &s.source {
                ShellSource::Script(path) => std::fs::read_to_string(pf.root.join(&path.value)),
                ShellSource::Inline(lines) => Ok(lines
                    .iter()
                    .map(|t| t.raw.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")),
            },
            ProvisionerKind::Ansible { playbook, .. } => {
                let Some(dir) = pf
                    .root
                    .join(&playbook.value)
                    .parent()
                    .map(|d| d.to_path_buf())
                else {
                    return;
                };
                if dir.join("roles").exists() {
                    return;
                }
                std::fs::read_to_string(pf.root.join(&playbook.value))
            }
            ProvisionerKind::File { .. } => Ok(String::new()),
        };
        match part {
            Ok(t) => {
                text.push_str(&t);
                text.push('\n');
            }
            Err(_) => return,
        }
    }
    if let Some(pre) = pf.base.precache.as_ref() {
        text.push_str(&pre.run.raw);
    }
    for s in &pf.services {
        let Some(user) = s.user.as_deref() else {
            continue;
        };
        if SYSTEM_USERS.contains(&user) || user.contains("{{") || creates_user(&text, user) {
            continue;
        }
        in_pipelinefile(
            report,
            pf,
            Severity::Warning,
            format!(
                "service `{}` runs as `{user}`, which no provisioner creates",
                s.name.value
            ),
            s.span,
            Some(format!(
                "create it in a provisioner, e.g. `useradd --system {user}` (unless the box already has it)"
            )),
        );
    }
}

/// Whether `text` creates `user`: `useradd`/`adduser` with that name on the line, or an
/// Ansible `user:` task naming it.
fn creates_user(text: &str, user: &str) -> bool {
    let names = |line: &str| {
        line.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ';' | '&' | '|'))
            .any(|w| w == user)
    };
    // A command continued over several lines (`\` at the end) is one line here.
    let text = text.replace("\\\n", " ");
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let creating = line.contains("useradd") || line.contains("adduser");
        // Ansible: `user:` / `ansible.builtin.user:` with `name: USER` within a few lines.
        let ansible = line.trim_start().trim_start_matches("- ").trim() == "user:"
            || line.trim_end().ends_with("builtin.user:");
        (creating && names(line))
            || (ansible
                && lines[i + 1..lines.len().min(i + 6)].iter().any(|l| {
                    l.trim()
                        .strip_prefix("name:")
                        .is_some_and(|n| n.trim().trim_matches(['"', '\'']) == user)
                }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports() {
        assert_eq!(local_port("http://127.0.0.1:8080/health"), Some(8080));
        assert_eq!(local_port("http://localhost/"), Some(80));
        assert_eq!(local_port("https://[::1]/"), Some(443));
        assert_eq!(local_port("http://example.com:8080/"), None);
        assert_eq!(local_port("http://127.0.0.1:{{ vars.port }}/"), None);
    }

    #[test]
    fn user_creation_is_seen() {
        assert!(creates_user("useradd --system app\n", "app"));
        assert!(creates_user(
            "id app || adduser --disabled-password 'app'",
            "app"
        ));
        assert!(!creates_user("useradd --system application", "app"));
        assert!(!creates_user("echo app", "app"));
        assert!(creates_user(
            "useradd --system \\\n  --shell /bin/false app\n",
            "app"
        ));
        assert!(creates_user(
            "- name: the user\n  user:\n    name: app\n    system: true\n",
            "app"
        ));
    }
}
