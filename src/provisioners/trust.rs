//! Build-time trust and proxies: machines pipe builds trust the host's extra CA certificates
//! and see the host's proxy settings while they are provisioned, and by default carry neither
//! once a layer is committed.
//!
//! Certificates are installed under [`CA_DIR`] and registered with `update-ca-certificates`;
//! proxy variables and `NODE_EXTRA_CA_CERTS` (Node.js ignores the system store) only ever live
//! in the environment of provisioning commands, so they never reach an image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{BuildSettings, DEFAULT_CA_DIR, ProxyMode};

/// Where injected certificates go on the machine.
pub const CA_DIR: &str = "/usr/local/share/ca-certificates/pipe-build";
/// One PEM bundle of the injected certificates, for tools that take a file.
pub const CA_BUNDLE: &str = "/usr/local/share/ca-certificates/pipe-build/bundle.pem";
/// The system's bundle, which OpenSSL, GnuTLS, curl, apt and pip read.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The system bundle as it was before the build trust went in.
const ORIGINAL: &str = "/usr/local/share/ca-certificates/pipe-build/system-bundle.orig";

/// What a build injects.
#[derive(Debug, Clone, Default)]
pub struct BuildTrust {
    /// (file name, PEM bytes), sorted by name.
    pub certificates: Vec<(String, Vec<u8>)>,
    /// Proxy variables, both spellings.
    pub proxy_env: BTreeMap<String, String>,
    /// Keep all of it in committed layers.
    pub keep: bool,
}

impl BuildTrust {
    /// Reads the certificates and proxy settings the Pipelinefile asks for. `root` resolves
    /// relative certificate paths; `host` reads the host environment.
    pub fn from_settings(
        settings: &BuildSettings,
        root: &Path,
        host: &dyn Fn(&str) -> Option<String>,
    ) -> std::io::Result<Self> {
        let mut certificates = Vec::new();
        for path in &settings.ca_certificates {
            let abs = root.join(path);
            if !abs.exists() && path == Path::new(DEFAULT_CA_DIR) {
                continue;
            }
            for file in cert_files(&abs)? {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                certificates.push((name, std::fs::read(&file)?));
            }
        }
        certificates.sort();
        certificates.dedup_by(|a, b| a.0 == b.0);
        let mut proxy_env = BTreeMap::new();
        let mut set = |name: &str, value: Option<String>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                proxy_env.insert(name.to_ascii_uppercase(), v.clone());
                proxy_env.insert(name.to_ascii_lowercase(), v);
            }
        };
        match &settings.proxy {
            ProxyMode::None => {}
            ProxyMode::Inherit => {
                for name in ["http_proxy", "https_proxy", "no_proxy"] {
                    set(
                        name,
                        host(&name.to_ascii_uppercase()).or_else(|| host(name)),
                    );
                }
            }
            ProxyMode::Explicit {
                http,
                https,
                no_proxy,
            } => {
                set("http_proxy", http.clone());
                set("https_proxy", https.clone());
                set("no_proxy", no_proxy.clone());
            }
        }
        Ok(Self {
            certificates,
            proxy_env,
            keep: settings.keep_build_trust,
        })
    }

    /// Environment for every provisioning command.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.proxy_env.clone();
        if !self.certificates.is_empty() {
            env.insert("NODE_EXTRA_CA_CERTS".into(), CA_BUNDLE.into());
        }
        env
    }

    /// The files that go into [`CA_DIR`]: each certificate as `NAME.crt` and their bundle
    /// (`bundle.pem`); none without certificates.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        if self.certificates.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bundle = Vec::new();
        for (name, pem) in &self.certificates {
            let crt = if name.ends_with(".crt") {
                name.clone()
            } else {
                format!("{name}.crt")
            };
            out.push((crt, pem.clone()));
            bundle.extend_from_slice(pem);
            if !pem.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        let bundle_name = CA_BUNDLE.rsplit('/').next().expect("a file name");
        out.push((bundle_name.to_string(), bundle));
        out
    }

    /// The shell that makes the machine trust the certificates in [`CA_DIR`], if any.
    ///
    /// Kept certificates are registered with `update-ca-certificates` (hash links, its hooks)
    /// as a system administrator would. Otherwise the bundle is appended to the system bundle
    /// (what curl, apt, pip, git and OpenSSL read) and a copy of the original is kept, so that
    /// taking it out again is a copy too: `update-ca-certificates` takes seconds each way.
    pub fn install_script(&self) -> Option<String> {
        if self.certificates.is_empty() {
            return None;
        }
        if self.keep {
            // Without update-ca-certificates (no ca-certificates package yet), append to the
            // system bundle directly so curl, apt and pip trust the proxy too.
            return Some(format!(
                "if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null 2>&1; \
                 else mkdir -p /etc/ssl/certs && cat {CA_BUNDLE} >> {SYSTEM_BUNDLE}; fi"
            ));
        }
        Some(format!(
            "if [ -f {SYSTEM_BUNDLE} ]; then cp -p {SYSTEM_BUNDLE} {ORIGINAL}; \
             else mkdir -p /etc/ssl/certs && : > {SYSTEM_BUNDLE}; fi; \
             cat {CA_BUNDLE} >> {SYSTEM_BUNDLE}"
        ))
    }

    /// The shell that removes the certificates again (none with `keep`), before a layer is
    /// committed: the original system bundle comes back (in place, so its mode and owner
    /// stay), or goes when there was none. When a provisioner regenerated the bundle meanwhile
    /// (installed or upgraded ca-certificates), `update-ca-certificates --fresh` makes it again
    /// without them.
    pub fn remove_script(&self) -> Option<String> {
        if self.certificates.is_empty() || self.keep {
            return None;
        }
        Some(format!(
            "if [ -f {ORIGINAL} ] && cat {ORIGINAL} {CA_BUNDLE} | cmp -s - {SYSTEM_BUNDLE}; then \
               cat {ORIGINAL} > {SYSTEM_BUNDLE}; rm -rf {CA_DIR}; \
             elif [ ! -f {ORIGINAL} ] && cmp -s {CA_BUNDLE} {SYSTEM_BUNDLE}; then \
               rm -f {SYSTEM_BUNDLE}; rm -rf {CA_DIR}; \
             else rm -rf {CA_DIR}; \
               if command -v update-ca-certificates >/dev/null; then update-ca-certificates --fresh >/dev/null 2>&1; fi; \
             fi"
        ))
    }
}

fn cert_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        let p = entry.path();
        if entry.file_type().is_file() && p.extension().is_some_and(|e| e == "crt" || e == "pem") {
            out.push(p.to_path_buf());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherits_proxies_in_both_spellings_and_reads_cert_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cas/sub")).unwrap();
        std::fs::write(dir.path().join("cas/a.crt"), "A").unwrap();
        std::fs::write(dir.path().join("cas/sub/b.pem"), "B").unwrap();
        std::fs::write(dir.path().join("cas/readme.txt"), "no").unwrap();
        let settings = BuildSettings {
            ca_certificates: vec![PathBuf::from("cas")],
            ..Default::default()
        };
        let host = |k: &str| (k == "https_proxy").then(|| "http://127.0.0.1:3128".to_string());
        let t = BuildTrust::from_settings(&settings, dir.path(), &host).unwrap();
        assert_eq!(t.certificates.len(), 2);
        assert_eq!(t.proxy_env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(t.proxy_env["https_proxy"], "http://127.0.0.1:3128");
        assert!(!t.proxy_env.contains_key("HTTP_PROXY"));
        assert_eq!(t.env()["NODE_EXTRA_CA_CERTS"], CA_BUNDLE);
    }

    #[test]
    fn trust_goes_in_and_out_by_copies_unless_kept() {
        let mut t = BuildTrust {
            certificates: vec![("corp".into(), b"PEM".to_vec())],
            ..Default::default()
        };
        let files = t.files();
        assert_eq!(files[0], ("corp.crt".to_string(), b"PEM".to_vec()));
        assert_eq!(files[1], ("bundle.pem".to_string(), b"PEM\n".to_vec()));
        let install = t.install_script().unwrap();
        assert!(install.contains(&format!("cp -p {SYSTEM_BUNDLE} {ORIGINAL}")));
        assert!(!install.contains("update-ca-certificates"));
        let remove = t.remove_script().unwrap();
        assert!(remove.contains(&format!("cat {ORIGINAL} > {SYSTEM_BUNDLE}")));
        // Regenerated meanwhile: made again without them.
        assert!(remove.contains("update-ca-certificates --fresh"));
        t.keep = true;
        assert!(
            t.install_script()
                .unwrap()
                .contains("update-ca-certificates")
        );
        assert!(t.remove_script().is_none());
        assert!(BuildTrust::default().install_script().is_none());
        assert!(BuildTrust::default().files().is_empty());
    }

    #[test]
    fn a_missing_default_folder_is_fine_but_no_proxy_means_none() {
        let settings = BuildSettings {
            ca_certificates: vec![PathBuf::from("/nonexistent-pipe-test/x")],
            proxy: ProxyMode::None,
            ..Default::default()
        };
        let host = |_: &str| Some("http://proxy".to_string());
        assert!(BuildTrust::from_settings(&settings, Path::new("/"), &host).is_err());
        let settings = BuildSettings {
            proxy: ProxyMode::None,
            ..Default::default()
        };
        let t = BuildTrust::from_settings(&settings, Path::new("/"), &host).unwrap();
        assert!(t.proxy_env.is_empty());
    }
}
