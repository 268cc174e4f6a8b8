//! Box recipes (`boxes/NAME.toml`): parsing, validation, lookup and digests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BoxError;

/// Bumped whenever what `pipe box build` does to a rootfs changes, so every box is rebuilt.
pub const BOX_BUILD_VERSION: u32 = 1;

/// The folder recipes live in, next to the Pipelinefile.
pub const RECIPE_DIR: &str = "boxes";

/// What a box is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxTarget {
    Docker,
    Qemu,
}

impl BoxTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxTarget::Docker => "docker",
            BoxTarget::Qemu => "qemu",
        }
    }
}

impl std::fmt::Display for BoxTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The file stem: `debian-12`.
    pub name: String,
    pub path: PathBuf,
    pub description: Option<String>,
    pub suite: String,
    pub variant: String,
    pub components: Vec<String>,
    /// `None`: the host's mirror for `suite`.
    pub mirror: Option<String>,
    pub packages: Vec<String>,
    pub docker: DockerRecipe,
    pub qemu: QemuRecipe,
}

/// `[docker]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerRecipe {
    #[serde(default)]
    pub packages: Vec<String>,
}

/// `[qemu]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuRecipe {
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
    pub size: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeWire {
    #[serde(rename = "box")]
    box_: BoxWire,
    #[serde(default)]
    docker: DockerRecipe,
    #[serde(default)]
    qemu: QemuRecipe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxWire {
    description: Option<String>,
    suite: String,
    #[serde(default = "default_variant")]
    variant: String,
    components: Option<Vec<String>>,
    mirror: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

/// What the digest covers: everything that changes the built image, nothing else. Not the
/// description (a label for humans), not the other target's section, and not the host's
/// mirror when the recipe names none (where packages come from is not what they are). The
/// package lists of `[box]` and the target's section are one set: moving a package between
/// them, or reordering, builds the same image.
#[derive(Serialize)]
struct DigestInput<'a> {
    procedure: u32,
    target: &'static str,
    arch: &'static str,
    suite: &'a str,
    variant: &'a str,
    components: BTreeSet<&'a str>,
    mirror: Option<&'a str>,
    packages: BTreeSet<&'a str>,
    services: BTreeSet<&'a str>,
    size: Option<&'a str>,
}

impl Recipe {
    /// Finds `boxes/NAME.toml` in `start` or its nearest parent that has one; a `NAME` that is
    /// a path to a `.toml` file is loaded as is.
    pub fn find(name: &str, start: &Path) -> Result<Recipe, BoxError> {
        if name.ends_with(".toml") || name.contains('/') {
            return Recipe::load(&start.join(name));
        }
        check_name(name).map_err(|message| BoxError::Usage {
            message,
            hint: Some("box names are lowercase letters, digits, `.`, `-` and `_`".into()),
        })?;
        for dir in start.ancestors() {
            let path = dir.join(RECIPE_DIR).join(format!("{name}.toml"));
            if path.is_file() {
                return Recipe::load(&path);
            }
        }
        Err(BoxError::RecipeNotFound {
            name: name.to_string(),
            searched: start.to_path_buf(),
        })
    }

    /// Reads and validates a recipe file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Recipe, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| BoxError::Recipe {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Recipe::parse(&name, path, &text)
    }

    /// Parses and validates recipe text.
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Recipe, BoxError> {
        let invalid = |message: String| BoxError::Recipe {
            path: path.to_path_buf(),
            message,
        };
        check_name(name).map_err(invalid)?;
        let wire: RecipeWire = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let b = wire.box_;
        check_token("suite", &b.suite).map_err(invalid)?;
        check_token("variant", &b.variant).map_err(invalid)?;
        let components = b.components.unwrap_or_else(|| vec!["main".into()]);
        for c in &components {
            check_token("component", c).map_err(invalid)?;
        }
        if let Some(m) = &b.mirror
            && !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/"))
        {
            return Err(invalid(format!(
                "mirror {m:?} must be an http://, https:// or file:/ URL"
            )));
        }
        for p in b
            .packages
            .iter()
            .chain(&wire.docker.packages)
            .chain(&wire.qemu.packages)
        {
            check_package(p).map_err(invalid)?;
        }
        Ok(Recipe {
            name: name.to_string(),
            path: path.to_path_buf(),
            description: b.description,
            suite: b.suite,
            variant: b.variant,
            components,
            mirror: b.mirror,
            packages: b.packages,
            docker: wire.docker,
            qemu: wire.qemu,
        })
    }

    /// Every package debootstrap installs for `target`, sorted and unique.
    pub fn packages_for(&self, target: BoxTarget) -> Vec<String> {
        let extra = match target {
            BoxTarget::Docker => &self.docker.packages,
            BoxTarget::Qemu => &self.qemu.packages,
        };
        let set: BTreeSet<&String> = self.packages.iter().chain(extra).collect();
        set.into_iter().cloned().collect()
    }

    /// The sha256 (hex) of what determines the box for `target` (see [`DigestInput`]).
    pub fn digest(&self, target: BoxTarget) -> String {
        let packages = self.packages_for(target);
        let (services, size) = match target {
            BoxTarget::Docker => (BTreeSet::new(), None),
            BoxTarget::Qemu => (
                self.qemu.services.iter().map(String::as_str).collect(),
                self.qemu.size.as_deref(),
            ),
        };
        let input = DigestInput {
            procedure: BOX_BUILD_VERSION,
            target: target.as_str(),
            arch: debian_arch(),
            suite: &self.suite,
            variant: &self.variant,
            components: self.components.iter().map(String::as_str).collect(),
            mirror: self.mirror.as_deref(),
            packages: packages.iter().map(String::as_str).collect(),
            services,
            size,
        };
        let json = serde_json::to_vec(&input).expect("digest input serializes");
        hex::encode(Sha256::digest(&json))
    }
}

/// The Debian name of this machine's architecture.
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Box names become image repository names (`pipe-box/NAME`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid box name"))
    }
}

fn check_token(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {s:?} is not valid"))
    }
}

/// Debian package names (policy 5.6.1), optionally with `:arch`.
fn check_package(p: &str) -> Result<(), String> {
    let (name, arch) = p.split_once(':').unwrap_or((p, "any"));
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{p:?} is not a Debian package name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[box]
description = "test"
suite = "bookworm"
variant = "minbase"
packages = ["curl", "ca-certificates"]

[docker]
packages = []

[qemu]
packages = ["systemd-sysv"]
services = ["ssh"]
size = "4G"
"#;

    fn parse(text: &str) -> Recipe {
        Recipe::parse("t", Path::new("boxes/t.toml"), text).unwrap()
    }

    #[test]
    fn digest_ignores_what_does_not_change_the_image() {
        let base = parse(BASE);
        let d = base.digest(BoxTarget::Docker);
        let described = parse(&BASE.replace("description = \"test\"", "description = \"x\""));
        assert_eq!(described.digest(BoxTarget::Docker), d);
        let reordered = parse(&BASE.replace(
            r#"["curl", "ca-certificates"]"#,
            r#"["ca-certificates", "curl"]"#,
        ));
        assert_eq!(reordered.digest(BoxTarget::Docker), d);
        let moved = parse(
            &BASE
                .replace(r#"["curl", "ca-certificates"]"#, r#"["ca-certificates"]"#)
                .replace("[docker]\npackages = []", "[docker]\npackages = [\"curl\"]"),
        );
        assert_eq!(moved.digest(BoxTarget::Docker), d);
        let qemu_changed = parse(&BASE.replace("size = \"4G\"", "size = \"8G\""));
        assert_eq!(qemu_changed.digest(BoxTarget::Docker), d);
        assert_ne!(
            qemu_changed.digest(BoxTarget::Qemu),
            base.digest(BoxTarget::Qemu)
        );
    }

    #[test]
    fn digest_follows_what_does() {
        let d = parse(BASE).digest(BoxTarget::Docker);
        let more =
            parse(&BASE.replace("[docker]\npackages = []", "[docker]\npackages = [\"less\"]"));
        assert_ne!(more.digest(BoxTarget::Docker), d);
        let suite = parse(&BASE.replace("bookworm", "trixie"));
        assert_ne!(suite.digest(BoxTarget::Docker), d);
        assert_ne!(parse(BASE).digest(BoxTarget::Qemu), d);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_names() {
        let err = Recipe::parse("t", Path::new("t.toml"), &format!("{BASE}\n[box2]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("box2"), "{err}");
        let err = Recipe::parse(
            "t",
            Path::new("t.toml"),
            &BASE.replace("\"curl\"", "\"Curl!\""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Curl!"), "{err}");
        assert!(check_name("Debian").is_err());
        assert!(check_name("debian-12").is_ok());
    }

    #[test]
    fn the_shipped_recipe_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("boxes/debian-12.toml");
        if path.is_file() {
            let r = Recipe::load(&path).unwrap();
            assert_eq!(r.name, "debian-12");
            assert_eq!(r.suite, "bookworm");
        }
    }
}
