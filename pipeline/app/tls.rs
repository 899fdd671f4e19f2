//! TLS for the REST and gRPC listeners (rustls, with the ring provider), from `server.tls_cert_path` and
//! `server.tls_key_path`: PEM files read once at start-up. A bad file stops the start with one line.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerConfig;

/// Both listeners' TLS settings, made from the same certificate and key.
pub struct Tls {
    pub rest: Arc<rustls::ServerConfig>,
    /// The same, offering HTTP/2 alone.
    pub grpc: Arc<rustls::ServerConfig>,
}

/// `None` when TLS is off (both paths empty; `Config::check` refuses only one set).
pub(crate) fn load(config: &ServerConfig) -> Result<Option<Tls>, String> {
    if config.tls_cert_path.is_empty() {
        return Ok(None);
    }
    // The process's one crypto provider; a second install (several daemons in one test process) is refused
    // harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |key: &str, path: &str| std::fs::read(path).map_err(|e| format!("cannot read {key} {path:?}: {e}"));
    let cert = read("server.tls_cert_path", &config.tls_cert_path)?;
    let key = read("server.tls_key_path", &config.tls_key_path)?;
    let unusable = |e: &dyn std::fmt::Display| {
        format!(
            "server.tls_cert_path / server.tls_key_path ({:?}, {:?}) are not a PEM certificate and its key: {e}",
            config.tls_cert_path, config.tls_key_path
        )
    };
    let chain = CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>().map_err(|e| unusable(&e))?;
    let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| unusable(&e))?;
    let mut rest = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| unusable(&e))?;
    rest.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut grpc = rest.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let (rest, grpc) = (Arc::new(rest), Arc::new(grpc));
    Ok(Some(Tls { rest, grpc }))
}
