//! The client side of TLS: which certificate authorities a server's certificate must chain to.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{CertificateError, ClientConfig, Error as TlsError, RootCertStore};

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

/// Why a client's handshake failed, when the server's certificate was not trusted: the problem
/// and what to do about it. `None` for any other failure.
pub fn untrusted_certificate(e: &std::io::Error) -> Option<String> {
    let Some(TlsError::InvalidCertificate(why)) = e.get_ref()?.downcast_ref::<TlsError>() else {
        return None;
    };
    let fix = match why {
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "it is a CA certificate serving as the server's own (what `openssl req -x509` makes unless given `-addext basicConstraints=critical,CA:FALSE`): give the server a certificate with CA:FALSE, or one signed by that CA"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "connect with a host name the certificate names, or give the server a certificate for this name"
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "renew the server's certificate (or check this machine's clock)"
        }
        _ => {
            "pass --ca FILE with the CA that signed it (or the server's own certificate when self-signed)"
        }
    };
    Some(format!("{why}: {fix}"))
}
