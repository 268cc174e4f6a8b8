//! The keys of an `[env.NAME]` table with `target = "ec2"`: where it bakes and how its
//! build instances are launched and reached.

use crate::config::model::Ec2Settings;
use crate::config::walk::{Tbl, Walker};

/// Every key an ec2 environment may have.
pub const EC2_KEYS: &[&str] = &[
    "region",
    "instance_type",
    "subnet_id",
    "ssh_username",
    "auto_scaling_group",
    "launch_template",
    "ssm_parameter",
    "endpoint_url",
    "wait_timeout",
];

/// The settings of an ec2 environment; problems become diagnostics.
pub fn settings(w: &mut Walker, t: &Tbl<'_, '_>) -> Ec2Settings {
    let s = |w: &mut Walker, key: &str| t.str(w, key).map(|s| s.value);
    Ec2Settings {
        region: s(w, "region"),
        instance_type: s(w, "instance_type"),
        subnet_id: s(w, "subnet_id"),
        ssh_username: s(w, "ssh_username"),
        auto_scaling_group: s(w, "auto_scaling_group"),
        launch_template: s(w, "launch_template"),
        ssm_parameter: s(w, "ssm_parameter"),
        endpoint_url: endpoint_url(w, t),
        wait_timeout: wait_timeout(w, t),
    }
}

/// `endpoint_url`: an http(s) URL.
fn endpoint_url(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<String> {
    let url = t.str(w, "endpoint_url")?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        w.error_hint(
            format!("invalid endpoint URL `{}`", url.value),
            url.span,
            "an http:// or https:// URL, e.g. `http://127.0.0.1:5000` for the local EC2",
        );
        return None;
    }
    Some(url.value)
}

/// `wait_timeout`: positive seconds.
fn wait_timeout(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<u64> {
    let n = t.int(w, "wait_timeout")?;
    if n.value <= 0 {
        w.error_hint(
            format!(
                "`wait_timeout` must be a positive number of seconds, found {}",
                n.value
            ),
            n.span,
            "leave it out for the default",
        );
        return None;
    }
    Some(n.value as u64)
}
