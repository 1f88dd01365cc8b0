//! TLS for `https://` and `wss://`, with rustls (ring provider, TLS 1.2 and 1.3), and
//! certificate renewal without a restart.
//!
//! Certificates expire (Let's Encrypt's every 90 days), and a restart to load a new one
//! would drop every WebSocket. So the acceptor asks [`Certificates`] for the current
//! certificate at each handshake, and the pair of files is read again on SIGHUP (the
//! binary calls [`Certificates::reload`]) or when their modification time or size
//! changes ([`Certificates::watch`], a poll: no file-watching dependency, and a renewal
//! by certbot or similar then needs no signal at all). Established connections finished
//! their handshake with the old certificate and are not touched. A pair that does not
//! load (unreadable, not PEM, a key of another certificate: what a half-written renewal
//! looks like) is logged, naming the file, and the current certificate stays.

use crate::shutdown::Shutdown;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS private key {key} does not belong to the certificate {cert}: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error(
        "the TLS certificate and key (--tls-cert / --tls-key) do not make a valid configuration: {0}"
    )]
    Config(#[from] rustls::Error),
}

/// Builds the acceptor, with the certificate it serves kept in the returned
/// [`Certificates`] (to reload and watch).
pub(crate) fn acceptor(
    cert: &Path,
    key: &Path,
) -> Result<(TlsAcceptor, Arc<Certificates>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Arc::new(Certificates::load(cert, key, Arc::clone(&provider))?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
    // WebSocket upgrades are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), certificates))
}

/// What a file looked like when last read: a change of either is a new file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The certificate new handshakes get, and the files it comes from.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last attempt to load them, good or bad: a bad pair is
    /// tried again only once a file changes again (or on SIGHUP).
    stamps: Mutex<(Stamp, Stamp)>,
}

impl Certificates {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let current = read_pair(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
            stamps: Mutex::new(stamps),
        })
    }

    /// Reads the files again and serves what they hold to new handshakes, or keeps the
    /// current certificate (and logs why) when they do not load. `trigger` says why, for
    /// the log.
    pub fn reload(&self, trigger: &'static str) {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        match read_pair(&self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                tracing::info!(
                    event = "tls_certificate_reloaded",
                    trigger,
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    "serving the certificate just read to new connections"
                );
            }
            Err(error) => tracing::error!(
                event = "tls_certificate_reload_failed",
                trigger,
                %error,
                "kept the current certificate"
            ),
        }
    }

    /// Reloads whenever either file's modification time or size changes, checking every
    /// `every`, until `shutdown`.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = (stamp(&self.cert), stamp(&self.key));
            let changed = *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now;
            if changed {
                self.reload("file_changed");
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Loads a PEM certificate chain and the private key that goes with it.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate in the file".to_owned()));
    }
    let key_error = |reason: String| TlsError::Key {
        path: key.display().to_string(),
        reason,
    };
    // Only the kind of failure: a PEM error's own text may quote the key's bytes.
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_error(match e {
            pem::Error::Io(error) => error.to_string(),
            pem::Error::NoItemsFound => "no private key in the file".to_owned(),
            _ => "not a valid PEM private key".to_owned(),
        })
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|_| key_error("not a private key of a supported type".to_owned()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(error) => Err(TlsError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: error.to_string(),
        }),
    }
}
