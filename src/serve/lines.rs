//! Newline-delimited JSON-RPC over a byte stream (stdio), answering malformed lines instead of dropping them.

use std::io;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::jsonrpc::{Incoming, parse_incoming, too_large};

/// Largest incoming line; longer ones are discarded and answered with an error.
pub const MAX_LINE: usize = 8 << 20;

/// An MCP transport over a reader and a writer carrying one JSON message per line.
pub struct LineTransport<R, W> {
    reader: R,
    writer: Arc<Mutex<W>>,
    line: Vec<u8>,
}

impl<R, W> LineTransport<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            line: Vec::new(),
        }
    }
}

/// One line read: its bytes are in the buffer, or it was too long, or the input ended.
enum Line {
    Complete,
    TooLong,
    End,
}

impl<R: AsyncBufRead + Unpin, W> LineTransport<R, W> {
    /// Reads up to the next newline into `self.line`, keeping at most MAX_LINE bytes.
    async fn read_line(&mut self) -> io::Result<Line> {
        self.line.clear();
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(Line::End);
            }
            let (part, done) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if self.line.len() + part.len() > MAX_LINE {
                too_long = true;
                self.line.clear();
            } else if !too_long {
                self.line.extend_from_slice(part);
            }
            let used = part.len() + usize::from(done);
            self.reader.consume(used);
            if done {
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Complete
                });
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &Mutex<W>, text: &str) -> io::Result<()> {
    let mut writer = writer.lock().await;
    writer.write_all(text.as_bytes()).await?;
    writer.write_all(b"\n").await?;
    writer.flush().await
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        async move {
            let text = serde_json::to_string(&item).map_err(io::Error::other)?;
            write_line(&writer, &text).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            let reply = match self.read_line().await {
                Ok(Line::End) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read input");
                    return None;
                }
                Ok(Line::TooLong) => too_large(MAX_LINE),
                Ok(Line::Complete) => match parse_incoming(&self.line) {
                    Incoming::Message(message) => return Some(*message),
                    Incoming::Ignore => continue,
                    Incoming::Reply(reply) => reply,
                },
            };
            if let Err(e) = write_line(&self.writer, &reply).await {
                tracing::warn!(error = %e, "cannot write an error reply");
                return None;
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    #[tokio::test]
    async fn bad_lines_are_answered_and_good_ones_pass() {
        let input = b"junk\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n".to_vec();
        let (writer, mut output) = tokio::io::duplex(4096);
        let mut transport = LineTransport::new(BufReader::new(std::io::Cursor::new(input)), writer);
        let message = transport.receive().await.expect("the ping");
        assert!(serde_json::to_string(&message).unwrap().contains("ping"));
        assert!(transport.receive().await.is_none());
        transport.close().await.unwrap();
        let mut written = String::new();
        output.read_to_string(&mut written).await.unwrap();
        assert!(written.contains("-32700"), "{written}");
    }

    #[tokio::test]
    async fn oversized_line_is_discarded_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n");
        let (writer, mut output) = tokio::io::duplex(1 << 16);
        let mut transport = LineTransport::new(BufReader::new(std::io::Cursor::new(input)), writer);
        assert!(transport.receive().await.is_some());
        transport.close().await.unwrap();
        let mut written = String::new();
        output.read_to_string(&mut written).await.unwrap();
        assert!(written.contains("larger than the limit"), "{written}");
    }
}
