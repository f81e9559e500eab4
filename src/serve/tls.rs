//! TLS on an accepted connection: the handshake gets the header timeout, like a request head,
//! and gives way to a newer connection as any connection still waiting to authenticate does.

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::admission::Standing;
use super::network::Shared;
use crate::tls::Io;

/// The stream to serve on: `tcp` itself without TLS, else TLS over it once the handshake is
/// done; `None` when the handshake failed, timed out or the connection had to make room.
pub async fn secure(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    standing: &Standing,
    shared: &Shared,
) -> Option<Box<dyn Io>> {
    let Some(tls) = tls else {
        return Some(Box::new(tcp));
    };
    tokio::select! {
        finished = tokio::time::timeout(shared.header_timeout(), tls.accept(tcp)) => match finished {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        },
        _ = standing.evicted() => None,
    }
}
