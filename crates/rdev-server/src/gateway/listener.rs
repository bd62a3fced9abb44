//! The gateway's Unix socket as an `axum` listener. A sandbox's relay connects to it and
//! hands over the agent's TCP connection ([`rdev_agents::sandbox::handoff`]), which the
//! gateway then serves as if the agent had connected to it directly; any other client
//! speaks plain HTTP on the socket itself. Each new connection's first byte is read in a
//! task of its own (a client that sends nothing holds up no one), within
//! [`FIRST_BYTE_TIMEOUT`].
//!
//! It sorts connections; it reads no request and authenticates no one (the router does).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use rdev_agents::sandbox::handoff::{self, First};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, UnixListener, UnixStream},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// How long a new connection may take to send its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections sorted and not yet taken by the server.
const QUEUE: usize = 64;

/// The Unix socket's connections, handed-off ones included.
#[derive(Debug)]
pub struct GatewayListener {
    ready: mpsc::Receiver<Conn>,
}

impl GatewayListener {
    /// Accepts on `unix` until `stop` fires.
    pub fn new(unix: UnixListener, stop: CancellationToken) -> Self {
        let (tx, ready) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = unix.accept() => a,
                };
                match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(sort(stream, tx.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: wait instead of spinning.
                        tracing::warn!(error = %e, "the gateway could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Self { ready }
    }
}

/// Reads a connection's first byte and queues what it turned out to be.
async fn sort(stream: UnixStream, ready: mpsc::Sender<Conn>) {
    let first = tokio::time::timeout(FIRST_BYTE_TIMEOUT, handoff::receive_first(&stream)).await;
    let conn = match first {
        Ok(Ok(First::HandedOff(fd))) => match handoff::into_tcp(fd) {
            Ok(tcp) => Conn::Tcp(tcp),
            Err(e) => {
                tracing::warn!(error = %e, "the gateway refused a handed-over connection");
                return;
            }
        },
        Ok(Ok(First::Byte(byte))) => Conn::Unix {
            first: Some(byte),
            stream,
        },
        Ok(Ok(First::Nothing)) | Ok(Err(_)) | Err(_) => return,
    };
    let _ = ready.send(conn).await;
}

impl axum::serve::Listener for GatewayListener {
    type Io = Conn;
    type Addr = ();

    async fn accept(&mut self) -> (Conn, ()) {
        match self.ready.recv().await {
            Some(conn) => (conn, ()),
            // Only once the gateway stops: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection the gateway serves from its Unix socket.
#[derive(Debug)]
pub enum Conn {
    /// A sandboxed agent's own TCP connection, handed over by its relay.
    Tcp(TcpStream),
    /// A client on the socket itself, with the first byte already read from it.
    Unix {
        first: Option<u8>,
        stream: UnixStream,
    },
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix { first, stream } => match first.take() {
                Some(byte) if buf.remaining() > 0 => {
                    buf.put_slice(&[byte]);
                    Poll::Ready(Ok(()))
                }
                Some(byte) => {
                    *first = Some(byte);
                    Poll::Ready(Ok(()))
                }
                None => Pin::new(stream).poll_read(cx, buf),
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix { stream, .. } => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn handed_over_and_plain_connections_are_both_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let stop = CancellationToken::new();
        let mut listener = GatewayListener::new(UnixListener::bind(&path).unwrap(), stop.clone());

        let mut plain = UnixStream::connect(&path).await.unwrap();
        plain.write_all(b"GET /").await.unwrap();
        let (mut conn, ()) = listener.accept().await;
        assert!(matches!(conn, Conn::Unix { .. }));
        let mut got = [0u8; 5];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET /", "the first byte is not lost");

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut agent = TcpStream::connect(tcp.local_addr().unwrap()).await.unwrap();
        let (inside, _) = tcp.accept().await.unwrap();
        let relay = UnixStream::connect(&path).await.unwrap();
        handoff::send(&relay, &inside).await.unwrap();
        drop((relay, inside));
        let (mut conn, ()) = listener.accept().await;
        assert!(matches!(conn, Conn::Tcp(_)));
        agent.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).await.unwrap();
        conn.write_all(b"pong").await.unwrap();
        agent.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        stop.cancel();
    }
}
