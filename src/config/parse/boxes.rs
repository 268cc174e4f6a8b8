//! `[box]` and `[build]`.

use std::path::{Path, PathBuf};

use toml::de::DeValue;

use crate::config::model::{BoxSource, Boxes, BuildSettings, ProxyMode, Spanned, TargetKind};
use crate::config::suggest;
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::{
    AMI_FILTER_KEYS, BOX_KEYS, BUILD_KEYS, PROXY_KEYS, QEMU_BOX_KEYS, TARGET_KINDS as KINDS,
};

/// `[box]`.
pub fn boxes(w: &mut Walker, root: &Tbl<'_, '_>, root_dir: &Path) -> Boxes {
    let mut out = Boxes::default();
    let Some(v) = root.get("box") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`box`", "[box]") else {
        return out;
    };
    for (key, key_span, v) in t.entries() {
        let Some(kind) = TargetKind::parse(key) else {
            let hint = suggest::did_you_mean(key, KINDS.iter().copied()).unwrap_or_else(|| {
                format!("target kinds are {}", suggest::list(KINDS.iter().copied()))
            });
            w.error_hint(
                format!("unknown target kind `{key}` in [box]"),
                key_span,
                hint,
            );
            continue;
        };
        let Some(entry) = walk::table(w, v, &format!("`{key}`"), format!("[box].{key}")) else {
            continue;
        };
        let Some(source) = box_entry(w, &entry, kind, root_dir) else {
            continue;
        };
        let slot = match kind {
            TargetKind::Docker => &mut out.docker,
            TargetKind::Qemu => &mut out.qemu,
            TargetKind::Ec2 => &mut out.ec2,
        };
        *slot = Some(Spanned::new(source, entry.span));
    }
    out
}

fn box_entry(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    kind: TargetKind,
    root_dir: &Path,
) -> Option<BoxSource> {
    let allowed = if kind == TargetKind::Qemu {
        QEMU_BOX_KEYS
    } else {
        BOX_KEYS
    };
    for (key, key_span, _) in t.entries() {
        if key == "checksum" && kind != TargetKind::Qemu {
            w.error_hint(
                format!("`checksum` is only for qemu boxes, not {kind}"),
                key_span,
                "`checksum` pins the download of a qemu `image`: remove it here",
            );
        } else if !allowed.contains(&key) {
            w.push(walk::unknown_key(key, key_span, &t.name, allowed));
        }
    }
    let present: Vec<&str> = t
        .entries()
        .map(|(k, _, _)| k)
        .filter(|k| BOX_KEYS.contains(k))
        .collect();
    match present.as_slice() {
        [] => {
            // An unknown key was probably meant as one of these; it has been reported.
            if t.entries().all(|(k, _, _)| k == "checksum") {
                t.missing_one_of(w, kind);
            }
            return None;
        }
        [_] => {}
        [first, second, ..] => {
            w.error_hint(
                format!("{} has both `{first}` and `{second}`", t.name),
                t.key_span(second).unwrap_or(t.span),
                "a box entry names exactly one base image: keep one",
            );
            return None;
        }
    }
    let key = present[0];
    let key_span = t.key_span(key).unwrap_or(t.span);
    let wrong_kind = match (key, kind) {
        ("ami" | "ami_filter", TargetKind::Docker | TargetKind::Qemu) => Some(format!(
            "{kind} boxes take `box` (a recipe in boxes/) or `image`"
        )),
        ("box" | "image", TargetKind::Ec2) => {
            Some("ec2 boxes take `ami` or `ami_filter`".to_string())
        }
        _ => None,
    };
    if let Some(hint) = wrong_kind {
        let only = if kind == TargetKind::Ec2 {
            "docker and qemu"
        } else {
            "ec2"
        };
        w.error_hint(
            format!("`{key}` is only for {only} boxes, not {kind}"),
            key_span,
            hint,
        );
        return None;
    }
    if kind == TargetKind::Qemu
        && key != "image"
        && let Some(span) = t.key_span("checksum")
    {
        w.error_hint(
            format!("`checksum` goes with `image`, not `{key}`"),
            span,
            "a recipe box is built by pipe, not downloaded: remove `checksum`",
        );
    }
    match key {
        "image" if kind == TargetKind::Qemu => cloud_image(w, t),
        "box" => {
            let name = t.str(w, "box")?;
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                w.error_hint(
                    format!("invalid box name `{}`", name.value),
                    name.span,
                    "a box name is the file name of a recipe in boxes/, without `.toml`",
                );
                return None;
            }
            recipe_must_exist(w, &name, root_dir);
            Some(BoxSource::Recipe(name.value))
        }
        "image" => Some(BoxSource::Image(t.str(w, "image")?.value)),
        "ami" => Some(BoxSource::Ami(t.str(w, "ami")?.value)),
        _ => {
            let f = t.table(w, "ami_filter", Some(format!("`ami_filter` in {}", t.name)))?;
            f.check_keys(w, AMI_FILTER_KEYS);
            let name = f.req_str(w, "name");
            if !f.has("owners") {
                f.missing(
                    w,
                    "owners",
                    Some(
                        "add the AWS accounts that publish the image, e.g. `owners = [\"136693071363\"]` (Debian); without them anyone's public AMI could match"
                            .into(),
                    ),
                );
            }
            let owners = f.str_array(w, "owners");
            Some(BoxSource::AmiFilter {
                name: name?.value,
                owners: owners?.into_iter().map(|o| o.value).collect(),
            })
        }
    }
}

/// `qemu = { image = "URL or path", checksum = "sha256:..." }`: a URL must be http(s) and
/// pinned by a checksum; a local path may be.
fn cloud_image(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<BoxSource> {
    let image = t.str(w, "image");
    let checksum = t.str(w, "checksum").and_then(|c| {
        match parse_checksum(&c.value) {
            Ok(hex) => Some(hex),
            Err(problem) => {
                w.error_hint(
                    format!("invalid checksum `{}`: {problem}", c.value),
                    c.span,
                    "write `checksum = \"sha256:<64 hex digits>\"`, as the image's SHA256SUMS lists it",
                );
                None
            }
        }
    });
    let image = image?;
    if let Some((scheme, _)) = image.value.split_once("://") {
        if !matches!(scheme, "http" | "https") {
            w.error_hint(
                format!(
                    "cannot download `{}`: only http and https URLs are supported",
                    image.value
                ),
                image.span,
                "use an http(s) URL, or a path relative to the Pipelinefile for a local file",
            );
            return None;
        }
        if !t.has("checksum") {
            w.error_hint(
                format!("the qemu image `{}` is downloaded but has no `checksum`", image.value),
                image.span,
                "add `checksum = \"sha256:<64 hex digits>\"` from the image's SHA256SUMS: pipe keeps a download only when it matches",
            );
            return None;
        }
    } else if image.value.is_empty() {
        w.error_hint(
            "the qemu `image` is empty",
            image.span,
            "give an http(s) URL or a path relative to the Pipelinefile",
        );
        return None;
    }
    if t.has("checksum") && checksum.is_none() {
        return None;
    }
    Some(BoxSource::CloudImage {
        image: image.value,
        checksum,
    })
}

/// `sha256:<64 hex>` → the lowercase hex digits.
fn parse_checksum(text: &str) -> Result<String, String> {
    let Some((algo, hex)) = text.split_once(':') else {
        return Err("it must start with `sha256:`".into());
    };
    if algo != "sha256" {
        return Err(format!("`{algo}` is not supported, only sha256"));
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("expected hex digits (0-9, a-f) after `sha256:`".into());
    }
    if hex.len() != 64 {
        return Err(format!(
            "expected 64 hex digits after `sha256:`, found {}",
            hex.len()
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// `box = "NAME"` needs `boxes/NAME.toml` next to the Pipelinefile.
fn recipe_must_exist(w: &mut Walker, name: &Spanned<String>, root_dir: &Path) {
    let rel = format!("boxes/{}.toml", name.value);
    if root_dir.join(&rel).is_file() {
        return;
    }
    let recipes: Vec<String> = std::fs::read_dir(root_dir.join("boxes"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let hint = match suggest::closest(name, recipes.iter().map(String::as_str)) {
        Some(c) => format!("did you mean `{c}`? (boxes/{c}.toml exists)"),
        None => format!(
            "write the recipe at {rel}, or use an image from a registry: `{{ image = \"...\" }}`"
        ),
    };
    w.error_hint(
        format!("box recipe `{rel}` does not exist"),
        name.span,
        hint,
    );
}

impl Tbl<'_, '_> {
    fn missing_one_of(&self, w: &mut Walker, kind: TargetKind) {
        let example = match kind {
            TargetKind::Ec2 => {
                "`{ ami_filter = { name = \"debian-12-amd64-*\", owners = [\"136693071363\"] } }`"
            }
            TargetKind::Docker => "`{ box = \"debian-12\" }` or `{ image = \"debian:bookworm\" }`",
            TargetKind::Qemu => {
                "`{ box = \"debian-12\" }` or `{ image = \"path/to/cloud-image.qcow2\" }`"
            }
        };
        w.error_hint(
            format!(
                "{} needs one of {}",
                self.name,
                suggest::list_or(BOX_KEYS.iter().copied())
            ),
            self.span,
            format!("e.g. {example}"),
        );
    }
}

/// `[build]`.
pub fn build(w: &mut Walker, root: &Tbl<'_, '_>, root_dir: &Path) -> BuildSettings {
    let mut out = BuildSettings::default();
    let Some(v) = root.get("build") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`build`", "[build]") else {
        return out;
    };
    t.check_keys(w, BUILD_KEYS);
    if let Some(paths) = t.str_array(w, "host_paths") {
        for p in paths {
            if Path::new(&p.value).is_absolute() {
                out.host_paths.push(PathBuf::from(&p.value));
            } else {
                w.error_hint(
                    format!("host path `{}` is not absolute", p.value),
                    p.span,
                    "`host_paths` names files or folders outside the project, e.g. `/etc/ssl/certs/corp.pem`; paths inside the project need no entry",
                );
            }
        }
    }
    if let Some(certs) = t.str_array(w, "ca_certificates") {
        out.ca_certificates = Vec::new();
        for c in certs {
            let p = PathBuf::from(&c.value);
            // The host's own store of extra CAs is what build trust is for: always allowed.
            let default = p == Path::new(crate::config::model::DEFAULT_CA_DIR);
            if !default && !crate::config::confine::is_allowed(root_dir, &out.host_paths, &p) {
                w.error_hint(
                    format!("certificate path `{}` is outside the project", c.value),
                    c.span,
                    format!(
                        "a Pipelinefile reads host files only inside its folder; to allow this one, add `host_paths = [\"{}\"]` to [build]",
                        crate::config::confine::resolve(root_dir, &p).display()
                    ),
                );
            }
            out.ca_certificates
                .push(if p.is_absolute() { p } else { root_dir.join(p) });
        }
    }
    if let Some(v) = t.get("proxy") {
        out.proxy = match v.get_ref() {
            DeValue::String(s) => match &**s {
                "inherit" => ProxyMode::Inherit,
                "none" => ProxyMode::None,
                other => {
                    let modes = ["inherit", "none"];
                    let hint = suggest::did_you_mean(other, modes).unwrap_or_else(|| {
                        "use `\"inherit\"`, `\"none\"`, or a table `{ http = \"...\", https = \"...\", no_proxy = \"...\" }`".into()
                    });
                    w.error_hint(format!("unknown proxy mode `{other}`"), walk::span(v), hint);
                    ProxyMode::Inherit
                }
            },
            DeValue::Table(_) => match walk::table(w, v, "`proxy`", "`proxy` in [build]") {
                Some(p) => {
                    p.check_keys(w, PROXY_KEYS);
                    ProxyMode::Explicit {
                        http: p.str(w, "http").map(|s| s.value),
                        https: p.str(w, "https").map(|s| s.value),
                        no_proxy: p.str(w, "no_proxy").map(|s| s.value),
                    }
                }
                None => ProxyMode::Inherit,
            },
            _ => {
                walk::type_error(w, v, "a string or a table", "`proxy`");
                ProxyMode::Inherit
            }
        };
    }
    if let Some(keep) = t.bool(w, "keep_build_trust") {
        out.keep_build_trust = keep;
    }
    if let Some(cache) = t.bool(w, "package_cache") {
        out.package_cache = cache;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_checksum;

    #[test]
    fn checksums_are_sha256_hex_lowercased() {
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).unwrap(),
            "ab".repeat(32)
        );
        assert!(parse_checksum(&hex).is_err());
        assert!(parse_checksum("sha512:00").is_err());
        assert!(parse_checksum("sha256:00").is_err());
        assert!(parse_checksum(&format!("sha256:{}", "g".repeat(64))).is_err());
    }
}
