//! TLS flags shared by `keepwire serve` and `keepwire proxy` (listeners),
//! and the proxy's trust settings for `https://` upstreams. The
//! certificates themselves are made in `keepwire_lab::tls`, which the lab's
//! HTTPS origin uses too.
//!
//! The self-signed certificate's PEM goes into a fresh directory with a
//! random name, made 0700, in a file created 0600 with `O_EXCL` and
//! `O_NOFOLLOW`. A fixed name in a shared temp directory (it was
//! `keepwire-selfsigned-PID.pem`) let another local user plant a symlink
//! there and have us write through it, or swap the certificate a client
//! was told to trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use keepwire_lab::tls::{self_signed, server_config};

/// Serving HTTPS.
#[derive(Args, Debug, Default)]
pub struct TlsArgs {
    /// Serve HTTPS on every listener with this certificate chain (PEM). ALPN
    /// offers HTTP/2 (h2) and HTTP/1.1; a client that asks for neither gets
    /// HTTP/1.1.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a fresh self-signed certificate for localhost, 127.0.0.1
    /// and ::1, for trying it out; its PEM is written to a file named on start
    /// (for curl --cacert), in a new private directory under $TMPDIR that is
    /// removed on a clean exit.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// Serve HTTP/3 over QUIC beside HTTPS, on UDP at each listener's port,
    /// with the same certificate; TCP responses then carry Alt-Svc. The
    /// default with TLS (QUIC needs TLS 1.3): the flag only says so.
    #[arg(long, overrides_with = "no_http3")]
    pub http3: bool,
    /// Serve HTTPS over TCP only: no QUIC endpoint, no Alt-Svc.
    #[arg(long)]
    pub no_http3: bool,
}

/// The line that tells where a self-signed certificate went.
pub fn self_signed_note(path: &Path) -> String {
    format!(
        "self-signed certificate in {} (curl --cacert it, or -k)",
        path.display()
    )
}

/// The PEM file of a self-signed certificate; removed, with its
/// directory, when dropped (on a clean exit or a failed start: the next
/// start makes a new certificate).
#[derive(Debug)]
pub struct SelfSignedPem(PathBuf);

impl SelfSignedPem {
    /// Where the PEM is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SelfSignedPem {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            // Only if empty: never more than what we made.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl TlsArgs {
    /// Whether to serve HTTP/3 (`--http3` without TLS is an error: QUIC
    /// needs a certificate).
    pub fn http3(&self) -> Result<bool, String> {
        let tls = self.tls_self_signed || self.tls_cert.is_some();
        if self.http3 && !tls {
            return Err("--http3 needs --tls-cert/--tls-key or --tls-self-signed".into());
        }
        Ok(!self.no_http3)
    }

    /// Tells where HTTP/3 is served, if it is.
    pub fn announce_http3(command: &str, server: &keepwire::Server) {
        for addr in server.quic_addrs() {
            eprintln!("keepwire {command}: HTTP/3 on udp {addr}");
        }
    }

    /// The server TLS settings the flags ask for (`None`: cleartext), and
    /// where a self-signed certificate was written.
    pub fn server_config(
        &self,
    ) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<SelfSignedPem>), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if self.tls_self_signed {
            let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            let (config, pem) =
                self_signed(names).map_err(|e| format!("--tls-self-signed: {e}"))?;
            let base = std::env::temp_dir();
            let path = write_private_pem(&base, &pem).map_err(|e| {
                format!(
                    "--tls-self-signed: writing the certificate under {}: {e}",
                    base.display()
                )
            })?;
            return Ok((Some(config), Some(SelfSignedPem(path))));
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok((None, None));
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in it",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        Ok((Some(server_config(certs, key)?), None))
    }
}

/// Writes `pem` to `cert.pem` in a new directory under `base` with a random
/// name and mode 0700; the file is created (never opened, never through a
/// symlink) with mode 0600. Returns the file's path.
fn write_private_pem(base: &Path, pem: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // mkdir(2) fails on any existing name, symlinks included; tempfile
    // retries with another random name.
    let dir = tempfile::Builder::new()
        .prefix("keepwire-selfsigned-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)?
        .keep();
    let path = dir.join("cert.pem");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(path)
}

/// How a client trusts `https://` servers.
#[derive(Args, Debug, Default)]
pub struct TrustArgs {
    /// Configured https:// upstreams: trust only the certificates in this
    /// PEM file (default: the system's roots). Forward-mode origins always
    /// use the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "upstream_insecure")]
    pub upstream_cacert: Option<PathBuf>,
    /// Configured https:// upstreams: do not verify their certificates (test
    /// setups only). Never applies to forward-mode https:// origins.
    #[arg(long)]
    pub upstream_insecure: bool,
}

impl TrustArgs {
    /// The client TLS settings (`None`: the default roots).
    pub fn client_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if self.upstream_insecure {
            return Ok(Some(keepwire::client::tls::insecure_config()));
        }
        self.upstream_cacert
            .as_ref()
            .map(|p| {
                keepwire::client::tls::config_with_ca(p)
                    .map_err(|e| format!("--upstream-cacert {e}"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn self_signed_pem_goes_to_a_fresh_private_directory() {
        let base = tempfile::tempdir().unwrap();
        // What a local attacker would plant at the old, predictable name.
        let victim = base.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let old_name = base
            .path()
            .join(format!("keepwire-selfsigned-{}.pem", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();

        let a = write_private_pem(base.path(), "PEM A").unwrap();
        let b = write_private_pem(base.path(), "PEM B").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&old_name).unwrap().is_symlink());
        for (path, pem) in [(&a, "PEM A"), (&b, "PEM B")] {
            let dir = path.parent().unwrap();
            assert_eq!(dir.parent(), Some(base.path()), "{}", path.display());
            assert!(std::fs::symlink_metadata(dir).unwrap().is_dir());
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
            assert!(std::fs::symlink_metadata(path).unwrap().is_file());
            assert_eq!(mode(path), 0o600, "{}", path.display());
            assert_eq!(std::fs::read_to_string(path).unwrap(), pem);
        }
        assert_ne!(a.parent(), b.parent(), "each run gets its own directory");
    }

    #[test]
    fn self_signed_server_config_reports_a_private_file() {
        let args = TlsArgs {
            tls_self_signed: true,
            ..TlsArgs::default()
        };
        let (config, pem) = args.server_config().unwrap();
        assert!(config.is_some());
        let pem = pem.unwrap();
        let path = pem.path().to_path_buf();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(pem);
        assert!(!path.parent().unwrap().exists());
    }
}
