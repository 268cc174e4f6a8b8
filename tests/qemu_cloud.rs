//! Cloud images as qemu boxes, against real VMs (TCG where KVM does not work): a Debian cloud
//! image (built here once, see `tests/fixtures/build-cloud-image`) served over HTTP on
//! 127.0.0.1, downloaded by `pipe up` with its checksum, booted on its own bootloader with a
//! NoCloud seed, layered and provisioned like a recipe box.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pipe::boxes::{BoxTarget, Recipe};
use pipe::ui::{OutputMode, Printer, Verbosity};
use sha2::Digest as _;

fn quiet_printer() -> Printer {
    Printer::with_mode(
        OutputMode::Human {
            color: false,
            progress: false,
        },
        Verbosity::Quiet,
    )
}

/// The fixture cloud image: built once per recipe and script (their digest names it) into
/// `<pipe cache>/test-fixtures/`, and reused by every later run.
fn cloud_image() -> PathBuf {
    let fixtures = common::repo().join("tests/fixtures");
    let recipe = Recipe::load(&fixtures.join("boxes/debian-12-cloud.toml")).unwrap();
    let script = fixtures.join("build-cloud-image");
    let mut h = sha2::Sha256::new();
    h.update(recipe.digest(BoxTarget::Qemu));
    h.update(std::fs::read(&script).unwrap());
    let digest = hex::encode(h.finalize());
    let dir = pipe::boxes::cache_dir().join("test-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{}.qcow2", recipe.name, &digest[..12]));
    // One builder at a time; the others wait, then reuse.
    let lock = std::fs::File::create(dir.join(format!("{}.lock", recipe.name))).unwrap();
    lock.lock().unwrap();
    if path.is_file() {
        return path;
    }
    let started = Instant::now();
    let rootfs = pipe::boxes::rootfs::build_rootfs(&recipe, BoxTarget::Qemu, &quiet_printer())
        .unwrap_or_else(|e| panic!("debootstrap of the cloud image fixture: {e}"));
    let tmp = path.with_extension(format!("qcow2.tmp-{}", std::process::id()));
    let out = Command::new(&script)
        .arg(rootfs.path())
        .arg(&tmp)
        .output()
        .unwrap();
    let _ = rootfs.remove();
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &path).unwrap();
    // Older fixtures (another recipe or script) are of no use any more.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("{}-", recipe.name)) && e.path() != path {
            let _ = std::fs::remove_file(e.path());
        }
    }
    eprintln!(
        "cloud image fixture built in {:.0}s: {} ({} MB)",
        started.elapsed().as_secs_f64(),
        path.display(),
        std::fs::metadata(&path).unwrap().len() / 1_000_000
    );
    path
}

/// sha256 of a file, hex.
fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Serves one file over HTTP on 127.0.0.1 and counts the requests for it.
struct ImageServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl ImageServer {
    const PATH: &'static str = "/images/debian-12-cloud.qcow2";

    fn start(file: PathBuf) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (file, count) = (file.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut request = String::new();
                    let _ = reader.read_line(&mut request);
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header) {
                            Ok(n) if n > 2 => {}
                            _ => break,
                        }
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("");
                    if path != Self::PATH {
                        let _ = conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut f = std::fs::File::open(&file).unwrap();
                    let len = f.metadata().unwrap().len();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = std::io::copy(&mut f, &mut conn);
                });
            }
        });
        Self { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, Self::PATH)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ while(<$c>){ last if /^\r?$/ } open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

fn pipelinefile(url: &str, checksum: &str, port: u16) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
qemu = {{ image = "{url}", checksum = "sha256:{checksum}" }}

[base]
provision = [ {{ inline = ["echo base-on-the-cloud-image > /base.txt"] }} ]

[app]
provision = [ {{ file = "www/", to = "/srv/www" }} ]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[verify]
commands = ["grep -q base-on-the-cloud-image /base.txt"]

[env.dev]
target = "qemu"
cpus = 2
memory = 1024
disk_size = "3G"
"#
    )
}

/// A project whose pipe runs use a cache of their own (so every run downloads and builds
/// afresh, and what is left in it can be checked); machines are destroyed on drop.
struct CloudProject {
    p: common::Project,
    cache: tempfile::TempDir,
    port: u16,
}

impl Drop for CloudProject {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.p.path().join(".pipe/qemu")) {
            for e in rd.flatten() {
                let _ = pipe::targets::qemu::machine::destroy(&e.path());
            }
        }
    }
}

impl CloudProject {
    fn new(url: &str, checksum: &str) -> Self {
        let port = common::free_port();
        let p = common::Project::new(
            "cloud",
            &pipelinefile(url, checksum, port),
            &[("www/index.html", "<h1>on a cloud image</h1>\n")],
        );
        Self {
            p,
            cache: tempfile::tempdir().unwrap(),
            port,
        }
    }

    fn pipe(&self, args: &[&str]) -> common::Run {
        let cache = self.cache.path().to_string_lossy().into_owned();
        self.p.pipe_env(args, &[("XDG_CACHE_HOME", &cache)])
    }

    fn up(&self) -> common::Run {
        self.pipe(&["up", "--local", "--target", "qemu", "--no-progress"])
    }

    fn images_dir(&self) -> PathBuf {
        self.cache.path().join("pipe/boxes/qemu-images")
    }

    fn machine_dir(&self) -> PathBuf {
        self.p
            .path()
            .join(".pipe/qemu")
            .join(format!("pipe-{}-dev", self.p.name))
    }

    /// QEMU processes started for this project.
    fn qemu_processes(&self) -> Vec<String> {
        self.p.qemu_processes()
    }

    /// The steps a run reports (with their times), for the test's log.
    fn log_steps(run: &common::Run, what: &str) {
        for l in run
            .all()
            .lines()
            .filter(|l| l.starts_with("ok ") || l.contains("SSH up"))
        {
            eprintln!("{what}: {l}");
        }
    }

    /// `pipe exec -- sh -c SCRIPT`'s stdout.
    fn exec(&self, script: &str) -> String {
        let run = self.pipe(&["exec", "--", "sh", "-c", script]);
        run.ok();
        run.stdout
    }
}

/// A file of a FAT image, read with mtools.
fn fat_file(image: &Path, name: &str) -> String {
    let out = Command::new("mtype")
        .arg("-i")
        .arg(image)
        .arg(format!("::{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_cloud_image_is_downloaded_once_booted_with_a_nocloud_seed_layered_and_baked() {
    let image = cloud_image();
    let sum = sha256_file(&image);
    let server = ImageServer::start(image.clone());
    let t = CloudProject::new(&server.url(), &sum);

    let first = t.up();
    first.ok();
    CloudProject::log_steps(&first, "first up");
    let out = first.all();
    assert!(out.contains("download debian-12-cloud"), "{out}");
    assert_eq!(server.requests(), 1, "one download");
    assert!(out.contains("build base layer"), "{out}");
    assert!(out.contains("build app layer"), "{out}");
    // The build machines had the box's package cache (a disk a cloud image's guest mounts too).
    assert!(!out.contains("without the package cache"), "{out}");
    let key = pipe::boxes::package_cache::box_key(
        pipe::config::TargetKind::Qemu,
        &pipe::config::BoxSource::CloudImage {
            image: server.url(),
            checksum: None,
        },
    )
    .unwrap();
    let store = t
        .cache
        .path()
        .join("pipe/packages")
        .join(key)
        .join("apt/debs");
    assert!(store.is_dir(), "{}", store.display());
    // Kept in the cache by its checksum, as a qcow2 that stands alone.
    let cached = t.images_dir().join(&sum).join("disk.qcow2");
    assert!(cached.is_file(), "{}", cached.display());
    assert_eq!(
        pipe::targets::qemu::disk::backing_file(&cached).unwrap(),
        None
    );
    let (status, body) = common::http_get_retry(t.port, "/", 60);
    assert_eq!(status, 200);
    assert_eq!(body, "<h1>on a cloud image</h1>\n");

    let dir = t.machine_dir();
    let rec = pipe::targets::qemu::machine::load_record(&dir).expect("machine.json");
    eprintln!(
        "cloud image machine: SSH up {:.1}s after start ({})",
        rec.boot_to_ssh, rec.vm.accel
    );
    // cloud-init ran with pipe's seed: this start's instance-id; root's key is the machine's,
    // and only that one (the build machines' keys were sealed out of the layers).
    let meta = fat_file(&dir.join("seed.img"), "meta-data");
    let instance_id = meta
        .lines()
        .find_map(|l| l.strip_prefix("instance-id: "))
        .unwrap_or_else(|| panic!("no instance-id in {meta}"))
        .to_string();
    let key = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    let seen = t.exec(
        "cat /var/lib/cloud/data/instance-id; cat /root/.ssh/authorized_keys; cat /base.txt; cloud-init status --wait >/dev/null; cloud-init status",
    );
    assert_eq!(
        seen,
        format!(
            "{instance_id}\n{}\nbase-on-the-cloud-image\nstatus: done\n",
            key.trim()
        ),
    );
    // Nothing of the package cache in the layers (not even its mount point).
    assert_eq!(
        t.exec(&format!(
            "test -e {} && echo there || echo gone",
            pipe::boxes::package_cache::MOUNT
        )),
        "gone\n"
    );
    // disk_size: cloud-init's growpart and resizefs grew the root to the 3 GiB disk (the
    // image's is 2 GiB).
    let size: u64 = t
        .exec("df -B1 --output=size / | tail -n1")
        .trim()
        .parse()
        .unwrap();
    assert!(size > 2_600_000_000, "root file system of {size} bytes");

    // After destroy, the next up downloads nothing and reuses both layers.
    t.pipe(&["destroy"]).ok();
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    let second = t.up();
    second.ok();
    CloudProject::log_steps(&second, "second up");
    let out = second.all();
    assert_eq!(server.requests(), 1, "no second download:\n{out}");
    assert!(out.contains("cached"), "{out}");
    assert!(out.contains("reusing base-"), "{out}");
    assert!(out.contains("reusing app-"), "{out}");
    let (_, body) = common::http_get_retry(t.port, "/", 60);
    assert_eq!(body, "<h1>on a cloud image</h1>\n");

    t.pipe(&["destroy"]).ok();
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(!dir.exists());

    // A bake on the cached image and layers: verified on a fresh machine, flattened into a
    // standalone compressed qcow2 (it boots on its own bootloader, like the image).
    let bake = t.pipe(&["bake", "--env", "dev", "--no-progress"]);
    bake.ok();
    CloudProject::log_steps(&bake, "bake");
    assert!(
        bake.stdout.contains("(env dev, qemu): verified"),
        "{}",
        bake.all()
    );
    assert_eq!(server.requests(), 1, "no download for the bake");
    let artifacts = t.cache.path().join("pipe/qemu/artifacts").join(&t.p.name);
    let artifact = std::fs::read_dir(&artifacts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "qcow2"))
        .unwrap_or_else(|| panic!("no artifact in {}", artifacts.display()));
    assert_eq!(
        pipe::targets::qemu::disk::backing_file(&artifact).unwrap(),
        None
    );
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(t.p.journals().is_empty(), "{:?}", t.p.journals());
    // `pipe box remove` knows cloud images too.
    let removed = t.pipe(&["box", "remove", "debian-12-cloud", "--target", "qemu"]);
    removed.ok();
    assert!(!t.images_dir().join(&sum).exists());
}

#[test]
fn a_wrong_checksum_fails_clearly_and_keeps_nothing() {
    let image = cloud_image();
    let server = ImageServer::start(image.clone());
    let wrong = "0123456789abcdef".repeat(4);
    let t = CloudProject::new(&server.url(), &wrong);
    let run = t.up();
    assert_ne!(run.code, 0, "{}", run.all());
    let err = run.stderr.clone();
    assert!(
        err.contains(&format!(
            "the file downloaded from {} does not match its checksum",
            server.url()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("expected sha256:{wrong}")), "{err}");
    assert!(
        err.contains(&format!("actual   sha256:{}", sha256_file(&image))),
        "{err}"
    );
    assert_eq!(server.requests(), 1);
    let left: Vec<_> = std::fs::read_dir(t.images_dir())
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the image cache: {left:?}");
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(t.p.journals().is_empty(), "{:?}", t.p.journals());
}

#[test]
fn the_image_sum_is_what_the_base_layer_digest_holds() {
    let cache = tempfile::tempdir().unwrap();
    let cache_env = cache.path().to_string_lossy().into_owned();
    let p = common::Project::new("cloud-digest", "", &[("img.qcow2", "pretend disk 1")]);
    let base = |box_line: &str| {
        p.write(
            "Pipelinefile.toml",
            &format!(
                "[pipeline]\nname = \"@NAME@\"\n\n[box]\nqemu = {box_line}\n\n[env.dev]\ntarget = \"qemu\"\n"
            )
            .replace("@NAME@", &p.name),
        );
        let run = p.pipe_env(
            &["validate", "--digests"],
            &[("XDG_CACHE_HOME", &cache_env)],
        );
        run.ok();
        run.stdout
            .split(" base ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no base digest in {}", run.all()))
            .to_string()
    };
    let url = |host: &str, c: char| {
        format!(
            "{{ image = \"https://{host}/debian.qcow2\", checksum = \"sha256:{}\" }}",
            c.to_string().repeat(64)
        )
    };
    // A new image rebuilds; the same file from elsewhere does not.
    let a = base(&url("a.example", 'a'));
    assert_ne!(base(&url("a.example", 'b')), a);
    assert_eq!(base(&url("b.example", 'a')), a);
    // A local path without a checksum: its own sha256 (so a pinned one gives the same digest),
    // which follows the file's content.
    let sum = sha256_file(&p.path().join("img.qcow2"));
    let local = base("{ image = \"img.qcow2\" }");
    assert_eq!(
        base(&format!(
            "{{ image = \"img.qcow2\", checksum = \"sha256:{sum}\" }}"
        )),
        local
    );
    p.write("img.qcow2", "pretend disk 2, another size");
    assert_ne!(base("{ image = \"img.qcow2\" }"), local);
}
