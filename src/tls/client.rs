//! The client side of TLS: which certificate authorities a server's certificate must chain to.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{certificates, file_error, provider};
use crate::error::{Error, Result};

/// Verifies servers against the certificates in the PEM file `ca` (a CA, or the server's own
/// self-signed certificate) when given, else against the system's trusted roots.
pub fn connector(ca: Option<&Path>) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for certificate in certificates("--ca", ca)? {
                roots.add(certificate).map_err(|e| {
                    file_error(
                        "--ca",
                        ca,
                        format!("holds a certificate that cannot be a trust anchor: {e}"),
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(|e| format!(" ({e})")).collect();
                return Err(Error::Tls(format!(
                    "no trusted root certificates found on this system{}: install the system's CA certificates (Debian: ca-certificates) or pass --ca FILE",
                    errors.concat()
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot set up a client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
