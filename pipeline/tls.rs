//! TLS for the REST and gRPC listeners (rustls, with the ring provider), from `server.tls_cert_path` and
//! `server.tls_key_path`: PEM files read once at start-up. A bad file stops the start with one line.

use axum_server::tls_rustls::RustlsConfig;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::ServerConfig;
use crate::server::ServeError;

/// Both listeners' TLS settings, made from the same certificate and key.
pub struct Tls {
    pub rest: RustlsConfig,
    pub grpc: ServerTlsConfig,
}

/// `None` when TLS is off (both paths empty; `Config::check` refuses only one set).
pub async fn load(config: &ServerConfig) -> Result<Option<Tls>, ServeError> {
    if config.tls_cert_path.is_empty() {
        return Ok(None);
    }
    // The process's one crypto provider; a second install (several daemons in one test process) is refused
    // harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |key: &str, path: &str| {
        std::fs::read(path).map_err(|e| ServeError::new(format!("cannot read {key} {path:?}: {e}")))
    };
    let cert = read("server.tls_cert_path", &config.tls_cert_path)?;
    let key = read("server.tls_key_path", &config.tls_key_path)?;
    let rest = RustlsConfig::from_pem(cert.clone(), key.clone()).await.map_err(|e| {
        ServeError::new(format!(
            "server.tls_cert_path / server.tls_key_path ({:?}, {:?}) are not a PEM certificate and its key: {e}",
            config.tls_cert_path, config.tls_key_path
        ))
    })?;
    let grpc = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    Ok(Some(Tls { rest, grpc }))
}
