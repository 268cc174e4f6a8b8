//! Docker boxes: a debootstrapped rootfs imported as `pipe-box/NAME:<digest12>` (and
//! `pipe-box/NAME:latest`), labelled with the box name and the recipe digest so an unchanged
//! recipe is never rebuilt.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::rootfs::{self, Rootfs};
use super::{BoxError, BoxTarget, Recipe, lock_file};
use crate::engine::docker::{DockerClient, ImageConfig, ImageInfo};
use crate::process;
use crate::ui::Printer;

/// Label holding the box name.
pub const BOX_LABEL: &str = "pipe.box";
/// Label holding the recipe digest for the docker target.
pub const DIGEST_LABEL: &str = "pipe.box.digest";
/// Image repository prefix: `pipe-box/NAME`.
pub const REPO_PREFIX: &str = "pipe-box/";

/// The `PATH` Docker's official images set (an imported rootfs has no config at all).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A built docker box.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoxImage {
    pub name: String,
    /// The recipe digest it was built from.
    pub digest: String,
    /// What to create containers from: `pipe-box/NAME:<digest12>` (or the id if untagged).
    pub image: String,
    /// `sha256:...`.
    pub id: String,
    /// Whether `pipe-box/NAME:latest` points at it.
    pub latest: bool,
    /// Unix seconds.
    pub created: i64,
    pub size: i64,
    /// True when this call built it, false when it was up to date.
    pub built: bool,
}

/// `pipe-box/NAME`.
pub fn repo(name: &str) -> String {
    format!("{REPO_PREFIX}{name}")
}

/// The tag for a digest: its first 12 hex digits.
pub fn digest_tag(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// The image of box `name` built from `digest`, if there is one.
///
/// Found by its tag `pipe-box/NAME:<digest12>`, then checked by label: labels alone are not
/// enough, since every image committed from a box container inherits them.
pub fn find_docker_box(
    client: &DockerClient,
    name: &str,
    digest: &str,
) -> Result<Option<BoxImage>, BoxError> {
    let tag = format!("{}:{}", repo(name), digest_tag(digest));
    let Some(info) = client.inspect_image(&tag)? else {
        return Ok(None);
    };
    let matches = info.labels.get(BOX_LABEL).map(String::as_str) == Some(name)
        && info.labels.get(DIGEST_LABEL).map(String::as_str) == Some(digest);
    Ok(if matches { box_image(info) } else { None })
}

/// Builds the docker box for `recipe` unless an image with its digest exists (or `force`).
/// Returns the image to use. Safe to call from several processes at once: one builds, the
/// others wait and reuse.
pub fn build_docker_box(
    client: &DockerClient,
    recipe: &Recipe,
    printer: &Printer,
    force: bool,
) -> Result<BoxImage, BoxError> {
    let digest = recipe.digest(BoxTarget::Docker);
    let lock_path = super::cache_dir()
        .join("locks")
        .join(format!("box-{}.lock", recipe.name));
    let io = |step: &'static str| {
        let name = recipe.name.clone();
        move |source| BoxError::Io {
            name,
            step: step.into(),
            source,
        }
    };
    let _lock = lock_file(&lock_path).map_err(io("lock the box"))?;

    if !force && let Some(found) = find_docker_box(client, &recipe.name, &digest)? {
        if !found.latest {
            client.tag_image(&found.id, &repo(&recipe.name), "latest")?;
        }
        printer.emit(crate::ui::Event::Step {
            step: format!("box {}", recipe.name),
            status: crate::ui::StepStatus::Skipped,
            detail: Some(format!("up to date ({})", found.image)),
            elapsed_ms: None,
        });
        return Ok(BoxImage {
            latest: true,
            ..found
        });
    }

    let started = Instant::now();
    // A forced rebuild moves the digest's tag; the image it pointed at is dropped afterwards.
    let previous = client
        .inspect_image(&format!("{}:{}", repo(&recipe.name), digest_tag(&digest)))?
        .map(|i| i.id);
    let rootfs = rootfs::build_rootfs(recipe, BoxTarget::Docker, printer)?;
    configure_docker(rootfs.path()).map_err(io("configure the rootfs for docker"))?;
    let built = import(client, recipe, &digest, &rootfs, printer);
    // The rootfs goes either way; a failure to remove it must not hide a build error.
    let removed = rootfs.remove();
    let image = built?;
    if let Err(e) = removed {
        printer.warn(e.to_string(), e.hint());
    }

    if let Some(old) = previous.filter(|old| *old != image.id)
        && client
            .inspect_image(&old)?
            .is_some_and(|i| i.tags.is_empty())
    {
        // Kept when a container or a layer image still uses it.
        let _ = client.remove_image(&old, false);
    }
    let secs = started.elapsed().as_secs_f64();
    printer.info(format!(
        "box {} built in {secs:.0}s ({})",
        recipe.name, image.image
    ));
    Ok(image)
}

/// What Docker's official debian images have and a debootstrapped rootfs lacks.
fn configure_docker(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(
        &policy,
        "#!/bin/sh\n# pipe: packages never start services while a layer is provisioned.\nexit 101\n",
    )?;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))?;
    let conf = root.join("etc/apt/apt.conf.d");
    std::fs::create_dir_all(&conf)?;
    let clean = r#"DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"#;
    std::fs::write(conf.join("docker-clean"), clean)?;
    std::fs::write(
        conf.join("docker-no-languages"),
        "Acquire::Languages \"none\";\n",
    )?;
    std::fs::write(
        conf.join("docker-no-recommends"),
        "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
    )?;
    std::fs::write(
        conf.join("docker-autoremove-suggests"),
        "Apt::AutoRemove::SuggestsImportant \"false\";\n",
    )?;
    Ok(())
}

/// Tars the rootfs and imports it through the Engine API, then tags `latest`.
fn import(
    client: &DockerClient,
    recipe: &Recipe,
    digest: &str,
    rootfs: &Rootfs,
    printer: &Printer,
) -> Result<BoxImage, BoxError> {
    let repo = repo(&recipe.name);
    let tag = digest_tag(digest);
    let step = printer.step(format!("box {}: import {repo}:{tag}", recipe.name));
    let config = ImageConfig {
        cmd: Some(vec!["bash".into()]),
        env: [("PATH".to_string(), PATH.to_string())].into(),
        labels: [
            (BOX_LABEL.to_string(), recipe.name.clone()),
            (DIGEST_LABEL.to_string(), digest.to_string()),
        ]
        .into(),
        ..ImageConfig::default()
    };
    let res = client
        .import_image(&repo, tag, &config, |w| tar_rootfs(rootfs.path(), w))
        .map_err(BoxError::from)
        .and_then(|_| {
            client
                .tag_image(&format!("{repo}:{tag}"), &repo, "latest")
                .map_err(Into::into)
        })
        .and_then(|()| {
            find_docker_box(client, &recipe.name, digest)?.ok_or(BoxError::NotBuilt {
                name: recipe.name.clone(),
                target: "docker",
            })
        });
    match res {
        Ok(image) => {
            step.done(Some(format!("{} MB", image.size / 1_000_000)));
            Ok(BoxImage {
                built: true,
                ..image
            })
        }
        Err(_) if crate::interrupt::requested() => {
            step.failed(None);
            Err(BoxError::Interrupted)
        }
        Err(e) => {
            step.failed(None);
            Err(e)
        }
    }
}

/// Streams `tar -c` of the rootfs (numeric owners, xattrs such as file capabilities, hard
/// links as links) into `out`; /dev, /proc and /sys stay empty (the engine provides them).
fn tar_rootfs(root: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--create",
        "--file=-",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--exclude=./dev/*",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        "--exclude=./debootstrap",
    ])
    .arg("--directory")
    .arg(root)
    .arg(".")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd)?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut buf = vec![0u8; 256 * 1024];
    let copied = loop {
        if crate::interrupt::requested() {
            break Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = out.write_all(&buf[..n]) {
                    break Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if copied.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait()?;
    let stderr = errs.join().unwrap_or_default();
    copied?;
    process::check(&cmd, status, stderr.as_bytes())?;
    Ok(())
}

/// Every docker box image (tagged `pipe-box/NAME:...`), by name, newest first.
pub fn list_docker_boxes(client: &DockerClient) -> Result<Vec<BoxImage>, BoxError> {
    let mut out: Vec<BoxImage> = client
        .images_by_labels(&[BOX_LABEL])?
        .into_iter()
        .filter(is_box_image)
        .filter_map(box_image)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(b.created.cmp(&a.created)));
    Ok(out)
}

/// Removes the `pipe-box/NAME:*` tags of every image of box `name`; an image whose last tag
/// goes is deleted (the engine keeps it while a container or a layer image uses it, and other
/// tags on it are left alone). Returns the image ids.
pub fn remove_docker_box(client: &DockerClient, name: &str) -> Result<Vec<String>, BoxError> {
    let images: Vec<ImageInfo> = client
        .images_by_labels(&[&format!("{BOX_LABEL}={name}")])?
        .into_iter()
        .filter(is_box_image)
        .collect();
    if images.is_empty() {
        return Err(BoxError::NotBuilt {
            name: name.to_string(),
            target: "docker",
        });
    }
    let prefix = format!("{}:", repo(name));
    let mut removed = Vec::new();
    for image in images {
        for tag in image.tags.iter().filter(|t| t.starts_with(&prefix)) {
            client.remove_image(tag, false)?;
        }
        removed.push(image.id);
    }
    Ok(removed)
}

/// Tagged as its own box: images committed from a box container carry its labels too.
fn is_box_image(i: &ImageInfo) -> bool {
    i.labels.get(BOX_LABEL).is_some_and(|name| {
        let prefix = format!("{}:", repo(name));
        !name.is_empty() && i.tags.iter().any(|t| t.starts_with(&prefix))
    })
}

fn box_image(i: ImageInfo) -> Option<BoxImage> {
    let name = i.labels.get(BOX_LABEL)?.clone();
    let digest = i.labels.get(DIGEST_LABEL).cloned().unwrap_or_default();
    let repo = repo(&name);
    let latest = i.tags.iter().any(|t| *t == format!("{repo}:latest"));
    let image = i
        .tags
        .iter()
        .find(|t| t.starts_with(&format!("{repo}:")) && !t.ends_with(":latest"))
        .or_else(|| i.tags.first())
        .cloned()
        .unwrap_or_else(|| i.id.clone());
    Some(BoxImage {
        name,
        digest,
        image,
        id: i.id,
        latest,
        created: i.created,
        size: i.size,
        built: false,
    })
}
