//! Handing a connection over a Unix socket: the relay inside a sandbox accepts the agent's
//! TCP connection and passes its descriptor to rdev's gateway (`SCM_RIGHTS`), which then
//! serves that connection itself. The relay copies no byte of a model call, so a sandboxed
//! agent's calls cost what an unsandboxed agent's do (docs/gateway.md, "Overhead").
//!
//! The wire format is one message: the byte [`MARKER`] with exactly one descriptor. No
//! HTTP request starts with that byte, so the gateway's socket still serves plain HTTP to
//! a client that speaks it (the first byte is given back to the HTTP reader).
//!
//! The receiving side trusts nothing it is sent: [`receive_first`] takes at most one
//! descriptor (the kernel closes any more), and [`into_tcp`] accepts only a connected TCP
//! stream socket. Whatever the sender is, what it hands over is a connection it could have
//! spoken HTTP on itself. This module moves descriptors; it reads no request.

use std::{
    io::{self, IoSlice, IoSliceMut},
    mem::MaybeUninit,
    os::fd::{AsFd, OwnedFd},
};

use rustix::net::{
    getsockname, recvmsg, sendmsg, sockopt, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    SocketType,
};
use tokio::{io::Interest, net::UnixStream};

/// The byte a hand-off message carries.
pub const MARKER: u8 = 0;

/// Passes `connection`'s descriptor over `socket` (the relay's side).
pub async fn send(socket: &UnixStream, connection: &impl AsFd) -> io::Result<()> {
    let fds = [connection.as_fd()];
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            sendmsg(
                socket,
                &[IoSlice::new(&[MARKER])],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How a connection to the gateway's socket begins.
#[derive(Debug)]
pub enum First {
    /// A hand-off: the descriptor it carried (not yet checked: see [`into_tcp`]).
    HandedOff(OwnedFd),
    /// Anything else: its first byte, which belongs to the stream (plain HTTP).
    Byte(u8),
    /// Closed before its first byte, or descriptors no hand-off carries (closed).
    Nothing,
}

/// Reads the first byte of `socket` and the descriptor that came with it, if any (the
/// gateway's side).
pub async fn receive_first(socket: &UnixStream) -> io::Result<First> {
    loop {
        socket.readable().await?;
        let got = socket.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            // Room for one descriptor: the kernel closes any more that were sent.
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let read = recvmsg(
                socket,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?
            .bytes;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok((read, byte[0], fds))
        });
        let (read, byte, mut fds) = match got {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        return Ok(match (read, fds.len()) {
            (0, _) => First::Nothing,
            (_, 0) => First::Byte(byte),
            (_, 1) if byte == MARKER => First::HandedOff(fds.remove(0)),
            // Descriptors with another byte, or several: nothing the relay sends. They are
            // dropped (closed) here.
            _ => First::Nothing,
        });
    }
}

/// The handed-off descriptor as a tokio TCP stream, if it is a connected TCP socket (an
/// IPv4 or IPv6 stream socket, not listening, with a peer); else an error, and the
/// descriptor is closed.
pub fn into_tcp(fd: OwnedFd) -> io::Result<tokio::net::TcpStream> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    let family = getsockname(&fd).map_err(io::Error::from)?.address_family();
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Err(refuse("not a TCP socket"));
    }
    if sockopt::socket_type(&fd).map_err(io::Error::from)? != SocketType::STREAM {
        return Err(refuse("not a stream socket"));
    }
    if sockopt::socket_acceptconn(&fd).map_err(io::Error::from)? {
        return Err(refuse("a listening socket"));
    }
    let stream = std::net::TcpStream::from(fd);
    stream.peer_addr()?;
    stream.set_nonblocking(true)?;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    // A stream is many small writes; without this each waits for the last ACK.
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    #[tokio::test]
    async fn a_tcp_connection_is_handed_over_and_plain_bytes_stay_in_the_stream() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(tcp.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = tcp.accept().await.unwrap();
        let (relay, gateway) = UnixStream::pair().unwrap();
        send(&relay, &accepted).await.unwrap();
        drop(accepted);
        let First::HandedOff(fd) = receive_first(&gateway).await.unwrap() else {
            panic!("a hand-off")
        };
        let mut served = into_tcp(fd).unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        served.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");

        let (mut plain, gateway) = UnixStream::pair().unwrap();
        plain.write_all(b"POST /v1/messages").await.unwrap();
        assert!(matches!(
            receive_first(&gateway).await.unwrap(),
            First::Byte(b'P')
        ));
        drop(plain);
        let mut rest = String::new();
        let mut gateway = gateway;
        gateway.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "OST /v1/messages");
    }

    #[tokio::test]
    async fn only_a_connected_tcp_socket_is_served() {
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = into_tcp(OwnedFd::from(listening)).unwrap_err();
        assert!(err.to_string().contains("listening"), "{err}");
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = into_tcp(OwnedFd::from(unix)).unwrap_err();
        assert!(err.to_string().contains("not a TCP socket"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(into_tcp(OwnedFd::from(file)).is_err());
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = into_tcp(OwnedFd::from(udp)).unwrap_err();
        assert!(err.to_string().contains("not a stream"), "{err}");
        let unconnected =
            rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        assert!(into_tcp(unconnected).is_err(), "no peer");

        // Another byte with a descriptor, or a message closed at once: nothing.
        let (relay, gateway) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = [file.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            &relay,
            &[IoSlice::new(b"x")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(matches!(
            receive_first(&gateway).await.unwrap(),
            First::Nothing
        ));
        let (relay, gateway) = UnixStream::pair().unwrap();
        drop(relay);
        assert!(matches!(
            receive_first(&gateway).await.unwrap(),
            First::Nothing
        ));
    }
}
