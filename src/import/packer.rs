//! Packer's legacy JSON templates to a Pipelinefile (`pipe import packer FILE...`).
//!
//! - `variables` become `[vars]`: `{{user `X`}}` becomes `{{ vars.x }}`, a variable without a
//!   default (`null`) or whose default is `{{env `X`}}` reads the host variable `X`, and a
//!   `sensitive-variables` entry stays sensitive (read from the host, never written here).
//! - `amazon-ebs`, `docker` and `qemu` builders become `[box]` entries and environments
//!   (`staging` on ec2, `dev` on docker, `vm` on qemu); a docker box and `dev` are added when
//!   there is no docker builder, so that the result runs locally too.
//! - `file`, `shell` and `ansible`/`ansible-local` provisioners become `provision` entries with
//!   their environment variables.
//! - Two templates where one's `source_ami` is `{{user `X`}}` (the other's AMI, as in seed 2's
//!   `carnivore.json`) become `[base]` and `[app]`; one template becomes `[app]`.
//!
//! Whatever has no equivalent is listed as a note (at the top of the file and in the command's
//! output), never dropped silently. HCL2 templates (`.pkr.hcl`) are refused with a hint: no
//! HCL2 parser is used, and `packer hcl2_upgrade` only converts JSON to HCL2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value};

/// Why templates could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is an HCL2 template; pipe imports Packer's JSON templates only", .0.display())]
    Hcl2(PathBuf),
    #[error("{} is not a Packer JSON template: {message}", .path.display())]
    NotATemplate { path: PathBuf, message: String },
    #[error("{0}")]
    Layout(String),
}

impl ImportError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ImportError::Hcl2(_) => Some(
                "import the JSON template it came from, if you still have it (`packer hcl2_upgrade` converts JSON to HCL2, not back)"
                    .into(),
            ),
            ImportError::Layout(_) => Some(
                "give one template, or two where the app template's `source_ami` is `{{user `VAR`}}` (the base template's AMI)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The Pipelinefile written, and what was not imported.
#[derive(Debug)]
pub struct Imported {
    /// The Pipelinefile's text; the notes are in a comment at its top.
    pub text: String,
    pub notes: Vec<String>,
    /// The pipeline's name.
    pub name: String,
    /// Box recipes the file names (`boxes/NAME.toml` must exist for it to validate).
    pub box_recipes: Vec<String>,
}

/// The box recipe environments added for local runs use.
pub const LOCAL_BOX: &str = "debian-12";

/// One template, read.
struct Template {
    /// As given on the command line, for notes.
    shown: String,
    variables: IndexMap<String, Option<String>>,
    sensitive: Vec<String>,
    builders: Vec<Map<String, Value>>,
    provisioners: Vec<Map<String, Value>>,
    post_processors: usize,
}

/// A `[vars]` entry to write.
struct Var {
    /// The pipe name (lowercase).
    name: String,
    value: VarValue,
    sensitive: bool,
}

enum VarValue {
    Text(String),
    Host(String),
}

/// What the import collects on its way.
#[derive(Default)]
struct Out {
    vars: IndexMap<String, Var>,
    notes: Vec<String>,
}

impl Out {
    fn note(&mut self, text: String) {
        let text = text.replace('\n', " ");
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }
}

/// Reads the templates and writes the Pipelinefile's text. `name` is the pipeline's name
/// (default: from the AMI names, else `fallback_name`).
pub fn import(
    files: &[PathBuf],
    name: Option<&str>,
    fallback_name: &str,
) -> Result<Imported, ImportError> {
    let templates: Vec<Template> = files.iter().map(|f| read(f)).collect::<Result<_, _>>()?;
    let (base, app, chain) = match templates.as_slice() {
        [one] => (None, one, None),
        [a, b] => match (chained(a), chained(b)) {
            (None, Some(var)) => (Some(a), b, Some(var)),
            (Some(var), None) => (Some(b), a, Some(var)),
            (Some(_), Some(_)) => {
                return Err(ImportError::Layout(format!(
                    "{} and {} both take their source AMI from a variable: which one is the base?",
                    a.shown, b.shown
                )));
            }
            (None, None) => {
                return Err(ImportError::Layout(format!(
                    "neither {} nor {} takes the other's AMI as its `source_ami`",
                    a.shown, b.shown
                )));
            }
        },
        _ => {
            return Err(ImportError::Layout(format!(
                "{} templates given; pipe has two layers (base and app)",
                templates.len()
            )));
        }
    };
    let mut out = Out::default();
    if base.is_none() {
        out.note(format!(
            "{}: one template becomes [app]; move what changes rarely (OS packages, runtimes) to [base] so that app bakes reuse it",
            app.shown
        ));
    }
    for t in base.iter().copied().chain([app]) {
        vars(t, chain.as_deref(), &mut out);
        if t.post_processors > 0 {
            out.note(format!(
                "{}: post-processors ({}) have no equivalent: pipe records each release in its ledger, and `pipe promote` moves it",
                t.shown, t.post_processors
            ));
        }
    }
    // The builders of the first layer's template define the boxes and environments; the app
    // template's only say where its AMI comes from.
    let first = base.unwrap_or(app);
    let envs = builders(first, &mut out);
    if let Some(b) = base {
        for builder in &app.builders {
            for (key, value) in builder {
                if matches!(key.as_str(), "type" | "source_ami" | "ami_name" | "name") {
                    continue;
                }
                let same = b.builders.iter().any(|bb| bb.get(key) == Some(value));
                if !same {
                    out.note(format!(
                        "{}: builder option `{key}` differs from {}'s; the environments take {}'s",
                        app.shown, b.shown, b.shown
                    ));
                }
            }
            note_ami_name(app, builder, &mut out);
        }
    }
    let base_provision = base.map(|b| provisioners(b, &mut out)).unwrap_or_default();
    let app_provision = provisioners(app, &mut out);
    let name = name.map(str::to_string).unwrap_or_else(|| {
        pipeline_name(base.unwrap_or(app), app).unwrap_or_else(|| fallback_name.to_string())
    });

    let mut text = String::new();
    let sources = match base {
        Some(b) => format!("{} (base) and {} (app)", b.shown, app.shown),
        None => format!("{} (app)", app.shown),
    };
    let _ = writeln!(text, "# Imported by `pipe import packer` from {sources}.");
    if out.notes.is_empty() {
        let _ = writeln!(
            text,
            "# Everything in the templates has an equivalent here."
        );
    } else {
        let _ = writeln!(text, "# Not imported, or imported differently:");
        for n in &out.notes {
            let _ = writeln!(text, "#   - {n}");
        }
    }
    let _ = writeln!(text, "\n[pipeline]\nname = {}", quote(&name));
    if !out.vars.is_empty() {
        let _ = writeln!(text, "\n[vars]");
        for v in out.vars.values() {
            let value = match &v.value {
                VarValue::Text(t) if !v.sensitive => quote(t),
                VarValue::Text(t) => format!("{{ value = {}, sensitive = true }}", quote(t)),
                VarValue::Host(h) if v.sensitive => {
                    format!("{{ env = {}, sensitive = true }}", quote(h))
                }
                VarValue::Host(h) => format!("{{ env = {} }}", quote(h)),
            };
            let _ = writeln!(text, "{} = {value}", key(&v.name));
        }
    }
    let _ = writeln!(text, "\n[box]");
    let mut recipes = Vec::new();
    for e in &envs {
        let _ = writeln!(text, "{} = {}", e.kind, e.box_entry);
        if let Some(r) = &e.recipe {
            recipes.push(r.clone());
        }
    }
    for (layer, items) in [("base", &base_provision), ("app", &app_provision)] {
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(text, "\n[{layer}]\nprovision = [");
        for item in items {
            let _ = writeln!(text, "  {item},");
        }
        let _ = writeln!(text, "]");
    }
    for e in &envs {
        let _ = writeln!(text, "\n[env.{}]\ntarget = \"{}\"", e.name, e.kind);
        for (k, v) in &e.settings {
            let _ = writeln!(text, "{k} = {v}");
        }
    }
    recipes.dedup();
    Ok(Imported {
        text,
        notes: out.notes,
        name,
        box_recipes: recipes,
    })
}

fn read(path: &Path) -> Result<Template, ImportError> {
    let shown = path.display().to_string();
    if shown.ends_with(".hcl") || shown.ends_with(".pkr.hcl") {
        return Err(ImportError::Hcl2(path.to_path_buf()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let not = |message: String| ImportError::NotATemplate {
        path: path.to_path_buf(),
        message,
    };
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        if text.contains("source \"") || text.contains("build {") {
            ImportError::Hcl2(path.to_path_buf())
        } else {
            not(e.to_string())
        }
    })?;
    let Value::Object(top) = json else {
        return Err(not("the top level is not an object".into()));
    };
    let objects = |key: &str| -> Result<Vec<Map<String, Value>>, ImportError> {
        match top.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Object(o) => Ok(o.clone()),
                    _ => Err(not(format!("an entry of `{key}` is not an object"))),
                })
                .collect(),
            Some(_) => Err(not(format!("`{key}` is not an array"))),
        }
    };
    let mut variables = IndexMap::new();
    if let Some(Value::Object(vars)) = top.get("variables") {
        for (k, v) in vars {
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            variables.insert(k.clone(), value);
        }
    }
    let sensitive = match top.get("sensitive-variables") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let post_processors = match top.get("post-processors") {
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    let template = Template {
        shown,
        variables,
        sensitive,
        builders: objects("builders")?,
        provisioners: objects("provisioners")?,
        post_processors,
    };
    if template.builders.is_empty() {
        return Err(not("it has no `builders`".into()));
    }
    Ok(template)
}

/// The variable a template's builder takes its source AMI from, if it is only that.
fn chained(t: &Template) -> Option<String> {
    t.builders.iter().find_map(|b| {
        let s = b.get("source_ami")?.as_str()?;
        let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
        match expression(inner) {
            Expr::User(v) => Some(v),
            _ => None,
        }
    })
}

/// A Packer template expression, as far as pipe understands it.
enum Expr {
    User(String),
    Env(String),
    Timestamp,
    Other(String),
}

fn expression(inner: &str) -> Expr {
    let inner = inner.trim();
    let arg = |rest: &str| {
        rest.trim()
            .trim_matches(|c| c == '`' || c == '"')
            .to_string()
    };
    if let Some(rest) = inner.strip_prefix("user ") {
        Expr::User(arg(rest))
    } else if let Some(rest) = inner.strip_prefix("env ") {
        Expr::Env(arg(rest))
    } else if inner == "timestamp" {
        Expr::Timestamp
    } else {
        Expr::Other(inner.to_string())
    }
}

/// A pipe var name for a Packer variable.
fn var_name(packer: &str) -> String {
    packer.to_ascii_lowercase()
}

fn vars(t: &Template, chain: Option<&str>, out: &mut Out) {
    for (name, default) in &t.variables {
        if Some(name.as_str()) == chain {
            out.note(format!(
                "{}: variable `{name}` (the base AMI) is not needed: [app] is built on [base]",
                t.shown
            ));
            continue;
        }
        let sensitive = t.sensitive.contains(name);
        let host = default
            .as_deref()
            .and_then(|d| {
                d.trim()
                    .strip_prefix("{{")?
                    .strip_suffix("}}")
                    .map(expression)
            })
            .and_then(|e| match e {
                Expr::Env(h) => Some(h),
                _ => None,
            });
        let value = match (default, host) {
            (_, Some(h)) => VarValue::Host(h),
            (None, None) => VarValue::Host(name.clone()),
            (Some(_), None) if sensitive => {
                out.note(format!(
                    "{}: sensitive variable `{name}` is read from the host variable {name}; its default is not written here",
                    t.shown
                ));
                VarValue::Host(name.clone())
            }
            (Some(d), None) => VarValue::Text(d.clone()),
        };
        let pipe_name = var_name(name);
        if let Some(existing) = out.vars.get(&pipe_name) {
            let same = match (&existing.value, &value) {
                (VarValue::Text(a), VarValue::Text(b)) | (VarValue::Host(a), VarValue::Host(b)) => {
                    a == b
                }
                _ => false,
            };
            if !same {
                out.note(format!(
                    "{}: variable `{name}` has another default than in the base template; the base's is kept (override it per environment in [env.NAME].vars)",
                    t.shown
                ));
            }
            continue;
        }
        out.vars.insert(
            pipe_name.clone(),
            Var {
                name: pipe_name,
                value,
                sensitive,
            },
        );
    }
}

/// A Packer string with its expressions turned into pipe's templates; `what` says where it
/// is, for notes.
fn convert(raw: &str, what: &str, out: &mut Out) -> String {
    let mut s = String::new();
    let mut rest = raw;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        s.push_str(&rest[..open]);
        let inner = &rest[open + 2..open + close];
        match expression(inner) {
            Expr::User(v) => {
                let _ = write!(s, "{{{{ vars.{} }}}}", var_name(&v));
            }
            Expr::Timestamp => s.push_str("{{ timestamp }}"),
            Expr::Env(h) => {
                let name = format!("env_{}", var_name(&h));
                out.vars.entry(name.clone()).or_insert(Var {
                    name: name.clone(),
                    value: VarValue::Host(h),
                    sensitive: false,
                });
                let _ = write!(s, "{{{{ vars.{name} }}}}");
            }
            Expr::Other(e) => out.note(format!(
                "{what}: `{{{{{e}}}}}` has no equivalent in pipe's templates and was left out"
            )),
        }
        rest = &rest[open + close + 2..];
    }
    s.push_str(rest);
    s
}

/// A builder's value as a plain string: `{{user `X`}}` replaced by X's default (environment
/// settings are not templates).
fn plain(t: &Template, v: &Value, what: &str, out: &mut Out) -> Option<String> {
    let raw = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    let mut s = String::new();
    let mut rest = raw.as_str();
    while let Some(open) = rest.find("{{") {
        let close = rest[open..].find("}}")?;
        s.push_str(&rest[..open]);
        match expression(&rest[open + 2..open + close]) {
            Expr::User(var) => match t.variables.get(&var) {
                Some(Some(d)) => {
                    out.note(format!(
                        "{}: {what} takes `{var}`'s default `{d}`: environment settings are not templates",
                        t.shown
                    ));
                    s.push_str(d);
                }
                _ => {
                    out.note(format!(
                        "{}: {what} is `{raw}`, which has no value without Packer's -var: set it in the environment",
                        t.shown
                    ));
                    return None;
                }
            },
            _ => {
                out.note(format!(
                    "{}: {what} is `{raw}`, which pipe cannot evaluate: set it in the environment",
                    t.shown
                ));
                return None;
            }
        }
        rest = &rest[open + close + 2..];
    }
    s.push_str(rest);
    Some(s)
}

/// An environment to write, with its box.
struct Env {
    name: &'static str,
    kind: &'static str,
    box_entry: String,
    recipe: Option<String>,
    settings: Vec<(&'static str, String)>,
}

fn local_docker() -> Env {
    Env {
        name: "dev",
        kind: "docker",
        box_entry: format!("{{ box = {} }}", quote(LOCAL_BOX)),
        recipe: Some(LOCAL_BOX.to_string()),
        settings: Vec::new(),
    }
}

fn builders(t: &Template, out: &mut Out) -> Vec<Env> {
    let mut envs: Vec<Env> = Vec::new();
    for b in &t.builders {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        let env = match kind {
            "amazon-ebs" => ec2(t, b, out),
            "docker" => docker(t, b, out),
            "qemu" => qemu(t, b, out),
            other => {
                out.note(format!(
                    "{}: the `{other}` builder has no equivalent (pipe builds on docker, qemu and ec2)",
                    t.shown
                ));
                continue;
            }
        };
        if envs.iter().any(|e| e.kind == env.kind) {
            out.note(format!(
                "{}: a second `{kind}` builder was left out: one box per target kind",
                t.shown
            ));
            continue;
        }
        envs.push(env);
    }
    if !envs.iter().any(|e| e.kind == "docker") {
        out.note(format!(
            "added: a docker box (boxes/{LOCAL_BOX}.toml) and env `dev`, to run the same provisioners locally (`pipe up --local`, `pipe bake --env staging --local`)"
        ));
        envs.insert(0, local_docker());
    }
    envs
}

fn ec2(t: &Template, b: &Map<String, Value>, out: &mut Out) -> Env {
    let mut settings = Vec::new();
    let mut box_entry = None;
    for (k, v) in b {
        let what = format!("amazon-ebs `{k}`");
        match k.as_str() {
            "type" | "name" => {}
            "source_ami" => {
                box_entry = plain(t, v, &what, out).map(|ami| format!("{{ ami = {} }}", quote(&ami)));
            }
            "source_ami_filter" => {
                let name = v
                    .pointer("/filters/name")
                    .and_then(|n| plain(t, n, &what, out));
                let owners: Vec<String> = v
                    .get("owners")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|o| o.as_str().map(quote)).collect())
                    .unwrap_or_default();
                if let Some(name) = name {
                    box_entry = Some(format!(
                        "{{ ami_filter = {{ name = {}, owners = [{}] }} }}",
                        quote(&name),
                        owners.join(", ")
                    ));
                }
                if let Some(filters) = v.get("filters").and_then(Value::as_object) {
                    for f in filters.keys().filter(|f| *f != "name") {
                        out.note(format!(
                            "{}: source_ami_filter's `{f}` filter has no equivalent (pipe filters by name and owners, newest first)",
                            t.shown
                        ));
                    }
                }
            }
            "ami_name" => note_ami_name(t, b, out),
            "region" | "instance_type" | "ssh_username" | "subnet_id" | "iam_instance_profile" => {
                if let Some(s) = plain(t, v, &what, out) {
                    let key = match k.as_str() {
                        "region" => "region",
                        "instance_type" => "instance_type",
                        "ssh_username" => "ssh_username",
                        "subnet_id" => "subnet_id",
                        _ => "iam_instance_profile",
                    };
                    settings.push((key, quote(&s)));
                }
            }
            "associate_public_ip_address" => {
                if let Some(b) = v.as_bool() {
                    settings.push(("associate_public_ip", b.to_string()));
                }
            }
            "ssh_port" => {
                if let Some(n) = v.as_u64() {
                    settings.push(("ssh_port", n.to_string()));
                }
            }
            "security_group_id" | "security_group_ids" | "ami_regions" => {
                let items: Vec<String> = match v {
                    Value::Array(a) => a.iter().filter_map(|i| i.as_str().map(quote)).collect(),
                    Value::String(s) => vec![quote(s)],
                    _ => Vec::new(),
                };
                let key = if k == "ami_regions" {
                    "ami_regions"
                } else {
                    "security_group_ids"
                };
                settings.push((key, format!("[{}]", items.join(", "))));
            }
            "access_key" | "secret_key" | "token" | "profile" => out.note(format!(
                "{}: amazon-ebs `{k}` is not written: pipe takes AWS credentials from the environment (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)",
                t.shown
            )),
            _ => out.note(format!(
                "{}: amazon-ebs option `{k}` has no equivalent in pipe",
                t.shown
            )),
        }
    }
    Env {
        name: "staging",
        kind: "ec2",
        box_entry: box_entry.unwrap_or_else(|| {
            out.note(format!(
                "{}: no usable source AMI: [box] ec2 uses Debian 12's official AMIs",
                t.shown
            ));
            "{ ami_filter = { name = \"debian-12-amd64-*\", owners = [\"136693071363\"] } }".into()
        }),
        recipe: None,
        settings,
    }
}

fn note_ami_name(t: &Template, b: &Map<String, Value>, out: &mut Out) {
    if let Some(name) = b.get("ami_name").and_then(Value::as_str) {
        out.note(format!(
            "{}: ami_name `{name}` is not needed: pipe names AMIs after the pipeline and the layer digest (no {{{{timestamp}}}} to keep names unique)",
            t.shown
        ));
    }
}

fn docker(t: &Template, b: &Map<String, Value>, out: &mut Out) -> Env {
    let mut env = local_docker();
    for (k, v) in b {
        match k.as_str() {
            "type" | "name" | "commit" | "discard" => {}
            "image" => {
                if let Some(image) = plain(t, v, "docker `image`", out) {
                    env.box_entry = format!("{{ image = {} }}", quote(&image));
                    env.recipe = None;
                }
            }
            _ => out.note(format!(
                "{}: docker option `{k}` has no equivalent in pipe",
                t.shown
            )),
        }
    }
    env
}

fn qemu(t: &Template, b: &Map<String, Value>, out: &mut Out) -> Env {
    let url = b
        .get("iso_url")
        .and_then(|v| plain(t, v, "qemu `iso_url`", out));
    let checksum = b
        .get("iso_checksum")
        .and_then(Value::as_str)
        .map(|c| c.strip_prefix("sha256:").unwrap_or(c).to_string())
        .filter(|c| c.len() == 64 && c.chars().all(|ch| ch.is_ascii_hexdigit()));
    let disk_image = b.get("disk_image").and_then(Value::as_bool) == Some(true);
    let box_entry = match (url, checksum, disk_image) {
        (Some(url), Some(sum), true) => format!(
            "{{ image = {}, checksum = {} }}",
            quote(&url),
            quote(&format!("sha256:{sum}"))
        ),
        _ => {
            out.note(format!(
                "{}: the qemu builder boots an installer ISO, which pipe does not: [box] qemu uses boxes/{LOCAL_BOX}.toml (a cloud image with `disk_image = true` and a sha256 `iso_checksum` is kept)",
                t.shown
            ));
            format!("{{ box = {} }}", quote(LOCAL_BOX))
        }
    };
    let recipe = box_entry.contains("box =").then(|| LOCAL_BOX.to_string());
    let mut settings = Vec::new();
    for (k, v) in b {
        match k.as_str() {
            "type" | "name" | "iso_url" | "iso_checksum" | "disk_image" => {}
            "cpus" => settings.push(("cpus", v.to_string())),
            "memory" => settings.push(("memory", v.to_string())),
            "disk_size" => {
                if let Some(s) = plain(t, v, "qemu `disk_size`", out) {
                    // Packer's plain number is MiB.
                    let s = if s.chars().all(|c| c.is_ascii_digit()) {
                        format!("{s}M")
                    } else {
                        s
                    };
                    settings.push(("disk_size", quote(&s)));
                }
            }
            _ => out.note(format!(
                "{}: qemu option `{k}` has no equivalent in pipe",
                t.shown
            )),
        }
    }
    Env {
        name: "vm",
        kind: "qemu",
        box_entry,
        recipe,
        settings,
    }
}

/// The provision entries of a template, as TOML inline tables.
fn provisioners(t: &Template, out: &mut Out) -> Vec<String> {
    let mut items = Vec::new();
    for (i, p) in t.provisioners.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        let what = format!("{} provisioner {} ({kind})", t.shown, i + 1);
        for k in [
            "only",
            "except",
            "pause_before",
            "max_retries",
            "timeout",
            "override",
        ] {
            if p.contains_key(k) {
                out.note(format!("{what}: `{k}` has no equivalent in pipe"));
            }
        }
        let common = [
            "type",
            "only",
            "except",
            "pause_before",
            "max_retries",
            "timeout",
            "override",
        ];
        let unknown = |known: &[&str], out: &mut Out| {
            for k in p.keys() {
                if !known.contains(&k.as_str()) && !common.contains(&k.as_str()) {
                    out.note(format!("{what}: `{k}` has no equivalent in pipe"));
                }
            }
        };
        match kind {
            "file" => {
                unknown(&["source", "sources", "destination", "direction"], out);
                if p.get("direction").and_then(Value::as_str) == Some("download") {
                    out.note(format!(
                        "{what}: downloads from the machine have no equivalent and were left out"
                    ));
                    continue;
                }
                let to = p
                    .get("destination")
                    .and_then(Value::as_str)
                    .map(|d| convert(d, &what, out))
                    .unwrap_or_default();
                let sources: Vec<String> = match (p.get("source"), p.get("sources")) {
                    (Some(Value::String(s)), _) => vec![s.clone()],
                    (_, Some(Value::Array(a))) => a
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                for source in sources {
                    let source = folder_contents(&source, &to);
                    items.push(format!(
                        "{{ file = {}, to = {} }}",
                        quote(&source),
                        quote(&to)
                    ));
                }
            }
            "shell" => {
                unknown(&["script", "scripts", "inline", "environment_vars"], out);
                if p.contains_key("execute_command") {
                    out.note(format!(
                        "{what}: pipe runs a script by its shebang (or `sh`) as root, or as `run_as`"
                    ));
                }
                let env = environment_vars(p, &what, out);
                let env = if env.is_empty() {
                    String::new()
                } else {
                    format!(", env = {{ {} }}", env.join(", "))
                };
                if let Some(Value::String(s)) = p.get("script") {
                    items.push(format!("{{ shell = {}{env} }}", quote(s)));
                }
                if let Some(Value::Array(scripts)) = p.get("scripts") {
                    for s in scripts.iter().filter_map(Value::as_str) {
                        items.push(format!("{{ shell = {}{env} }}", quote(s)));
                    }
                }
                if let Some(Value::Array(lines)) = p.get("inline") {
                    let lines: Vec<String> = lines
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|l| quote(&convert(l, &what, out)))
                        .collect();
                    items.push(format!("{{ inline = [{}]{env} }}", lines.join(", ")));
                }
            }
            "ansible" | "ansible-local" => {
                unknown(&["playbook_file", "extra_arguments"], out);
                if kind == "ansible" {
                    out.note(format!(
                        "{what}: the playbook runs on the machine (`ansible-playbook -c local`), not from the host over SSH"
                    ));
                }
                let Some(playbook) = p.get("playbook_file").and_then(Value::as_str) else {
                    out.note(format!("{what}: no `playbook_file`; left out"));
                    continue;
                };
                let extra = extra_vars(p, &what, out);
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!(", extra_vars = {{ {} }}", extra.join(", "))
                };
                items.push(format!("{{ ansible = {}{extra} }}", quote(playbook)));
            }
            other => out.note(format!(
                "{}: the `{other}` provisioner has no equivalent and was left out",
                t.shown
            )),
        }
    }
    items
}

/// Packer uploads a folder `src` (no trailing `/`) whose name the destination ends with as
/// that destination (seed 2's `deploy/mailtube` to `/tmp/mailtube`); in pipe that is the
/// folder's contents, `src/`.
fn folder_contents(source: &str, to: &str) -> String {
    let name = source.rsplit('/').next().unwrap_or(source);
    let dest = to.trim_end_matches('/').rsplit('/').next().unwrap_or(to);
    if !source.ends_with('/') && !name.is_empty() && name == dest && Path::new(source).is_dir() {
        format!("{source}/")
    } else {
        source.to_string()
    }
}

/// `environment_vars = ["K=V"]` as `K = "V"` pairs.
fn environment_vars(p: &Map<String, Value>, what: &str, out: &mut Out) -> Vec<String> {
    let Some(Value::Array(vars)) = p.get("environment_vars") else {
        return Vec::new();
    };
    vars.iter()
        .filter_map(Value::as_str)
        .filter_map(|kv| {
            let Some((k, v)) = kv.split_once('=') else {
                out.note(format!(
                    "{what}: environment variable `{kv}` has no `=`; left out"
                ));
                return None;
            };
            Some(format!("{} = {}", key(k), quote(&convert(v, what, out))))
        })
        .collect()
}

/// `--extra-vars "k=v k2=v2"` (or `-e`) of `extra_arguments` as `k = "v"` pairs; the other
/// arguments are noted.
fn extra_vars(p: &Map<String, Value>, what: &str, out: &mut Out) -> Vec<String> {
    let Some(Value::Array(args)) = p.get("extra_arguments") else {
        return Vec::new();
    };
    let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let value = if a == "--extra-vars" || a == "-e" {
            i += 1;
            args.get(i).copied()
        } else {
            a.strip_prefix("--extra-vars=")
        };
        match value {
            Some(v) => {
                for kv in words(v) {
                    if let Some((k, v)) = kv.split_once('=') {
                        pairs.push(format!("{} = {}", key(k), quote(&convert(v, what, out))));
                    }
                }
            }
            None => out.note(format!(
                "{what}: ansible argument `{a}` has no equivalent in pipe"
            )),
        }
        i += 1;
    }
    pairs
}

/// `s` split at whitespace outside `{{ ... }}`.
fn words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (None, 0usize);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"{{") {
            depth += 1;
            start.get_or_insert(i);
            i += 2;
            continue;
        }
        if b[i..].starts_with(b"}}") && depth > 0 {
            depth -= 1;
            i += 2;
            continue;
        }
        if b[i].is_ascii_whitespace() && depth == 0 {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else {
            start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// The pipeline's name from the AMI names: their common start (`ponyfoo-primal ...` and
/// `ponyfoo-carnivore-...` give `ponyfoo`), made a valid name.
fn pipeline_name(first: &Template, app: &Template) -> Option<String> {
    let ami_name = |t: &Template| {
        t.builders.iter().find_map(|b| {
            b.get("ami_name")?
                .as_str()
                .map(|s| s.split("{{").next().unwrap_or("").to_string())
        })
    };
    let a = ami_name(first)?;
    let b = ami_name(app).unwrap_or_else(|| a.clone());
    let common: String = if std::ptr::eq(first, app) {
        a
    } else {
        a.chars()
            .zip(b.chars())
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| x)
            .collect()
    };
    let name = crate::config::parse::sanitize_name(&common);
    (!name.is_empty()).then_some(name)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_become_templates() {
        let mut out = Out::default();
        assert_eq!(
            convert("ponyfoo-{{user `NODE_ENV`}} {{timestamp}}", "x", &mut out),
            "ponyfoo-{{ vars.node_env }} {{ timestamp }}"
        );
        assert!(out.notes.is_empty());
        assert_eq!(convert("a{{isotime \"2006\"}}b", "here", &mut out), "ab");
        assert_eq!(out.notes.len(), 1);
        assert!(
            out.notes[0].starts_with("here: `{{isotime \"2006\"}}`"),
            "{:?}",
            out.notes
        );
        assert_eq!(
            convert("{{env `HOME`}}", "x", &mut out),
            "{{ vars.env_home }}"
        );
        assert!(matches!(out.vars["env_home"].value, VarValue::Host(ref h) if h == "HOME"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(key("NODE_ENV"), "NODE_ENV");
        assert_eq!(key("a.b"), "\"a.b\"");
    }

    /// One template with docker and qemu builders, inline commands and an ansible-local
    /// playbook: [app] alone, a box and an environment per builder, and a note for each
    /// thing without an equivalent.
    #[test]
    fn one_template_with_docker_qemu_inline_and_ansible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(
            &path,
            r#"{
              "variables": { "greeting": "hi", "home": "{{env `HOME`}}", "db_password": null },
              "sensitive-variables": ["db_password"],
              "builders": [
                { "type": "docker", "image": "debian:bookworm", "commit": true, "changes": ["EXPOSE 80"] },
                { "type": "qemu", "iso_url": "https://example.org/debian.qcow2", "iso_checksum": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "disk_image": true, "cpus": 2, "disk_size": 4096 },
                { "type": "virtualbox-iso" }
              ],
              "provisioners": [
                { "type": "shell", "inline": ["echo {{user `greeting`}} > /greeting", "date +{{isotime}}"], "environment_vars": ["PASS={{user `db_password`}}"], "execute_command": "sudo {{.Path}}" },
                { "type": "ansible-local", "playbook_file": "site.yml", "extra_arguments": ["--extra-vars", "who={{user `greeting`}}"] },
                { "type": "powershell", "inline": ["dir"] }
              ],
              "post-processors": [{ "type": "docker-tag" }]
            }"#,
        )
        .unwrap();
        let imported = import(&[path], Some("web"), "x").unwrap();
        let t = &imported.text;
        for line in [
            "[pipeline]\nname = \"web\"",
            "greeting = \"hi\"",
            "home = { env = \"HOME\" }",
            "db_password = { env = \"db_password\", sensitive = true }",
            "docker = { image = \"debian:bookworm\" }",
            "qemu = { image = \"https://example.org/debian.qcow2\", checksum = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\" }",
            "[app]\nprovision = [",
            "  { inline = [\"echo {{ vars.greeting }} > /greeting\", \"date +\"], env = { PASS = \"{{ vars.db_password }}\" } },",
            "  { ansible = \"site.yml\", extra_vars = { who = \"{{ vars.greeting }}\" } },",
            "[env.dev]\ntarget = \"docker\"",
            "[env.vm]\ntarget = \"qemu\"\ncpus = 2\ndisk_size = \"4096M\"",
        ] {
            assert!(t.contains(line), "{line}\n---\n{t}");
        }
        assert!(!t.contains("\n[base]\n"), "{t}");
        assert!(
            imported.box_recipes.is_empty(),
            "{:?}",
            imported.box_recipes
        );
        let notes = imported.notes.join("\n");
        for said in [
            "one template becomes [app]",
            "docker option `changes`",
            "the `virtualbox-iso` builder has no equivalent",
            "`{{isotime}}` has no equivalent",
            "`execute_command` has no equivalent",
            "the `powershell` provisioner has no equivalent",
            "post-processors (1)",
        ] {
            assert!(notes.contains(said), "{said}\n---\n{notes}");
        }
        // Every note is in the file's header too.
        for n in &imported.notes {
            assert!(t.contains(&format!("#   - {n}\n")), "{n}");
        }
    }

    #[test]
    fn extra_arguments() {
        let p: Map<String, Value> = serde_json::from_str(
            r#"{"extra_arguments": ["--extra-vars", "a=1 b={{user `X`}}", "-v"]}"#,
        )
        .unwrap();
        let mut out = Out::default();
        assert_eq!(
            extra_vars(&p, "p", &mut out),
            vec!["a = \"1\"", "b = \"{{ vars.x }}\""]
        );
        assert_eq!(
            out.notes,
            vec!["p: ansible argument `-v` has no equivalent in pipe"]
        );
    }
}
