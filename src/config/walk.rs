//! Typed getters over the spanned TOML tree. A getter that meets a problem records a
//! [`Diagnostic`] and returns `None`, so one pass finds every problem.
//!
//! A value the TOML parser had to make up while recovering from a syntax error has an empty
//! span; getters treat it as already reported and stay silent about it.

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use super::diagnostic::Diagnostic;
use super::model::{Span, Spanned, Template};
use super::suggest;

/// A value in the spanned tree.
pub type Value<'i> = toml::Spanned<DeValue<'i>>;

/// Collects diagnostics and every template met along the way (checked once all vars are known).
#[derive(Debug, Default)]
pub struct Walker {
    pub diags: Vec<Diagnostic>,
    pub templates: Vec<Template>,
}

impl Walker {
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub fn error(&mut self, message: impl Into<String>, span: Span) {
        self.diags.push(Diagnostic::new(message, span));
    }

    pub fn error_hint(&mut self, message: impl Into<String>, span: Span, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(message, span).with_hint(hint.into()));
    }
}

pub fn span<T>(v: &toml::Spanned<T>) -> Span {
    v.span().into()
}

/// True for a value invented by the parser's error recovery.
pub fn recovered(v: &Value<'_>) -> bool {
    v.span().is_empty()
}

/// `a string`, `an integer`, ...: for "expected X, found Y".
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reports `expected {expected} for {what}, found ...`, with a hint for the usual slips.
pub fn type_error(w: &mut Walker, v: &Value<'_>, expected: &str, what: &str) {
    let found = v.get_ref();
    let mut d = Diagnostic::new(
        format!("expected {expected} for {what}, found {}", type_name(found)),
        span(v),
    );
    let hint = match found {
        DeValue::String(s) if expected.contains("integer") && s.trim().parse::<i64>().is_ok() => {
            Some(format!("write the number without quotes: `{}`", s.trim()))
        }
        DeValue::String(s) if expected.contains("boolean") && matches!(&**s, "true" | "false") => {
            Some(format!("write it without quotes: `{s}`"))
        }
        DeValue::String(_) | DeValue::Table(_) if expected == "an array" => {
            Some("make it an array: wrap the value in `[ ]`".to_string())
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)
            if expected.starts_with("a string") =>
        {
            let text = raw_scalar(found);
            Some(format!("put it in quotes: `\"{text}\"`"))
        }
        _ => None,
    };
    if let Some(h) = hint {
        d = d.with_hint(h);
    }
    w.push(d);
}

/// The text of a scalar, as TOML wrote it.
pub fn raw_scalar(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => String::new(),
    }
}

/// A string value, or a type error.
pub fn string(w: &mut Walker, v: &Value<'_>, what: &str) -> Option<Spanned<String>> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::String(s) => Some(Spanned::new(s.to_string(), span(v))),
        _ => {
            type_error(w, v, "a string", what);
            None
        }
    }
}

/// A string, integer or boolean, as text (var values accept all three).
pub fn scalar_text(w: &mut Walker, v: &Value<'_>, what: &str) -> Option<Spanned<String>> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_) => {
            Some(Spanned::new(raw_scalar(v.get_ref()), span(v)))
        }
        _ => {
            type_error(w, v, "a string", what);
            None
        }
    }
}

/// A template string; remembered for the template checks.
pub fn template(w: &mut Walker, v: &Value<'_>, what: &str) -> Option<Template> {
    let s = string(w, v, what)?;
    let t = Template {
        raw: s.value,
        span: s.span,
    };
    w.templates.push(t.clone());
    Some(t)
}

/// An integer value (any size that fits i64).
pub fn integer(w: &mut Walker, v: &Value<'_>, what: &str) -> Option<Spanned<i64>> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Spanned::new(n, span(v))),
            Err(_) => {
                w.error(format!("{what} is too large"), span(v));
                None
            }
        },
        _ => {
            type_error(w, v, "an integer", what);
            None
        }
    }
}

/// A boolean value.
pub fn boolean(w: &mut Walker, v: &Value<'_>, what: &str) -> Option<Spanned<bool>> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::Boolean(b) => Some(Spanned::new(*b, span(v))),
        _ => {
            type_error(w, v, "a boolean (`true` or `false`)", what);
            None
        }
    }
}

/// An array's items.
pub fn array<'t, 'i>(w: &mut Walker, v: &'t Value<'i>, what: &str) -> Option<&'t [Value<'i>]> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::Array(a) => Some(a),
        _ => {
            type_error(w, v, "an array", what);
            None
        }
    }
}

/// A table, wrapped for keyed access; `name` is how messages refer to it.
pub fn table<'t, 'i>(
    w: &mut Walker,
    v: &'t Value<'i>,
    what: &str,
    name: impl Into<String>,
) -> Option<Tbl<'t, 'i>> {
    if recovered(v) {
        return None;
    }
    match v.get_ref() {
        DeValue::Table(t) => Some(Tbl {
            t,
            span: span(v),
            name: name.into(),
        }),
        _ => {
            type_error(w, v, "a table", what);
            None
        }
    }
}

/// A table in the tree, with its span (header or `{ ... }`) and how messages name it.
#[derive(Clone)]
pub struct Tbl<'t, 'i> {
    pub t: &'t DeTable<'i>,
    pub span: Span,
    /// `[pipeline]`, `[env.dev]`, `this shell provisioner`, ...
    pub name: String,
}

impl<'t, 'i> Tbl<'t, 'i> {
    pub fn new(t: &'t DeTable<'i>, span: Span, name: impl Into<String>) -> Self {
        Self {
            t,
            span,
            name: name.into(),
        }
    }

    /// The value under `key`, unless absent or invented by error recovery.
    pub fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.t.get(key).filter(|v| !recovered(v))
    }

    /// Whether `key` was written at all (even with a broken value).
    pub fn has(&self, key: &str) -> bool {
        self.t.contains_key(key)
    }

    /// The span of `key` itself.
    pub fn key_span(&self, key: &str) -> Option<Span> {
        self.t
            .get_key_value(key)
            .map(|(k, _)| span(k))
            .filter(|s| s.start != s.end)
    }

    /// Keys with their spans, in source order.
    pub fn entries(&self) -> impl Iterator<Item = (&'t str, Span, &'t Value<'i>)> + use<'t, 'i> {
        self.t.iter().map(|(k, v)| (&**k.get_ref(), span(k), v))
    }

    /// Reports every key not in `allowed`, with the closest allowed key as a hint.
    pub fn check_keys(&self, w: &mut Walker, allowed: &[&str]) {
        for (key, key_span, _) in self.entries() {
            if !allowed.contains(&key) {
                w.push(unknown_key(key, key_span, &self.name, allowed));
            }
        }
    }

    /// Reports a missing required key at the table's header or braces.
    pub fn missing(&self, w: &mut Walker, key: &str, hint: Option<String>) {
        let mut d = Diagnostic::new(format!("{} is missing `{key}`", self.name), self.span);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        w.push(d);
    }

    fn what(&self, key: &str) -> String {
        format!("`{key}`")
    }

    pub fn str(&self, w: &mut Walker, key: &str) -> Option<Spanned<String>> {
        self.get(key).and_then(|v| string(w, v, &self.what(key)))
    }

    pub fn req_str(&self, w: &mut Walker, key: &str) -> Option<Spanned<String>> {
        if !self.has(key) {
            self.missing(w, key, None);
            return None;
        }
        self.str(w, key)
    }

    pub fn template(&self, w: &mut Walker, key: &str) -> Option<Template> {
        self.get(key).and_then(|v| template(w, v, &self.what(key)))
    }

    pub fn req_template(&self, w: &mut Walker, key: &str) -> Option<Template> {
        if !self.has(key) {
            self.missing(w, key, None);
            return None;
        }
        self.template(w, key)
    }

    pub fn int(&self, w: &mut Walker, key: &str) -> Option<Spanned<i64>> {
        self.get(key).and_then(|v| integer(w, v, &self.what(key)))
    }

    pub fn bool(&self, w: &mut Walker, key: &str) -> Option<bool> {
        self.get(key)
            .and_then(|v| boolean(w, v, &self.what(key)))
            .map(|b| b.value)
    }

    pub fn array(&self, w: &mut Walker, key: &str) -> Option<&'t [Value<'i>]> {
        self.get(key).and_then(|v| array(w, v, &self.what(key)))
    }

    /// A sub-table, named `{self.name}.key` in messages unless `name` is given.
    pub fn table(&self, w: &mut Walker, key: &str, name: Option<String>) -> Option<Tbl<'t, 'i>> {
        let name = name.unwrap_or_else(|| format!("`{key}` in {}", self.name));
        self.get(key)
            .and_then(|v| table(w, v, &self.what(key), name))
    }

    /// An array of strings.
    pub fn str_array(&self, w: &mut Walker, key: &str) -> Option<Vec<Spanned<String>>> {
        let items = self.array(w, key)?;
        let what = format!("`{key}`");
        Some(
            items
                .iter()
                .filter_map(|v| string(w, v, &format!("an item of {what}")))
                .collect(),
        )
    }

    /// An array of templates.
    pub fn template_array(&self, w: &mut Walker, key: &str) -> Option<Vec<Template>> {
        let items = self.array(w, key)?;
        let what = format!("`{key}`");
        Some(
            items
                .iter()
                .filter_map(|v| template(w, v, &format!("an item of {what}")))
                .collect(),
        )
    }

    /// A table of environment variables whose values are templates.
    pub fn env_table(&self, w: &mut Walker, key: &str) -> IndexMap<String, Template> {
        let mut out = IndexMap::new();
        let Some(t) = self.table(w, key, None) else {
            return out;
        };
        for (name, name_span, v) in t.entries() {
            if !is_env_name(name) {
                w.error_hint(
                    format!("`{name}` is not a valid environment variable name"),
                    name_span,
                    "use letters, digits and `_`, not starting with a digit",
                );
            }
            if let Some(t) = template(w, v, &format!("`{name}`")) {
                out.insert(name.to_string(), t);
            }
        }
        out
    }
}

/// `unknown key` with a did-you-mean, or the list of allowed keys.
pub fn unknown_key(key: &str, key_span: Span, table: &str, allowed: &[&str]) -> Diagnostic {
    let hint = suggest::did_you_mean(key, allowed.iter().copied()).unwrap_or_else(|| {
        if allowed.is_empty() {
            format!("{table} takes no keys")
        } else {
            format!("{table} takes {}", suggest::list(allowed.iter().copied()))
        }
    });
    Diagnostic::new(format!("unknown key `{key}` in {table}"), key_span).with_hint(hint)
}

/// A POSIX-ish environment variable name.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
