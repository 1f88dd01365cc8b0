//! Development mode's JWT secret when none is configured: made once, kept in the data
//! directory, so a restart does not sign every client out.
//!
//! The file is created with mode 0600 from the start (written under a temporary name,
//! then linked into place, so no reader ever sees half a secret and two servers
//! starting at once agree on one). An existing file is never overwritten: one that
//! cannot be read, or does not hold a usable secret, stops the server with an error
//! naming it. Production mode never reads this file.

use crate::config::MIN_SECRET_BYTES;
use secrecy::SecretString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub(crate) const FILE_NAME: &str = "dev-jwt-secret";

/// The secret, where it is kept, and whether this run made it.
pub(crate) struct DevSecret {
    pub secret: SecretString,
    pub path: PathBuf,
    pub created: bool,
}

/// Why the kept secret cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the development JWT secret file {path}: {reason} (fix or delete the file, which signs out everyone it signed in, or set PALISADE_JWT_SECRET)"
)]
pub struct DevSecretError {
    pub path: PathBuf,
    pub reason: String,
}

/// Reads the secret kept in `dir`, or makes one there (creating `dir` if needed).
pub(crate) fn load_or_create(dir: &Path) -> Result<DevSecret, DevSecretError> {
    let path = dir.join(FILE_NAME);
    let failed = |reason: String| DevSecretError {
        path: path.clone(),
        reason,
    };
    match read(&path) {
        Ok(secret) => {
            return Ok(DevSecret {
                secret,
                path,
                created: false,
            });
        }
        Err(Unusable::Missing) => {}
        Err(Unusable::Bad(reason)) => return Err(failed(reason)),
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create its folder {}: {e}", dir.display())))?;
    let secret = random_hex();
    let temporary = dir.join(format!(".{FILE_NAME}.{}.tmp", &random_hex()[..16]));
    let written = write_new(&temporary, &secret);
    // Linking fails if the file exists: a server that started at the same moment made
    // it first, and its secret is the one to use.
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            if let Ok(folder) = std::fs::File::open(dir) {
                let _ = folder.sync_all();
            }
            Ok(DevSecret {
                secret: SecretString::from(secret),
                path,
                created: true,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read(&path) {
            Ok(secret) => Ok(DevSecret {
                secret,
                path,
                created: false,
            }),
            Err(Unusable::Missing) => Err(failed("it vanished while being created".to_owned())),
            Err(Unusable::Bad(reason)) => Err(failed(reason)),
        },
        Err(e) => Err(failed(format!("cannot create it: {e}"))),
    }
}

enum Unusable {
    Missing,
    Bad(String),
}

fn read(path: &Path) -> Result<SecretString, Unusable> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Bad(format!("cannot read it: {e}"))),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Unusable::Bad("it is not text: the file is damaged".to_owned()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Unusable::Bad(
            "it holds more than one line or blanks: the file is damaged".to_owned(),
        ));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(Unusable::Bad(format!(
            "it holds {} bytes, fewer than the {MIN_SECRET_BYTES} a secret needs: the file is damaged or truncated",
            secret.len()
        )));
    }
    warn_if_others_may_read(path);
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(unix)]
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "the development JWT secret file {} may be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_others_may_read(_path: &Path) {}

/// Creates `path` (it must not exist) readable and writable by its owner only from the
/// first byte, and writes the secret to disk.
fn write_new(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// 256 random bits as 64 hex digits.
pub(crate) fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_secret_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("not/yet/there");
        let first = load_or_create(&folder).unwrap();
        assert!(first.created);
        assert_eq!(first.secret.expose_secret().len(), 64);
        let second = load_or_create(&folder).unwrap();
        assert!(!second.created);
        assert_eq!(second.secret.expose_secret(), first.secret.expose_secret());
        let names: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file is left behind");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(&made.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_and_is_left_alone() {
        for (content, says) in [
            (&b"short\n"[..], "fewer than the 32"),
            (&b""[..], "0 bytes"),
            (&[0xff_u8; 40][..], "not text"),
            (
                &b"0123456789abcdef0123456789abcdef\nmore\n"[..],
                "more than one line",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            std::fs::write(&path, content).unwrap();
            let error = load_or_create(dir.path())
                .err()
                .expect("refused")
                .to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains(says), "{error}");
            assert_eq!(std::fs::read(&path).unwrap(), content);
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::create_dir(&path).unwrap();
        let error = load_or_create(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("cannot read it"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}
