//! `[env.NAME]`: target, var overrides, promotion source and target settings.

use indexmap::IndexMap;

use super::Known;
use crate::config::model::{
    DockerSettings, Ec2Settings, Environment, QemuSettings, Spanned, TargetKind, TargetSettings,
};
use crate::config::suggest;
use crate::config::walk::{self, Tbl, Walker};

const COMMON_KEYS: &[&str] = &["target", "vars", "promote_from"];
const DOCKER_KEYS: &[&str] = &["container_name"];
const QEMU_KEYS: &[&str] = &["cpus", "memory", "accel", "disk_size"];
const EC2_KEYS: &[&str] = &[
    "region",
    "instance_type",
    "subnet_id",
    "ssh_username",
    "auto_scaling_group",
    "launch_template",
    "ssm_parameter",
    "endpoint_url",
    "wait_timeout",
    "ssh_timeout",
];
const KINDS: &[&str] = &["docker", "qemu", "ec2"];

fn keys_of(kind: TargetKind) -> &'static [&'static str] {
    match kind {
        TargetKind::Docker => DOCKER_KEYS,
        TargetKind::Qemu => QEMU_KEYS,
        TargetKind::Ec2 => EC2_KEYS,
    }
}

/// The box entry to suggest for a target kind.
pub fn box_example(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Docker | TargetKind::Qemu => "{ box = \"debian-12\" }",
        TargetKind::Ec2 => {
            "{ ami_filter = { name = \"debian-12-amd64-*\", owners = [\"136693071363\"] } }"
        }
    }
}

/// `[env]`: every environment whose target is known.
pub fn envs(w: &mut Walker, root: &Tbl<'_, '_>, known: &Known) -> IndexMap<String, Environment> {
    let mut out = IndexMap::new();
    let Some(v) = root.get("env") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`env`", "[env]") else {
        return out;
    };
    for (name, name_span, v) in t.entries() {
        let Some(e) = walk::table(w, v, &format!("`{name}`"), format!("[env.{name}]")) else {
            continue;
        };
        super::names::check_name(w, "environment", name, name_span);
        if let Some(env) = environment(w, &e, Spanned::new(name.to_string(), name_span), known) {
            out.insert(name.to_string(), env);
        }
    }
    out
}

fn environment(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    name: Spanned<String>,
    known: &Known,
) -> Option<Environment> {
    let all: Vec<&str> = [COMMON_KEYS, DOCKER_KEYS, QEMU_KEYS, EC2_KEYS].concat();
    t.check_keys(w, &all);
    if !t.has("target") {
        t.missing(
            w,
            "target",
            Some("add `target = \"docker\"` (or \"qemu\", \"ec2\")".into()),
        );
    }
    let target = t
        .str(w, "target")
        .and_then(|s| match TargetKind::parse(&s) {
            Some(kind) => Some(Spanned::new(kind, s.span)),
            None => {
                let hint = suggest::did_you_mean(&s, KINDS.iter().copied()).unwrap_or_else(|| {
                    format!("targets are {}", suggest::list(KINDS.iter().copied()))
                });
                w.error_hint(format!("unknown target `{}`", s.value), s.span, hint);
                None
            }
        });
    let vars = overrides(w, t, &name, known);
    let promote_from = t.str(w, "promote_from");
    let target = target?;
    let kind = target.value;
    if !known.box_kinds.contains(&kind) {
        w.error_hint(
            format!(
                "env `{}` targets {kind}, but [box] has no {kind} entry",
                name.value
            ),
            target.span,
            format!("add `[box] {kind} = {}`", box_example(kind)),
        );
    }
    for other in TargetKind::ALL.into_iter().filter(|k| *k != kind) {
        for key in keys_of(other) {
            if let Some(span) = t.key_span(key) {
                w.error_hint(
                    format!(
                        "`{key}` is {} {other} setting, but env `{}` targets {kind}",
                        if other == TargetKind::Ec2 { "an" } else { "a" },
                        name.value
                    ),
                    span,
                    format!("remove it, or set `target = \"{other}\"`"),
                );
            }
        }
    }
    let settings = match kind {
        TargetKind::Docker => TargetSettings::Docker(DockerSettings {
            container_name: t.str(w, "container_name").map(|s| {
                super::names::check_container_name(w, &s.value, s.span);
                s.value
            }),
        }),
        TargetKind::Qemu => TargetSettings::Qemu(qemu(w, t)),
        TargetKind::Ec2 => {
            let s = |w: &mut Walker, key: &str| t.str(w, key).map(|s| s.value);
            TargetSettings::Ec2(Ec2Settings {
                region: s(w, "region"),
                instance_type: s(w, "instance_type"),
                subnet_id: s(w, "subnet_id"),
                ssh_username: s(w, "ssh_username"),
                auto_scaling_group: s(w, "auto_scaling_group"),
                launch_template: s(w, "launch_template"),
                ssm_parameter: s(w, "ssm_parameter"),
                endpoint_url: endpoint_url(w, t),
                wait_timeout: positive_seconds(w, t, "wait_timeout"),
                ssh_timeout: positive_seconds(w, t, "ssh_timeout"),
            })
        }
    };
    Some(Environment {
        name,
        target,
        vars,
        promote_from,
        settings,
        span: t.span,
    })
}

/// `[env.NAME].vars`: only declared vars may be overridden.
fn overrides(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    env: &Spanned<String>,
    known: &Known,
) -> IndexMap<String, Spanned<String>> {
    let mut out = IndexMap::new();
    let Some(vars) = t.table(w, "vars", Some(format!("[env.{}].vars", env.value))) else {
        return out;
    };
    for (name, name_span, v) in vars.entries() {
        if !known.vars.iter().any(|k| k == name) {
            let hint = suggest::did_you_mean(name, known.vars.iter().map(String::as_str))
                .unwrap_or_else(|| format!("declare it in [vars] first, e.g. `{name} = \"...\"`"));
            w.error_hint(
                format!("env `{}` sets undeclared var `{name}`", env.value),
                name_span,
                hint,
            );
            continue;
        }
        if let Some(value) = walk::scalar_text(w, v, &format!("`{name}`")) {
            out.insert(name.to_string(), value);
        }
    }
    out
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

/// `wait_timeout`, `ssh_timeout`: positive seconds.
fn positive_seconds(w: &mut Walker, t: &Tbl<'_, '_>, key: &str) -> Option<u64> {
    let n = t.int(w, key)?;
    if n.value <= 0 {
        w.error_hint(
            format!(
                "`{key}` must be a positive number of seconds, found {}",
                n.value
            ),
            n.span,
            "leave it out for the default",
        );
        return None;
    }
    Some(n.value as u64)
}

fn qemu(w: &mut Walker, t: &Tbl<'_, '_>) -> QemuSettings {
    let mut out = QemuSettings::default();
    let positive = |w: &mut Walker, key: &str, unit: &str| {
        t.int(w, key).and_then(|n| {
            if n.value <= 0 || n.value > i64::from(u32::MAX) {
                w.error_hint(
                    format!("`{key}` must be a positive number{unit}, found {}", n.value),
                    n.span,
                    "leave it out for the default",
                );
                None
            } else {
                Some(n.value as u32)
            }
        })
    };
    if let Some(cpus) = positive(w, "cpus", "") {
        out.cpus = cpus;
    }
    if let Some(memory) = positive(w, "memory", " of MiB") {
        out.memory = memory;
    }
    if let Some(accel) = t.str(w, "accel") {
        let modes = ["auto", "kvm", "tcg"];
        if modes.contains(&accel.as_str()) {
            out.accel = accel.value;
        } else {
            let hint = suggest::did_you_mean(&accel, modes)
                .unwrap_or_else(|| format!("use {}", suggest::list(modes)));
            w.error_hint(format!("unknown accel `{}`", accel.value), accel.span, hint);
        }
    }
    if let Some(size) = t.str(w, "disk_size") {
        let digits = size.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(&size);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            w.error_hint(
                format!("invalid disk size `{}`", size.value),
                size.span,
                "a number with an optional K, M, G or T suffix, e.g. `8G`",
            );
        } else {
            out.disk_size = Some(size.value);
        }
    }
    out
}
