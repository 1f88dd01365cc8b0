//! hyper answers a request it cannot parse (a malformed request line or header: 400; too
//! many or too large headers: 431; a URI too long: 414) by itself, below axum: a bare
//! head with no body and none of the security headers the router adds. [`BareErrors`]
//! wraps a connection's IO and, when hyper writes such a head, writes in its place a
//! complete answer of the same status with the JSON error body, the
//! [`security_headers`](crate::http::security_headers) (HSTS included under TLS) and
//! `connection: close` (hyper closes the connection after it anyway).
//!
//! hyper's own error head is told apart from the router's answers by what it lacks: every
//! answer that went through the router carries a `content-security-policy` header, and
//! hyper's carries `content-length: 0` and none. hyper hands over each head whole, at the
//! start of a write: the whole buffer of a plain write, or the first slice of a vectored
//! one (hyper keeps heads in their own buffer, ahead of the queued body). Vectored writes
//! are forwarded as they are, so the connection keeps them.
//!
//! A write is looked at only by its first bytes (anything but a 4xx or 5xx head is let
//! through after the status line), and only until the connection upgrades: once a
//! `101 Switching Protocols` head went through, the bytes belong to a WebSocket and every
//! write goes straight to the inner IO.
//!
//! Each such answer is a security event (`malformed_request`, with the TCP peer's
//! address and the status; never the request's bytes), written through the shared
//! [`SecurityLog`] so a flood of garbage cannot fill the disk.

use crate::outgoing::Outgoing;
use crate::security_log::SecurityLog;
use axum::http::StatusCode;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's IO, with hyper's own bare error answers made complete.
pub(crate) struct BareErrors<I> {
    inner: I,
    /// The TCP peer (a proxy's address when there is one), for the security log.
    peer: IpAddr,
    log: Arc<SecurityLog>,
    /// Whether the connection is TLS, so answers carry HSTS like the router's.
    tls: bool,
    /// Off once the connection upgraded: hyper writes no heads any more.
    inspecting: bool,
    /// A replacement answer not yet fully written.
    pending: Outgoing,
}

impl<I> BareErrors<I> {
    pub(crate) fn new(inner: I, peer: IpAddr, log: Arc<SecurityLog>, tls: bool) -> Self {
        Self {
            inner,
            peer,
            log,
            tls,
            inspecting: true,
            pending: Outgoing::default(),
        }
    }
}

impl<I: AsyncWrite + Unpin> BareErrors<I> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pending.poll_write_out(&mut self.inner, cx)
    }

    /// Looks at a write that may begin a head: stops inspecting at an upgrade, and puts
    /// the complete answer in place of one of hyper's bare error heads. `Some(n)` when
    /// `head` was replaced and counts as written (`n` bytes); `None` when the write goes
    /// through as it is.
    fn replace_head(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Option<io::Result<usize>> {
        if head.starts_with(b"HTTP/1.1 101 ") {
            self.inspecting = false;
            return None;
        }
        let status = bare_error_status(head)?;
        if self.log.admit(self.peer, "malformed_request") {
            tracing::warn!(target: "security", event = "malformed_request", ip = %self.peer, status = status.as_u16());
        }
        self.pending = Outgoing::from(json_answer(status, self.tls));
        // hyper's head counts as written; the replacement goes out now or on flush.
        if let Poll::Ready(Err(error)) = self.poll_pending(cx) {
            return Some(Err(error));
        }
        Some(Ok(head.len()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for BareErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for BareErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.inspecting {
            ready!(this.poll_pending(cx))?;
            if let Some(replaced) = this.replace_head(cx, buf) {
                return Poll::Ready(replaced);
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.inspecting {
            ready!(this.poll_pending(cx))?;
            let head = bufs
                .iter()
                .find(|buf| !buf.is_empty())
                .map_or(&[][..], |buf| &**buf);
            if let Some(replaced) = this.replace_head(cx, head) {
                return Poll::Ready(replaced);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// If `written` starts with one of hyper's own bare error heads, its status.
fn bare_error_status(written: &[u8]) -> Option<StatusCode> {
    let rest = written.strip_prefix(b"HTTP/1.")?;
    let status = StatusCode::from_bytes(rest.get(2..5)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &written[..head_end];
    let has = |needle: &[u8]| {
        head.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if has(b"\r\ncontent-security-policy:") || !has(b"\r\ncontent-length: 0") {
        return None;
    }
    Some(status)
}

fn json_answer(status: StatusCode, tls: bool) -> Vec<u8> {
    let body = crate::error::body_for_status(status);
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in crate::http::security_headers(tls) {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    answer.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 09:45:08 GMT\r\n\r\n";

    #[test]
    fn hyper_s_bare_error_head_is_replaced_by_a_complete_json_answer() {
        let status = bare_error_status(HYPER_431).unwrap();
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let answer = String::from_utf8(json_answer(status, false)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("content-security-policy: default-src 'self'"));
        assert!(head.contains("x-content-type-options: nosniff"));
        assert!(!head.contains("strict-transport-security"));
        let answer = String::from_utf8(json_answer(status, true)).unwrap();
        assert!(answer.contains("\r\nstrict-transport-security: max-age="));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "request_header_fields_too_large");
    }

    #[test]
    fn answers_from_the_router_and_other_bytes_pass_untouched() {
        for written in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-security-policy: x\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"\x81\x05hello",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0",
            b"",
        ] {
            assert!(
                bare_error_status(written).is_none(),
                "{:?}",
                String::from_utf8_lossy(written)
            );
        }
    }

    fn wrapped(inner: tokio::io::DuplexStream) -> BareErrors<tokio::io::DuplexStream> {
        let log = SecurityLog::new(std::time::Duration::from_secs(10), 5, 64);
        BareErrors::new(inner, IpAddr::from([127, 0, 0, 1]), Arc::new(log), false)
    }

    #[tokio::test]
    async fn a_bare_error_head_written_vectored_is_replaced_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut io = wrapped(server);
        let slices = [IoSlice::new(b""), IoSlice::new(HYPER_431)];
        let n = io.write_vectored(&slices).await.unwrap();
        assert_eq!(n, HYPER_431.len());
        io.shutdown().await.unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(
            received,
            json_answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, false)
        );
    }

    #[tokio::test]
    async fn after_an_upgrade_every_byte_goes_through_uninspected() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut io = wrapped(server);
        let upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        io.write_all(upgrade).await.unwrap();
        assert!(!io.inspecting);
        // A WebSocket payload that happens to look like hyper's head is only payload.
        io.write_all(HYPER_431).await.unwrap();
        io.shutdown().await.unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, [&upgrade[..], HYPER_431].concat());
    }
}
