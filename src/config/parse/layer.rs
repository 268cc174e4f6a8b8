//! `[base]` and `[app]`: precache and provisioners.

use indexmap::IndexMap;

use crate::config::model::{
    DEFAULT_PRECACHE_DIR, Layer, LayerName, Precache, Provisioner, ProvisionerKind, RestartOnly,
    ShellProvisioner, ShellSource,
};
use crate::config::suggest;
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::{
    ANSIBLE_KEYS, FILE_KEYS, INLINE_KEY, LAYER_KEYS, PRECACHE_KEYS, PROVISIONER_KINDS as KINDS,
    SHELL_KEY, SHELL_SETTINGS,
};

/// `[base]` or `[app]`.
pub fn layer(w: &mut Walker, root: &Tbl<'_, '_>, which: LayerName) -> Layer {
    let mut out = Layer::default();
    let name = format!("[{which}]");
    let Some(v) = root.get(which.as_str()) else {
        return out;
    };
    let Some(t) = walk::table(w, v, &format!("`{which}`"), name.clone()) else {
        return out;
    };
    t.check_keys(w, LAYER_KEYS);
    if let Some(v) = t.get("precache") {
        match which {
            LayerName::Base => {
                out.precache = walk::table(w, v, "`precache`", "[base].precache")
                    .and_then(|p| precache(w, &p));
            }
            LayerName::App => w.error_hint(
                "`precache` is only allowed in [base]",
                t.key_span("precache").unwrap_or(t.span),
                "dependencies are precached into the base layer so that app bakes stay fast: move it to [base]",
            ),
        }
    }
    if let Some(items) = t.array(w, "provision") {
        for item in items {
            let Some(p) = walk::table(w, item, "a provisioner", "this provisioner") else {
                continue;
            };
            if let Some(kind) = provisioner(w, p.clone()) {
                out.provision.push(Provisioner { kind, span: p.span });
            }
        }
    }
    out
}

fn precache(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<Precache> {
    t.check_keys(w, PRECACHE_KEYS);
    if !t.has("files") {
        t.missing(
            w,
            "files",
            Some(
                "list the dependency manifests, e.g. `files = [\"package.json\", \"package-lock.json\"]`"
                    .into(),
            ),
        );
    }
    let files = t.str_array(w, "files");
    if let Some(files) = &files {
        if files.is_empty() && t.get("files").is_some() {
            w.error_hint(
                "`files` is empty",
                walk::span(t.get("files").expect("present")),
                "list the dependency manifests the `run` command needs",
            );
        }
        // Files land in `to` by file name, so two with the same name would overwrite each other.
        let mut seen: IndexMap<&str, &str> = IndexMap::new();
        for f in files {
            let base = file_name(f);
            if let Some(first) = seen.insert(base, f) {
                w.error_hint(
                    format!(
                        "precache files `{first}` and `{}` have the same file name",
                        f.value
                    ),
                    f.span,
                    "precache files are uploaded by file name into one folder",
                );
            }
        }
    }
    let to = t.str(w, "to");
    if let Some(to) = &to {
        super::names::check_machine_path(
            w,
            "`to`",
            &crate::config::model::Template {
                raw: to.value.clone(),
                span: to.span,
            },
        );
    }
    if !t.has("run") {
        t.missing(
            w,
            "run",
            Some(
                "the command that installs the dependencies, e.g. `run = \"npm ci --omit=dev\"`"
                    .into(),
            ),
        );
    }
    let run = t.template(w, "run");
    let env = t.env_table(w, "env");
    Some(Precache {
        files: files?,
        to: to.map_or_else(|| DEFAULT_PRECACHE_DIR.to_string(), |t| t.value),
        run: run?,
        env,
        span: t.span,
    })
}

fn file_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn allowed_keys(kind: &str) -> Vec<&'static str> {
    match kind {
        "file" => FILE_KEYS.to_vec(),
        "ansible" => ANSIBLE_KEYS.to_vec(),
        "shell" => [&[SHELL_KEY.name], SHELL_SETTINGS].concat(),
        _ => [&[INLINE_KEY.name], SHELL_SETTINGS].concat(),
    }
}

/// Which kinds of provisioner take `key`, for "`retries` is a setting of ..." hints.
fn kinds_taking(key: &str) -> Vec<&'static str> {
    KINDS
        .iter()
        .copied()
        .filter(|k| allowed_keys(k).contains(&key))
        .collect()
}

fn provisioner(w: &mut Walker, mut t: Tbl<'_, '_>) -> Option<ProvisionerKind> {
    let kinds: Vec<&str> = t
        .entries()
        .map(|(k, _, _)| k)
        .filter(|k| KINDS.contains(k))
        .collect();
    let all: Vec<&str> =
        KINDS
            .iter()
            .flat_map(|k| allowed_keys(k))
            .fold(Vec::new(), |mut acc, k| {
                if !acc.contains(&k) {
                    acc.push(k);
                }
                acc
            });
    let kind = match kinds.as_slice() {
        [] => {
            let before = w.diags.len();
            t.check_keys(w, &all);
            // A misspelt kind key was just reported with its correction; don't pile on.
            if w.diags.len() == before {
                w.error_hint(
                    format!(
                        "a provisioner needs one of {}",
                        suggest::list_or(KINDS.iter().copied())
                    ),
                    t.span,
                    "e.g. `{ shell = \"provisioners/setup.sh\" }` or `{ inline = [\"apt-get update\"] }`",
                );
            }
            return None;
        }
        [one] => *one,
        [first, second, ..] => {
            w.error_hint(
                format!("a provisioner has one kind, this one has both `{first}` and `{second}`"),
                t.key_span(second).unwrap_or(t.span),
                "split it into two provisioners",
            );
            return None;
        }
    };
    t.name = format!("this {kind} provisioner");
    let allowed = allowed_keys(kind);
    for (key, key_span, _) in t.entries() {
        if allowed.contains(&key) {
            continue;
        }
        let mut d = walk::unknown_key(key, key_span, &t.name, &allowed);
        let takers = kinds_taking(key);
        if !takers.is_empty() {
            d.hint = Some(format!(
                "`{key}` is a setting of {} provisioners, not {kind}",
                takers.join(" and ")
            ));
        }
        w.push(d);
    }
    match kind {
        "file" => {
            let source = t.str(w, "file");
            if !t.has("to") {
                t.missing(
                    w,
                    "to",
                    Some("`to` is where it goes on the machine, e.g. `to = \"/opt/app\"`".into()),
                );
            }
            let to = t.template(w, "to");
            if let Some(to) = &to {
                super::names::check_machine_path(w, "`to`", to);
            }
            let owner = t.str(w, "owner").map(|o| o.value);
            let restart_only = restart_only(w, &t);
            Some(ProvisionerKind::File {
                source: source?,
                to: to?,
                owner,
                restart_only,
            })
        }
        "ansible" => {
            let playbook = t.str(w, "ansible");
            let extra_vars = template_table(w, &t, "extra_vars");
            let env = t.env_table(w, "env");
            Some(ProvisionerKind::Ansible {
                playbook: playbook?,
                extra_vars,
                env,
            })
        }
        _ => {
            let source = if kind == "shell" {
                t.str(w, "shell").map(ShellSource::Script)
            } else {
                t.template_array(w, "inline").map(ShellSource::Inline)
            };
            let settings = shell_settings(w, &t);
            Some(ProvisionerKind::Shell(ShellProvisioner {
                source: source?,
                ..settings
            }))
        }
    }
}

/// A table whose values are templates and whose keys are free (ansible's extra vars).
fn template_table(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    key: &str,
) -> IndexMap<String, crate::config::model::Template> {
    let mut out = IndexMap::new();
    if let Some(sub) = t.table(w, key, None) {
        for (name, _, v) in sub.entries() {
            if let Some(tpl) = walk::template(w, v, &format!("`{name}`")) {
                out.insert(name.to_string(), tpl);
            }
        }
    }
    out
}

fn shell_settings(w: &mut Walker, t: &Tbl<'_, '_>) -> ShellProvisioner {
    let retries = t.int(w, "retries").and_then(|r| {
        if r.value < 0 {
            w.error_hint(
                "`retries` cannot be negative",
                r.span,
                "it counts re-runs after a failure: 0 (the default) runs once",
            );
            return None;
        }
        u32::try_from(r.value).ok().or_else(|| {
            w.error("`retries` is too large", r.span);
            None
        })
    });
    let timeout = t.int(w, "timeout").and_then(|s| {
        if s.value <= 0 {
            w.error_hint(
                format!("`timeout` must be at least 1 second, found {}", s.value),
                s.span,
                "leave it out for no timeout",
            );
            return None;
        }
        Some(s.value as u64)
    });
    let valid_exit_codes = t.array(w, "valid_exit_codes").map(|items| {
        let mut codes = Vec::new();
        for v in items {
            let Some(c) = walk::integer(w, v, "an item of `valid_exit_codes`") else {
                continue;
            };
            if (0..=255).contains(&c.value) {
                codes.push(c.value as i32);
            } else {
                w.error_hint(
                    format!("exit code {} is out of range", c.value),
                    c.span,
                    "exit codes are 0 to 255",
                );
            }
        }
        codes
    });
    ShellProvisioner {
        source: ShellSource::Inline(Vec::new()),
        env: t.env_table(w, "env"),
        run_as: t.str(w, "run_as").map(|s| s.value),
        workdir: t.str(w, "workdir").map(|s| s.value),
        retries: retries.unwrap_or(0),
        valid_exit_codes: valid_exit_codes.unwrap_or_else(|| vec![0]),
        timeout,
    }
}

/// `restart_only = true | false | ["pattern", ...]`: each pattern in gitignore syntax.
fn restart_only(w: &mut Walker, t: &Tbl<'_, '_>) -> RestartOnly {
    let Some(v) = t.get("restart_only") else {
        return RestartOnly::No;
    };
    if let toml::de::DeValue::Boolean(b) = v.get_ref() {
        return if *b {
            RestartOnly::All
        } else {
            RestartOnly::No
        };
    }
    if !matches!(v.get_ref(), toml::de::DeValue::Array(_)) {
        walk::type_error(
            w,
            v,
            "`true`, `false` or an array of path patterns (`[\"*.js\", \"public/\"]`)",
            "`restart_only`",
        );
        return RestartOnly::No;
    }
    let Some(patterns) = t.str_array(w, "restart_only") else {
        return RestartOnly::No;
    };
    let mut out = Vec::new();
    for p in patterns {
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        let checked = b
            .add_line(None, &p.value)
            .and_then(|b| b.build().map(|_| ()));
        if let Err(e) = checked {
            w.error_hint(
                format!("`restart_only` pattern {:?} is not valid: {e}", p.value),
                p.span,
                "patterns use .gitignore syntax, relative to the uploaded folder: `*.js`, `public/`",
            );
            continue;
        }
        out.push(p.value);
    }
    RestartOnly::Paths(out)
}
