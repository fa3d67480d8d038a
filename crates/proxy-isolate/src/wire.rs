//! The messages between netproxy and its namespace holder: one short text line per
//! `SOCK_SEQPACKET` message, with at most [`MAX_FDS`] descriptors attached (`SCM_RIGHTS`).
//!
//! Requests (netproxy → holder), each behind its number `ID`: `tcp ADDR`, `udp ADDR` (a socket
//! bound to `ADDR` inside the namespace), `dns IP` (the address put on `lo` when it is not already
//! local, then a UDP socket and a TCP listener on `IP:53`), `seal` (the holder drops its
//! capabilities). Replies: `ID ok ADDR` with the descriptors, or `ID err ERRNO TEXT`. At start the
//! holder sends `hello`, then `ready` or `refused STEP ERRNO TEXT`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The longest message, in bytes.
pub(crate) const MAX_MESSAGE: usize = 512;
/// The most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 2;

/// Sends `text` with `fds` attached, as one message.
pub(crate) fn send(socket: impl AsFd, text: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if text.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too long for the namespace holder's channel",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !ancillary.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("no room for the descriptors"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(text.as_bytes())],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )?;
    if sent != text.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the namespace holder's channel took part of a message",
        ));
    }
    Ok(())
}

/// Receives one message: its text and the descriptors attached. End of file (the other side
/// is gone) is [`io::ErrorKind::UnexpectedEof`]; a message that does not fit, or text that is
/// not UTF-8, is [`io::ErrorKind::InvalidData`] (any descriptors it carried are closed).
pub(crate) fn recv(socket: impl AsFd) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other side of the namespace holder's channel is gone",
        ));
    }
    if msg
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        || fds.len() > MAX_FDS
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an oversized message on the namespace holder's channel",
        ));
    }
    let text = std::str::from_utf8(&buf[..msg.bytes.min(MAX_MESSAGE)])
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a message that is not text on the namespace holder's channel",
            )
        })?
        .to_owned();
    Ok((text, fds))
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_and_its_descriptors_cross() {
        let (a, b) = pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        send(&a, "ok 127.0.0.1:1", &[file.as_fd()]).unwrap();
        let (text, fds) = recv(&b).unwrap();
        assert_eq!(text, "ok 127.0.0.1:1");
        assert_eq!(fds.len(), 1);
        send(&a, "seal", &[]).unwrap();
        let (text, fds) = recv(&b).unwrap();
        assert_eq!((text.as_str(), fds.len()), ("seal", 0));
        drop(a);
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let (a, b) = pair().unwrap();
        let long = "x".repeat(MAX_MESSAGE + 1);
        assert!(send(&a, &long, &[]).is_err());
        // Written around `send`'s check: the receiver refuses it too.
        rustix::net::send(&a, long.as_bytes(), SendFlags::empty()).unwrap();
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
