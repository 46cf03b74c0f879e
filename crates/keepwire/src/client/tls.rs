//! The client's TLS settings (rustls with ring; no OpenSSL).
//!
//! Trust comes from the platform's store (the system CA bundle), or
//! Mozilla's roots compiled in (`webpki-roots`) where the platform has
//! none, unless a CA file is given; `insecure` skips verification and exists for tests and
//! self-signed lab servers only. ALPN offers `h2` and `http/1.1`: the
//! server's choice decides between the multiplexed connection and the pool.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn finish(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    roots: rustls::RootCertStore,
) -> Arc<rustls::ClientConfig> {
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))
}

/// Verifies servers against the platform's trust store (on Linux the
/// system CA bundle, as curl does), or Mozilla's roots compiled in when the
/// platform has none. Loaded once per process.
pub fn default_config() -> Arc<rustls::ClientConfig> {
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let (roots, _) = default_roots();
            finish(
                builder().expect("ring supports the default TLS versions"),
                roots,
            )
        })
        .clone()
}

/// Where [`default_config`]'s trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The platform's certificate store.
    Platform,
    /// Mozilla's roots compiled in (`webpki-roots`).
    Mozilla,
}

/// The default trust anchors and where they came from.
pub fn default_roots() -> (rustls::RootCertStore, RootSource) {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable or unparsable entries are skipped, as browsers do; an
    // empty result falls back to the compiled-in roots.
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added > 0 {
        return (roots, RootSource::Platform);
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    (roots, RootSource::Mozilla)
}

/// Verifies servers against the certificates in a PEM file only.
pub fn config_with_ca(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(finish(builder()?, roots))
}

/// Verifies servers against `roots` plus `extra` (an empty set is an
/// error: nothing would be trusted).
pub fn config_with_roots(
    mut roots: rustls::RootCertStore,
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    for c in extra {
        roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no trusted CA certificate (built-in roots off, none added)".into());
    }
    Ok(finish(builder()?, roots))
}

/// Accepts any server certificate. For tests and self-signed lab servers:
/// it gives up the authentication TLS exists for.
pub fn insecure_config() -> Arc<rustls::ClientConfig> {
    let mut config = builder()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
