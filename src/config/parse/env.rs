//! `[env.NAME]`: target, var overrides, promotion source and target settings.

use std::time::Duration;

use indexmap::IndexMap;

use super::Known;
use crate::config::duration;
use crate::config::model::{
    DockerSettings, Environment, QemuSettings, Spanned, TargetKind, TargetSettings,
};
use crate::config::suggest;
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::{
    ACCELS, DOCKER_ENV_KEYS as DOCKER_KEYS, EC2_ENV_KEYS as EC2_KEYS, QEMU_ENV_KEYS as QEMU_KEYS,
    TARGET_KINDS as KINDS, env_keys,
};

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
    t.check_keys(w, &env_keys());
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
    let min_soak = min_soak(w, t);
    let require_approval = t.bool(w, "require_approval").unwrap_or(false);
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
        TargetKind::Ec2 => TargetSettings::Ec2(Box::new(super::ec2::settings(w, t))),
    };
    Some(Environment {
        name,
        target,
        vars,
        promote_from,
        min_soak,
        require_approval,
        settings,
        span: t.span,
    })
}

/// `min_soak = "2h"`: a duration with units ([`duration::parse`]), more than zero.
fn min_soak(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<Spanned<Duration>> {
    let v = t.get("min_soak")?;
    if let toml::de::DeValue::Integer(n) = v.get_ref() {
        w.error_hint(
            "`min_soak` is a duration with a unit, found a bare number",
            walk::span(v),
            format!(
                "write `min_soak = \"{}s\"` for seconds; {}",
                n.as_str(),
                duration::EXAMPLES
            ),
        );
        return None;
    }
    let text = t.str(w, "min_soak")?;
    match duration::parse(&text) {
        Ok(d) if d.is_zero() => {
            w.error_hint(
                "`min_soak` must be longer than zero",
                text.span,
                "leave it out for no soak time",
            );
            None
        }
        Ok(d) => Some(Spanned::new(d, text.span)),
        Err(why) => {
            w.error_hint(
                format!("invalid `min_soak`: {why}"),
                text.span,
                duration::EXAMPLES,
            );
            None
        }
    }
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
        let modes = ACCELS.iter().copied();
        if ACCELS.contains(&accel.as_str()) {
            out.accel = accel.value;
        } else {
            let hint = suggest::did_you_mean(&accel, modes)
                .unwrap_or_else(|| format!("use {}", suggest::list(ACCELS.iter().copied())));
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
