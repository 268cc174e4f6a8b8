//! Variable resolution for one environment.
//!
//! Precedence, lowest to highest: `[vars]`, `[env.NAME].vars`, `PIPE_VAR_<name>`, `--var`.
//! A var read from the host (`env = "X"`) with no default and `X` unset is not an error here:
//! it is recorded in [`ResolvedVars::unset`], and [`ResolvedVars::require`] fails only for the
//! vars a command actually uses, so `pipe validate` passes without production secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use indexmap::IndexMap;

use super::model::{Pipelinefile, VarSource};
use super::suggest;
use super::template::Context;

/// A var's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVar {
    pub value: String,
    pub sensitive: bool,
    pub origin: VarOrigin,
}

/// Which level of the precedence chain set a var.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarOrigin {
    /// `[vars]`: a value, or the `default` of an `env` var whose host variable is unset.
    Default,
    /// `[vars]` `env = "NAME"`: the host variable `NAME`.
    HostEnv(String),
    /// `[env.NAME].vars`.
    Env(String),
    /// `PIPE_VAR_<name>` in the host environment.
    PipeVar,
    /// `--var name=value`.
    Cli,
}

impl std::fmt::Display for VarOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarOrigin::Default => f.write_str("[vars]"),
            VarOrigin::HostEnv(name) => write!(f, "host variable {name}"),
            VarOrigin::Env(env) => write!(f, "[env.{env}].vars"),
            VarOrigin::PipeVar => f.write_str("PIPE_VAR_*"),
            VarOrigin::Cli => f.write_str("--var"),
        }
    }
}

/// Every var of the Pipelinefile, resolved for one environment.
#[derive(Debug, Clone, Default)]
pub struct ResolvedVars {
    pub vars: IndexMap<String, ResolvedVar>,
    /// Vars read from an unset host variable with no default: var name → host variable.
    pub unset: IndexMap<String, String>,
}

/// Why vars could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    #[error("`--var {name}` sets a var that [vars] does not declare")]
    Undeclared { name: String, hint: String },
    #[error("unknown environment `{name}`")]
    UnknownEnv { name: String, hint: String },
    #[error("var `{var}` is read from the host variable {host}, which is unset")]
    Unset { var: String, host: String },
}

impl VarError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            VarError::Undeclared { hint, .. } | VarError::UnknownEnv { hint, .. } => hint.clone(),
            VarError::Unset { var, host } => format!(
                "export {host}, or pass `--var {var}=...`, or give the var a `default` in [vars]"
            ),
        }
    }
}

/// The name under which the host environment can set a var.
pub fn pipe_var_name(var: &str) -> String {
    format!("PIPE_VAR_{var}")
}

/// Resolves every declared var for `env` (`None`: no environment overlay).
/// `host` reads the host environment (`|k| std::env::var(k).ok()` in the binary).
pub fn resolve(
    pf: &Pipelinefile,
    env: Option<&str>,
    cli: &[(String, String)],
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedVars, VarError> {
    let declared = || pf.vars.keys().map(String::as_str);
    for (name, _) in cli {
        if !pf.vars.contains_key(name) {
            let hint = suggest::did_you_mean(name, declared()).unwrap_or_else(|| {
                if pf.vars.is_empty() {
                    "this Pipelinefile declares no vars".to_string()
                } else {
                    format!("declared vars are {}", suggest::list(declared()))
                }
            });
            return Err(VarError::Undeclared {
                name: name.clone(),
                hint,
            });
        }
    }
    let environment = match env {
        Some(name) => Some(pf.envs.get(name).ok_or_else(|| VarError::UnknownEnv {
            name: name.to_string(),
            hint: suggest::did_you_mean(name, pf.envs.keys().map(String::as_str)).unwrap_or_else(
                || {
                    format!(
                        "environments are {}",
                        suggest::list(pf.envs.keys().map(String::as_str))
                    )
                },
            ),
        })?),
        None => None,
    };
    let mut out = ResolvedVars::default();
    for (name, def) in &pf.vars {
        let base = match &def.source {
            VarSource::Value(v) => Some((v.clone(), VarOrigin::Default)),
            VarSource::Env {
                name: host_name,
                default,
            } => match host(host_name) {
                Some(v) => Some((v, VarOrigin::HostEnv(host_name.clone()))),
                None => default.clone().map(|d| (d, VarOrigin::Default)),
            },
        };
        let overlay = environment
            .and_then(|e| {
                e.vars
                    .get(name)
                    .map(|v| (v.value.clone(), e.name.value.clone()))
            })
            .map(|(v, e)| (v, VarOrigin::Env(e)));
        let pipe_var = host(&pipe_var_name(name)).map(|v| (v, VarOrigin::PipeVar));
        let flag = cli
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| (v.clone(), VarOrigin::Cli));
        match flag.or(pipe_var).or(overlay).or(base) {
            Some((value, origin)) => {
                out.vars.insert(
                    name.clone(),
                    ResolvedVar {
                        value,
                        sensitive: def.sensitive,
                        origin,
                    },
                );
            }
            None => {
                let VarSource::Env {
                    name: host_name, ..
                } = &def.source
                else {
                    unreachable!("a value var always resolves");
                };
                out.unset.insert(name.clone(), host_name.clone());
            }
        }
    }
    Ok(out)
}

impl ResolvedVars {
    /// Fails for the first of `used` whose host variable is unset.
    pub fn require<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Result<(), VarError> {
        for name in used {
            if let Some(host) = self.unset.get(name) {
                return Err(VarError::Unset {
                    var: name.to_string(),
                    host: host.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fails if any var is unset.
    pub fn require_all(&self) -> Result<(), VarError> {
        self.require(self.unset.keys().map(String::as_str))
    }

    /// The resolved value of a var.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.value.as_str())
    }

    /// Everything templates can refer to, for one run in `environment`.
    pub fn template_context(
        &self,
        pf: &Pipelinefile,
        environment: &str,
        host_env: BTreeMap<String, String>,
        timestamp: String,
        git_commit: String,
    ) -> Context {
        Context {
            vars: self
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            host_env,
            pipeline_name: pf.pipeline.name.value.clone(),
            environment: environment.to_string(),
            timestamp,
            git_commit,
        }
    }

    /// The values of sensitive vars, for redaction (empty values are skipped: they would
    /// redact everything).
    pub fn secrets(&self) -> Vec<&str> {
        self.vars
            .values()
            .filter(|v| v.sensitive && !v.value.is_empty())
            .map(|v| v.value.as_str())
            .collect()
    }
}

/// The short commit of the repository holding `root`, or `unknown`.
pub fn git_commit(root: &Path) -> String {
    git(root, &["rev-parse", "--short", "HEAD"])
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whether the repository holding `root` has uncommitted changes (false outside a repository).
pub fn git_dirty(root: &Path) -> bool {
    git(root, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty())
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Now, UTC, `YYYYMMDDHHMMSS`: the `{{ timestamp }}` of a run.
pub fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::template::render;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn pf(extra: &str) -> Pipelinefile {
        let src = format!(
            r#"
[pipeline]
name = "demo"

[vars]
level = "default"
host = {{ env = "HOST_LEVEL" }}
fallback = {{ env = "NOT_SET_ANYWHERE", default = "dflt" }}
token = {{ env = "TOKEN", sensitive = true }}
plain = {{ value = "p", description = "a plain one" }}
{extra}
[env.staging]
target = "docker"
vars = {{ level = "from-env" }}

[env.dev]
target = "docker"

[box]
docker = {{ image = "debian:bookworm" }}
"#
        );
        crate::config::parse::parse(&PathBuf::from("/nonexistent/Pipelinefile.toml"), src)
            .unwrap_or_else(|(d, s)| {
                panic!(
                    "{}",
                    crate::config::diagnostic::render(&d, Path::new("P"), &s)
                )
            })
    }

    fn host(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_level_overrides_the_one_below() {
        let pf = pf("");
        let none = host(&[]);
        let r = resolve(&pf, None, &[], &none).unwrap();
        assert_eq!(r.vars["level"].value, "default");
        assert_eq!(r.vars["level"].origin, VarOrigin::Default);

        let r = resolve(&pf, Some("staging"), &[], &none).unwrap();
        assert_eq!(r.vars["level"].value, "from-env");
        assert_eq!(r.vars["level"].origin, VarOrigin::Env("staging".into()));

        let pipe = host(&[("PIPE_VAR_level", "from-pipe-var")]);
        let r = resolve(&pf, Some("staging"), &[], &pipe).unwrap();
        assert_eq!(r.vars["level"].value, "from-pipe-var");
        assert_eq!(r.vars["level"].origin, VarOrigin::PipeVar);

        let cli = [
            ("level".to_string(), "first".to_string()),
            ("level".to_string(), "from-cli".to_string()),
        ];
        let r = resolve(&pf, Some("staging"), &cli, &pipe).unwrap();
        assert_eq!(r.vars["level"].value, "from-cli", "the last --var wins");
        assert_eq!(r.vars["level"].origin, VarOrigin::Cli);
    }

    #[test]
    fn env_overlay_only_applies_to_its_environment() {
        let pf = pf("");
        let r = resolve(&pf, Some("dev"), &[], &host(&[])).unwrap();
        assert_eq!(r.vars["level"].value, "default");
    }

    #[test]
    fn host_variables_defaults_and_unset() {
        let pf = pf("");
        let r = resolve(&pf, None, &[], &host(&[("HOST_LEVEL", "h")])).unwrap();
        assert_eq!(r.vars["host"].value, "h");
        assert_eq!(
            r.vars["host"].origin,
            VarOrigin::HostEnv("HOST_LEVEL".into())
        );
        assert_eq!(r.vars["fallback"].value, "dflt");
        assert_eq!(r.vars["fallback"].origin, VarOrigin::Default);
        assert_eq!(r.unset.get("token").map(String::as_str), Some("TOKEN"));
        assert!(r.require(["host", "level"]).is_ok());
        let err = r.require(["token"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "var `token` is read from the host variable TOKEN, which is unset"
        );
        assert!(r.require_all().is_err());
        // PIPE_VAR_ and --var can stand in for an unset host variable.
        let r = resolve(
            &pf,
            None,
            &[],
            &host(&[("PIPE_VAR_token", "t"), ("HOST_LEVEL", "h")]),
        )
        .unwrap();
        assert!(r.require_all().is_ok());
    }

    #[test]
    fn sensitive_values_are_secrets() {
        let pf = pf("");
        let r = resolve(&pf, None, &[], &host(&[("TOKEN", "s3cret")])).unwrap();
        assert!(r.vars["token"].sensitive);
        assert!(!r.vars["level"].sensitive);
        assert_eq!(r.secrets(), vec!["s3cret"]);
    }

    #[test]
    fn undeclared_cli_var_is_an_error_with_a_suggestion() {
        let pf = pf("");
        let cli = [("levle".to_string(), "x".to_string())];
        let err = resolve(&pf, None, &cli, &host(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`--var levle` sets a var that [vars] does not declare"
        );
        assert_eq!(err.hint(), "did you mean `level`?");
        let err = resolve(&pf, Some("stagin"), &[], &host(&[])).unwrap_err();
        assert_eq!(err.hint(), "did you mean `staging`?");
    }

    #[test]
    fn every_expression_renders() {
        let pf = pf("");
        let r = resolve(&pf, Some("staging"), &[], &host(&[])).unwrap();
        let mut host_env = BTreeMap::new();
        host_env.insert("USER".to_string(), "ada".to_string());
        let ctx = r.template_context(
            &pf,
            "staging",
            host_env,
            "20240102030405".into(),
            "abc1234".into(),
        );
        assert_eq!(render("{{ vars.level }}", &ctx), "from-env");
        assert_eq!(render("{{ vars.plain }}", &ctx), "p");
        assert_eq!(render("{{ env.USER }}", &ctx), "ada");
        assert_eq!(render("{{ env.UNSET_X }}", &ctx), "");
        assert_eq!(render("{{ pipeline.name }}", &ctx), "demo");
        assert_eq!(render("{{ environment }}", &ctx), "staging");
        assert_eq!(render("{{ timestamp }}", &ctx), "20240102030405");
        assert_eq!(render("{{ git.commit }}", &ctx), "abc1234");
        assert_eq!(
            render("{{pipeline.name}}-{{environment}}-{{ git.commit }}", &ctx),
            "demo-staging-abc1234"
        );
    }

    #[test]
    fn timestamp_and_git_outside_a_repository() {
        let ts = timestamp();
        assert_eq!(ts.len(), 14);
        assert!(ts.chars().all(|c| c.is_ascii_digit()));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(dir.path()), "unknown");
        assert!(!git_dirty(dir.path()));
    }
}
