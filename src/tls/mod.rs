//! TLS with rustls on the `ring` provider: the server's certificate chain and key from PEM files
//! (`outpost mcp serve --tls-cert/--tls-key`), the roots a client trusts (the system's, or
//! `outpost mcp connect --ca`), and [`Io`], a byte stream with or without TLS on it.

mod client;
mod server;

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};

pub use client::{connector, untrusted_certificate};
pub use server::acceptor;

use crate::error::{Error, Result};

/// A byte stream a connection runs on: TCP, TLS over TCP, or an SSH channel.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The one crypto provider outpost uses (russh uses `ring` too).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Every certificate in the PEM file at `path`, given with `flag`; at least one.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |e: pem::Error| file_error(flag, path, unreadable(e, "certificates"));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if certificates.is_empty() {
        let problem = "holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)";
        return Err(file_error(flag, path, problem.to_owned()));
    }
    Ok(certificates)
}

/// Why a PEM file could not be read.
fn unreadable(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        e => format!("is not valid PEM: {e}"),
    }
}

fn file_error(flag: &'static str, path: &Path, problem: String) -> Error {
    Error::TlsFile {
        flag,
        path: path.to_owned(),
        problem,
    }
}
