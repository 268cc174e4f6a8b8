//! Cloud images as qemu boxes: a distribution's published disk image with cloud-init (Debian's
//! genericcloud, Ubuntu's cloudimg, ...), named in the Pipelinefile by URL and checksum or by a
//! path, and booted on its own bootloader with a NoCloud seed
//! ([`super::qemu::Boot::Disk`]).
//!
//! # Download and cache
//!
//! - Downloads run `curl` as a subprocess (as Vagrant does; no HTTP stack in pipe): HTTP(S)
//!   only, redirects followed, proxies from the usual environment variables (never for
//!   loopback addresses).
//! - The file lands in a staging folder in the cache and is kept only when its sha256 is the
//!   `checksum`; a mismatch removes it and names the URL, the expected and the actual sum.
//! - A qcow2 is kept as is (one with a backing file is refused: a box stands alone); anything
//!   else qemu-img reads (a raw image) is converted to qcow2.
//! - The result is `$XDG_CACHE_HOME/pipe/boxes/qemu-images/<sha256>/disk.qcow2` with
//!   `image.json`, named by the sha256 of the file as published: a second use downloads
//!   nothing, and two URLs of the same file share one copy.
//! - A local path is copied into the cache the same way, so that the layers built on it never
//!   see it change. Without a `checksum`, its sha256 (what the base layer digest holds) is
//!   cached by path, size and modification time, so that plans stay fast.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::qemu::Boot;
use super::qemu::QemuBox;
use super::rootfs::in_path;
use super::{cache_dir, lock_file};
use crate::process::{self, ProcessError};
use crate::ui::Printer;

/// Bumped whenever what this module makes of an image changes.
pub const CLOUD_IMAGE_VERSION: u32 = 1;

/// Why a cloud image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CloudImageError {
    #[error("{tool} is not installed; pipe needs it for the qemu image {image}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
        image: String,
    },

    #[error("downloading {url} failed: {source}")]
    Download {
        url: String,
        #[source]
        source: ProcessError,
    },

    #[error(
        "{} does not match its checksum\n  expected sha256:{expected}\n  actual   sha256:{actual}",
        subject(.image, *.downloaded)
    )]
    Checksum {
        image: String,
        expected: String,
        actual: String,
        /// True for a URL (the published file changed, or the checksum is wrong).
        downloaded: bool,
    },

    #[error("qemu image {image}: {problem}")]
    Unusable {
        image: String,
        problem: String,
        hint: Option<String>,
    },

    /// A tool (qemu-img, curl) could not start or failed.
    #[error("qemu image {image}: {source}")]
    Process {
        image: String,
        #[source]
        source: ProcessError,
    },

    #[error("qemu image {image}: {step}: {source}")]
    Io {
        image: String,
        step: String,
        #[source]
        source: std::io::Error,
    },

    #[error("interrupted")]
    Interrupted,
}

fn subject(image: &str, downloaded: bool) -> String {
    if downloaded {
        format!("the file downloaded from {image}")
    } else {
        format!("the qemu image {image}")
    }
}

impl CloudImageError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            CloudImageError::MissingTool { package, .. } => {
                Some(format!("install it: apt-get install {package}"))
            }
            CloudImageError::Download { .. } => Some(
                "check the URL, and that this machine reaches it (curl takes proxies from HTTPS_PROXY and NO_PROXY)"
                    .into(),
            ),
            CloudImageError::Checksum {
                downloaded: true, ..
            } => Some(
                "nothing was kept. Compare `checksum` in [box] with the image's published SHA256SUMS; if the file at the URL changed, pin the new sum (or a dated URL that does not change)"
                    .into(),
            ),
            CloudImageError::Checksum { .. } => Some(
                "the file differs from `checksum` in [box]: fix the checksum, or restore the file"
                    .into(),
            ),
            CloudImageError::Unusable { hint, .. } => hint.clone(),
            CloudImageError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Some(
                    "a qemu `image` that is not a URL is a path relative to the Pipelinefile's folder"
                        .into(),
                )
            }
            _ => None,
        }
    }
}

impl From<CloudImageError> for crate::error::Error {
    fn from(e: CloudImageError) -> Self {
        match e {
            CloudImageError::Interrupted => crate::error::Error::Interrupted,
            e => crate::error::Error::runtime(e.to_string(), e.hint()).caused_by(e),
        }
    }
}

/// Where cloud images are cached.
pub fn images_dir() -> PathBuf {
    cache_dir().join("boxes").join("qemu-images")
}

/// Where the sums of local images are cached.
fn sums_dir() -> PathBuf {
    cache_dir().join("boxes").join("qemu-image-sums")
}

/// True when `image` is downloaded rather than read from a path.
pub fn is_url(image: &str) -> bool {
    image.starts_with("http://") || image.starts_with("https://")
}

/// The box name of an image: its file name without `.qcow2`, `.img` or `.raw`.
pub fn image_name(image: &str) -> String {
    let path = image.split(['?', '#']).next().unwrap_or(image);
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    let name = [".qcow2", ".qcow", ".img", ".raw"]
        .iter()
        .find_map(|ext| last.strip_suffix(ext))
        .unwrap_or(last);
    if name.is_empty() {
        "cloud-image".into()
    } else {
        name.to_string()
    }
}

/// The identity of a cloud image box, as the base layer digest takes it: the checksum, or
/// for a local path without one the file's sha256 (cached, see [`local_sha256`]).
pub fn image_sha256(root: &Path, image: &str, checksum: Option<&str>) -> std::io::Result<String> {
    match checksum {
        Some(c) => Ok(c.to_string()),
        None if is_url(image) => Err(std::io::Error::other(format!(
            "the qemu image {image} is downloaded but has no checksum"
        ))),
        None => local_sha256(&root.join(image)),
    }
}

/// `qemu-image-sums/<sha256 of the path>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SumEntry {
    path: PathBuf,
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

fn sum_entry_path(path: &Path) -> PathBuf {
    let key = hex::encode(sha2::Sha256::digest(path.as_os_str().as_encoded_bytes()));
    sums_dir().join(format!("{key}.json"))
}

/// The sha256 of a local file, cached by its path, size and modification time (reading a
/// cloud image takes seconds; a plan should not).
pub fn local_sha256(path: &Path) -> std::io::Result<String> {
    let path = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&path)?;
    let mtime_ns = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let entry_path = sum_entry_path(&path);
    if let Some(e) = std::fs::read(&entry_path)
        .ok()
        .and_then(|d| serde_json::from_slice::<SumEntry>(&d).ok())
        && e.path == path
        && e.size == meta.len()
        && e.mtime_ns == mtime_ns
    {
        return Ok(e.sha256);
    }
    let sha256 = sha256_file(&path)?;
    let entry = SumEntry {
        path,
        size: meta.len(),
        mtime_ns,
        sha256: sha256.clone(),
    };
    // A cache: failing to write it only costs the next plan a re-read.
    let _ = std::fs::create_dir_all(sums_dir()).and_then(|()| {
        let tmp = entry_path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&entry).expect("serializes"))?;
        std::fs::rename(&tmp, &entry_path)
    });
    Ok(sha256)
}

/// Forgets the cached sum of a local file.
fn forget_local_sha256(path: &Path) {
    if let Ok(path) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(sum_entry_path(&path));
    }
}

/// sha256 of a file's content, hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `image.json` in an image's folder, written last.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    procedure: u32,
    name: String,
    /// The URL, or the absolute path it was copied from.
    source: String,
    sha256: String,
    /// The format of the file as published (`qcow2`, `raw`, ...).
    format: String,
    created: i64,
}

fn load(dir: &Path) -> Option<QemuBox> {
    let text = std::fs::read_to_string(dir.join("image.json")).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    if m.procedure != CLOUD_IMAGE_VERSION {
        return None;
    }
    let disk = dir.join("disk.qcow2");
    let size = std::fs::metadata(&disk).ok()?.len();
    Some(QemuBox {
        name: m.name,
        digest: m.sha256,
        dir: dir.to_path_buf(),
        disk,
        boot: Boot::Disk,
        created: m.created,
        size,
        built: false,
    })
}

/// Every cloud image in the cache.
pub fn list_cloud_images() -> Vec<QemuBox> {
    std::fs::read_dir(images_dir())
        .map(|rd| rd.flatten().filter_map(|e| load(&e.path())).collect())
        .unwrap_or_default()
}

/// A staging folder in the cache, removed unless kept.
struct Staging(Option<PathBuf>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("not kept yet")
    }

    /// Moves it to `dest`; it is no longer removed.
    fn keep(mut self, dest: &Path) -> std::io::Result<()> {
        let path = self.0.take().expect("not kept yet");
        if let Err(e) = std::fs::rename(&path, dest) {
            let _ = std::fs::remove_dir_all(&path);
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Removes staging folders of runs whose process is gone (killed, or power lost).
fn sweep_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tmp-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The cached box for `image` (a URL, or a path relative to `root`), downloaded or copied
/// into the cache first unless it is there. Safe to call from several processes at once.
pub fn fetch_cloud_image(
    root: &Path,
    image: &str,
    checksum: Option<&str>,
    printer: &Printer,
) -> Result<QemuBox, CloudImageError> {
    let name = image_name(image);
    let io = |step: &str| {
        let image = image.to_string();
        let step = step.to_string();
        move |source| CloudImageError::Io {
            image,
            step,
            source,
        }
    };
    let last = image.split(['?', '#']).next().unwrap_or(image);
    if [".xz", ".gz", ".bz2", ".zst", ".zip", ".tar", ".tgz", ".7z"]
        .iter()
        .any(|ext| last.ends_with(ext))
    {
        return Err(CloudImageError::Unusable {
            image: image.to_string(),
            problem: "a compressed archive is not a disk image".into(),
            hint: Some(
                "use the image's .qcow2 (or raw .img/.raw) file: pipe does not unpack archives"
                    .into(),
            ),
        });
    }
    let local = (!is_url(image)).then(|| root.join(image));
    let expected = match (checksum, &local) {
        (Some(c), _) => c.to_string(),
        (None, Some(path)) => local_sha256(path).map_err(io("read"))?,
        (None, None) => {
            return Err(CloudImageError::Unusable {
                image: image.to_string(),
                problem: "a downloaded image needs a checksum".into(),
                hint: Some("add `checksum = \"sha256:...\"` to [box] qemu".into()),
            });
        }
    };
    let _lock = lock_file(
        &cache_dir()
            .join("locks")
            .join(format!("qemu-image-{}.lock", &expected[..12])),
    )
    .map_err(io("lock the image cache"))?;
    let dir = images_dir().join(&expected);
    if let Some(found) = load(&dir) {
        let step = printer.step(format!("box {name} (qemu cloud image)"));
        step.skipped(Some(format!("cached ({})", dir.display())));
        return Ok(found);
    }
    let mut tools = vec![("qemu-img", "qemu-utils")];
    if local.is_none() {
        tools.push(("curl", "curl"));
    }
    for (tool, package) in tools {
        if !in_path(tool) {
            return Err(CloudImageError::MissingTool {
                tool,
                package,
                image: image.to_string(),
            });
        }
    }
    std::fs::create_dir_all(images_dir()).map_err(io("create the image cache"))?;
    sweep_stale(&images_dir());
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let staging = images_dir().join(format!("tmp-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir(&staging).map_err(io("create a staging folder"))?;
    let staging = Staging(Some(staging));
    let file = staging.path().join("download");
    let source = match &local {
        None => {
            download(image, &file, &name, printer)?;
            image.to_string()
        }
        Some(path) => {
            let step = printer.step(format!("copy {name} into the cache"));
            std::fs::copy(path, &file).map_err(io("copy"))?;
            step.done(None);
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string()
        }
    };
    let actual = sha256_file(&file).map_err(io("hash"))?;
    if actual != expected {
        if let (Some(path), None) = (&local, checksum) {
            // The cached sum was stale; the next run reads the file again.
            forget_local_sha256(path);
        }
        return Err(CloudImageError::Checksum {
            image: image.to_string(),
            expected,
            actual,
            downloaded: local.is_none(),
        });
    }
    let format = inspect(image, &file)?;
    let disk = staging.path().join("disk.qcow2");
    if format == "qcow2" {
        std::fs::rename(&file, &disk).map_err(io("keep"))?;
    } else {
        let step = printer.step(format!("box {name}: {format} to qcow2"));
        let converted = process::run(
            Command::new("qemu-img")
                .args(["convert", "-q", "-f", &format, "-O", "qcow2"])
                .arg(&file)
                .arg(&disk),
        );
        if let Err(source) = converted {
            step.failed(None);
            return Err(CloudImageError::Process {
                image: image.to_string(),
                source,
            });
        }
        step.done(None);
        std::fs::remove_file(&file).map_err(io("remove the download"))?;
    }
    let manifest = Manifest {
        procedure: CLOUD_IMAGE_VERSION,
        name,
        source,
        sha256: expected,
        format,
        created: chrono::Utc::now().timestamp(),
    };
    std::fs::write(
        staging.path().join("image.json"),
        serde_json::to_vec_pretty(&manifest).expect("serializes"),
    )
    .map_err(io("write image.json"))?;
    if dir.exists() {
        // Half there (or of an older procedure): replaced.
        std::fs::remove_dir_all(&dir).map_err(io("replace the old copy"))?;
    }
    staging.keep(&dir).map_err(io("move into the cache"))?;
    let found = load(&dir).ok_or_else(|| CloudImageError::Unusable {
        image: image.to_string(),
        problem: format!("{} is incomplete", dir.display()),
        hint: None,
    })?;
    Ok(QemuBox {
        built: true,
        ..found
    })
}

/// The format qemu-img sees; refuses a qcow2 with a backing file (it would read a host file
/// the image names, and a box must stand alone).
fn inspect(image: &str, file: &Path) -> Result<String, CloudImageError> {
    let unusable = |problem: String| CloudImageError::Unusable {
        image: image.to_string(),
        problem,
        hint: None,
    };
    let out = process::run(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(file),
    )
    .map_err(|source| CloudImageError::Process {
        image: image.to_string(),
        source,
    })?;
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| unusable(format!("qemu-img info: {e}")))?;
    if let Some(backing) = info.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(CloudImageError::Unusable {
            image: image.to_string(),
            problem: format!("it has a backing file ({backing})"),
            hint: Some("use a standalone image (`qemu-img convert -O qcow2` makes one)".into()),
        });
    }
    info.get("format")
        .and_then(|f| f.as_str())
        .map(str::to_string)
        .ok_or_else(|| unusable("qemu-img info names no format".into()))
}

/// Hosts curl must reach directly: the environment's NO_PROXY plus loopback.
fn no_proxy() -> String {
    let env = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    if env.trim() == "*" {
        return env;
    }
    let mut hosts: Vec<&str> = env
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    hosts.extend(["localhost", "127.0.0.1", "::1"]);
    hosts.join(",")
}

/// `curl` `url` into `dest`, with the bytes so far on the spinner; Ctrl-C stops it.
fn download(url: &str, dest: &Path, name: &str, printer: &Printer) -> Result<(), CloudImageError> {
    let step = printer.step(format!("download {name}"));
    let mut cmd = Command::new("curl");
    cmd.args([
        "--fail",
        "--location",
        "--silent",
        "--show-error",
        "--proto",
        "=http,https",
        "--proto-redir",
        "=http,https",
        "--retry",
        "3",
        "--connect-timeout",
        "30",
        "--user-agent",
        concat!("pipe/", env!("CARGO_PKG_VERSION")),
        "--noproxy",
    ])
    .arg(no_proxy())
    .arg("--output")
    .arg(dest)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd).map_err(|source| CloudImageError::Process {
        image: url.to_string(),
        source,
    })?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if crate::interrupt::requested() {
            let _ = child.kill();
            let _ = child.wait();
            step.failed(Some("interrupted".into()));
            return Err(CloudImageError::Interrupted);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                let _ = child.kill();
                return Err(CloudImageError::Io {
                    image: url.to_string(),
                    step: "wait for curl".into(),
                    source,
                });
            }
        }
        let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        step.set_detail(&format!("{} MB", bytes / 1_000_000));
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        step.failed(None);
        return Err(CloudImageError::Download {
            url: url.to_string(),
            source: ProcessError::exited(&cmd, status, err.as_bytes()),
        });
    }
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    step.done(Some(format!(
        "{} MB in {:.1}s",
        bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    )));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_name() {
        assert_eq!(
            image_name("https://example.org/x/debian-12-genericcloud-amd64.qcow2"),
            "debian-12-genericcloud-amd64"
        );
        assert_eq!(image_name("images/disk.raw?x=1"), "disk");
        assert_eq!(image_name("https://example.org/"), "example.org");
        assert!(is_url("http://127.0.0.1:8080/a.qcow2"));
        assert!(!is_url("images/a.qcow2"));
    }

    #[test]
    fn loopback_never_goes_through_a_proxy() {
        let hosts = no_proxy();
        assert!(hosts.contains("127.0.0.1"), "{hosts}");
    }
}
