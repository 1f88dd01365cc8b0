//! The HTTP/1.1 WebSocket upgrade itself: the `101` answer and the socket after it.
//!
//! Done here rather than by axum's `WebSocketUpgrade` because that one fixes the IO
//! under the WebSocket: the server needs its own between hyper's upgraded connection
//! and tungstenite ([`BatchedIo`]), so that an idle connection holds no write buffer.
//! What axum checks of the request is checked here the same way; the server speaks
//! HTTP/1 only, so there is no HTTP/2 extended CONNECT to accept.

use super::batched_io::BatchedIo;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::response::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

/// A WebSocket connection once upgraded.
pub(crate) type Socket = WebSocketStream<BatchedIo<TokioIo<Upgraded>>>;

/// What a request offers to upgrade to: nothing unless it is a valid WebSocket upgrade.
/// Taken as the request is extracted, answered only after the handshake's checks, so
/// those checks come first whatever the request is.
pub struct UpgradeOffer(Option<Offer>);

struct Offer {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for UpgradeOffer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(offer(parts)))
    }
}

fn offer(parts: &mut Parts) -> Option<Offer> {
    let headers = &parts.headers;
    let valid = parts.version <= Version::HTTP_11
        && parts.method == Method::GET
        && has_token(headers, CONNECTION, "upgrade")
        && is(headers, UPGRADE, "websocket")
        && is(headers, SEC_WEBSOCKET_VERSION, "13");
    if !valid {
        return None;
    }
    let key = headers.get(SEC_WEBSOCKET_KEY)?.clone();
    // hyper puts it there on a connection served with upgrades.
    let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
    Some(Offer { key, on_upgrade })
}

fn is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|header| header.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether a comma-separated header lists `token` (`Connection: keep-alive, Upgrade`).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|header| {
        header
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl UpgradeOffer {
    /// Answers `101` and, once hyper hands the connection over, runs `session` on it in
    /// a task of its own; `None` if the request is no valid WebSocket upgrade.
    pub(crate) fn accept<F, Fut>(self, config: WebSocketConfig, session: F) -> Option<Response>
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Offer { key, on_upgrade } = self.0?;
        // Base64, so always a valid header value.
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes())).ok()?;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "websocket upgrade failed");
                    return;
                }
            };
            let io = BatchedIo::new(TokioIo::new(upgraded));
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            session(socket).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: axum::http::request::Builder) -> Parts {
        let (mut parts, ()) = request.body(()).expect("a valid request").into_parts();
        parts
            .extensions
            .insert(hyper::upgrade::on(axum::http::Request::new(
                axum::body::Body::empty(),
            )));
        parts
    }

    fn upgrade() -> axum::http::request::Builder {
        axum::http::Request::get("/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn only_a_complete_websocket_upgrade_is_offered() {
        assert!(offer(&mut parts(upgrade())).is_some());
        let broken = [
            upgrade().method(Method::POST),
            upgrade().header("connection", "close"),
            upgrade().header("upgrade", "h2c"),
            upgrade().header("sec-websocket-version", "8"),
        ];
        for request in broken {
            let mut parts = parts(request);
            // `header` appends: make each broken header the only one.
            for name in [CONNECTION, UPGRADE, SEC_WEBSOCKET_VERSION] {
                let last = parts.headers.get_all(&name).iter().next_back().cloned();
                if let Some(last) = last {
                    parts.headers.insert(name, last);
                }
            }
            assert!(offer(&mut parts).is_none(), "{:?}", parts.headers);
        }
        let mut no_key = parts(upgrade());
        no_key.headers.remove(SEC_WEBSOCKET_KEY);
        assert!(offer(&mut no_key).is_none());
        let mut not_upgradable = parts(upgrade());
        not_upgradable.extensions.clear();
        assert!(offer(&mut not_upgradable).is_none());
    }
}
