//! `[pipeline]` and `[vars]`.

use std::path::Path;

use indexmap::IndexMap;
use toml::de::DeValue;

use crate::config::diagnostic::Diagnostic;
use crate::config::keys::{PIPELINE_KEYS, VAR_KEYS};
use crate::config::model::{Pipeline, Span, Spanned, VarDef, VarSource};
use crate::config::walk::{self, Tbl, Walker};

/// `[pipeline]`; a placeholder name when it is missing (the diagnostic is recorded).
pub fn pipeline(w: &mut Walker, root: &Tbl<'_, '_>, root_dir: &Path) -> Pipeline {
    let mut out = Pipeline {
        name: Spanned::new(String::new(), Span::default()),
        description: None,
    };
    let suggested = root_dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(sanitize_name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "my-app".to_string());
    let Some(v) = root.t.get("pipeline") else {
        w.push(
            Diagnostic::whole_file("missing [pipeline] table").with_hint(format!(
                "add `[pipeline]` with `name = \"{suggested}\"` at the top of the file"
            )),
        );
        return out;
    };
    let Some(t) = walk::table(w, v, "`pipeline`", "[pipeline]") else {
        return out;
    };
    t.check_keys(w, PIPELINE_KEYS);
    if !t.has("name") {
        t.missing(w, "name", Some(format!("add `name = \"{suggested}\"`")));
    } else if let Some(name) = t.str(w, "name") {
        if !is_valid_name(&name) {
            let fixed = sanitize_name(&name);
            let example = if fixed.is_empty() { suggested } else { fixed };
            w.error_hint(
                format!("invalid pipeline name `{}`", name.value),
                name.span,
                format!(
                    "use lowercase letters, digits and `-` (it names images, containers and AMIs), e.g. `{example}`"
                ),
            );
        }
        out.name = name;
    }
    out.description = t.str(w, "description").map(|s| s.value);
    out
}

/// Lowercase letters, digits and inner dashes.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The closest valid name: lowercased, other characters turned into single dashes.
pub fn sanitize_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Characters a var name may use: what `{{ vars.NAME }}` accepts.
fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[vars]`.
pub fn vars(w: &mut Walker, root: &Tbl<'_, '_>) -> IndexMap<String, VarDef> {
    let mut out = IndexMap::new();
    let Some(v) = root.get("vars") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`vars`", "[vars]") else {
        return out;
    };
    for (name, name_span, v) in t.entries() {
        if !is_var_name(name) {
            w.error_hint(
                format!("var name `{name}` cannot be used in `{{{{ vars.NAME }}}}`"),
                name_span,
                "use letters, digits, `_` and `-`",
            );
        }
        if let Some(def) = var(w, name, name_span, v) {
            out.insert(name.to_string(), def);
        }
    }
    out
}

fn var(w: &mut Walker, name: &str, name_span: Span, v: &walk::Value<'_>) -> Option<VarDef> {
    let what = format!("var `{name}`");
    let mut def = VarDef {
        name: name.to_string(),
        source: VarSource::Value(String::new()),
        sensitive: false,
        description: None,
        span: name_span,
    };
    if !matches!(v.get_ref(), DeValue::Table(_)) {
        def.source = VarSource::Value(walk::scalar_text(w, v, &format!("`{name}`"))?.value);
        return Some(def);
    }
    let t = walk::table(w, v, &format!("`{name}`"), what.clone())?;
    t.check_keys(w, VAR_KEYS);
    let scalar = |w: &mut Walker, key: &str| {
        t.get(key)
            .and_then(|v| walk::scalar_text(w, v, &format!("`{key}`")))
    };
    let value = scalar(w, "value");
    let default = scalar(w, "default");
    let env = t.str(w, "env");
    if let Some(env) = env.as_ref().filter(|e| !walk::is_env_name(e)) {
        w.error_hint(
            format!("`{}` is not a valid environment variable name", env.value),
            env.span,
            "use letters, digits and `_`, not starting with a digit",
        );
    }
    match (t.has("value"), t.has("env")) {
        (true, true) => w.error_hint(
            format!("{what} has both `value` and `env`"),
            t.key_span("env").unwrap_or(t.span),
            "keep one: `value` for a fixed text, `env` to read it from the host",
        ),
        (false, false) => w.error_hint(
            format!("{what} needs `value` or `env`"),
            t.span,
            if t.has("default") {
                "`default` is the fallback for a host variable: add `env = \"HOST_VARIABLE\"`, or use `value` instead".to_string()
            } else {
                format!(
                    "e.g. `{name} = {{ value = \"...\" }}` or `{name} = {{ env = \"HOST_VARIABLE\" }}`"
                )
            },
        ),
        _ => {}
    }
    if t.has("default") && t.has("value") {
        w.error_hint(
            "`default` only applies with `env`",
            t.key_span("default").unwrap_or(t.span),
            "`default` is the fallback when the host variable named by `env` is unset; for a fixed text use `value` alone",
        );
    }
    def.sensitive = t.bool(w, "sensitive").unwrap_or(false);
    def.description = t.str(w, "description").map(|s| s.value);
    def.source = match env {
        Some(env) => VarSource::Env {
            name: env.value,
            default: default.map(|d| d.value),
        },
        None => VarSource::Value(value?.value),
    };
    Some(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("pony-foo2"));
        assert!(!is_valid_name("Pony"));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name("a_b"));
        assert_eq!(sanitize_name("My App_2"), "my-app-2");
    }
}
