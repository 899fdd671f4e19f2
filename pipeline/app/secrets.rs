//! The session signing secret: from config (required when shared), or generated once for the embedded
//! backend and kept in `data_dir/jwt_secret` with mode 0600. Never logged.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use rand::RngCore;

use crate::config::Config;
use crate::store::setup::SetupError;

const FILE: &str = "jwt_secret";

pub(crate) fn jwt_secret(config: &Config) -> Result<Vec<u8>, SetupError> {
    if !config.auth.jwt_secret.is_empty() {
        return Ok(config.auth.jwt_secret.expose().as_bytes().to_vec());
    }
    // Config::check guarantees the embedded backend here: shared mode without a secret is refused.
    let path = config.backend.data_dir.join(FILE);
    let fail = |what: &str, e: std::io::Error| SetupError(format!("cannot {what} {}: {e}", path.display()));
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(mut file) => {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(hex.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| fail("write", e))?;
            tracing::info!(path = %path.display(), "generated a session signing secret");
            Ok(hex.into_bytes())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(&path).map_err(|e| fail("read", e))?.permissions().mode();
            if mode & 0o077 != 0 {
                // Readable by others: made private, whoever loosened it.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| fail("chmod", e))?;
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the session secret was readable by others; made it 0600");
            }
            let secret = std::fs::read(&path).map_err(|e| fail("read", e))?;
            if secret.len() < 32 {
                return Err(SetupError(format!(
                    "{} holds fewer than 32 bytes; delete it to generate a new one",
                    path.display()
                )));
            }
            Ok(secret)
        }
        Err(e) => Err(fail("create", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.backend.data_dir = dir.path().to_owned();
        let first = jwt_secret(&config).expect("generated");
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(dir.path().join(FILE)).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(jwt_secret(&config).expect("read"), first);
    }

    #[test]
    fn a_configured_secret_wins() {
        let mut config = Config::default();
        config.auth.jwt_secret = "x".repeat(40).into();
        assert_eq!(jwt_secret(&config).expect("configured"), "x".repeat(40).into_bytes());
    }
}
