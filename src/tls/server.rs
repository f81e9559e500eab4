//! The server side of TLS: a certificate chain and its private key, read from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::{certificates, file_error, provider, unreadable};
use crate::error::{Error, Result};

/// Accepts TLS with the chain in `cert` (the server's certificate first, then intermediates)
/// and the PKCS#8, RSA or EC private key in `key`, which must belong to that certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain = certificates("--tls-cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let problem = unreadable(e, "private key (PKCS#8, RSA or EC)");
        file_error("--tls-key", key, problem)
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::Tls(format!(
                "cannot set up TLS 1.2/1.3 with the ring provider: {e}"
            ))
        })?;
    let mut config = builder
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            let problem = format!(
                "does not go with the certificate in {} ({e}): give the key the certificate was made for",
                cert.display()
            );
            file_error("--tls-key", key, problem)
        })?;
    // hyper serves HTTP/1.1 only; WebSocket upgrades are HTTP/1.1 too.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
