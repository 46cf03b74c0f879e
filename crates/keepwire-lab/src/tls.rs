//! A self-signed certificate and the server settings that present it: the
//! lab's HTTPS origin uses it, and so does `keepwire serve
//! --tls-self-signed`, from this one place.
//!
//! Listeners offer `h2` and `http/1.1` by ALPN, like nginx with `http2 on`:
//! a client that asks for nothing gets HTTP/1.1, TLS's default.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh self-signed certificate for `names` (host names or IP
/// addresses): the server settings that present it, and its PEM (what a
/// client must trust).
pub fn self_signed(names: Vec<String>) -> Result<(Arc<rustls::ServerConfig>, String), String> {
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let config = server_config(vec![ck.cert.der().clone()], key.into())?;
    Ok((config, ck.cert.pem()))
}

/// Server settings for a certificate chain and its key; ALPN offers `h2`
/// and `http/1.1`.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_offers_h2_and_http1() {
        let (config, pem) = self_signed(vec!["localhost".into()]).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
