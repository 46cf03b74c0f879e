//! TLS flags shared by `keepwire serve` and `keepwire proxy` (listeners),
//! and the proxy's trust settings for `https://` upstreams.
//!
//! Listeners offer `h2` and `http/1.1` by ALPN, like nginx with `http2 on`:
//! a client that asks for nothing gets HTTP/1.1, TLS's default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

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
    /// (for curl --cacert).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
}

/// The line that tells where a self-signed certificate went.
pub fn self_signed_note(path: &Path) -> String {
    format!(
        "self-signed certificate in {} (curl --cacert it, or -k)",
        path.display()
    )
}

impl TlsArgs {
    /// The server TLS settings the flags ask for (`None`: cleartext), and
    /// where a self-signed certificate was written.
    pub fn server_config(
        &self,
    ) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<PathBuf>), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if self.tls_self_signed {
            let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            let (config, pem) =
                self_signed(names).map_err(|e| format!("--tls-self-signed: {e}"))?;
            let path = std::env::temp_dir()
                .join(format!("keepwire-selfsigned-{}.pem", std::process::id()));
            std::fs::write(&path, pem)
                .map_err(|e| format!("--tls-self-signed: writing {}: {e}", path.display()))?;
            return Ok((Some(config), Some(path)));
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

/// A fresh self-signed certificate for `names` (host names or IP
/// addresses): the server settings that present it, and its PEM (what a
/// client must trust).
pub fn self_signed(names: Vec<String>) -> Result<(Arc<rustls::ServerConfig>, String), String> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let config = server_config(vec![ck.cert.der().clone()], key.into())?;
    Ok((config, ck.cert.pem()))
}

/// Server settings for a certificate chain and its key; ALPN offers `h2`
/// and `http/1.1`.
fn server_config(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("TLS: the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
