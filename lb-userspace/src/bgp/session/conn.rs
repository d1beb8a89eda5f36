//! One session's TCP connection: whole BGP messages in and out, and the UPDATE messages for a
//! set of changes.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::rib::Changes;
use super::super::wire::{self, Message, Notification, WireError};

/// The UPDATE messages for `changes`.
pub(super) fn encode(changes: &Changes, session: &wire::Session) -> Result<Vec<Bytes>, WireError> {
    let mut out = Vec::new();
    if !changes.withdraw.is_empty() {
        out.extend(wire::encode_withdraw(&changes.withdraw, session)?);
    }
    for (attrs, prefixes) in &changes.announce {
        out.extend(wire::encode_announce(prefixes, attrs, session)?);
    }
    Ok(out)
}

pub(super) fn peer_notified(n: &Notification) -> String {
    format!("the peer sent NOTIFICATION {}", n.describe())
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("{0}")]
    Wire(WireError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("reading from the peer: {0}")]
    Io(std::io::Error),
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
    pub(super) session: Option<wire::Session>,
}

impl Conn {
    pub(super) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next whole message (cancel-safe: bytes read stay in the buffer).
    pub(super) async fn read_message(&mut self) -> Result<Message, ReadError> {
        loop {
            match wire::decode(&mut self.buf, self.session.as_ref()) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Wire(e)),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}
