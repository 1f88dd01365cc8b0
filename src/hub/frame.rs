//! A server frame serialised once, as the hub, the outbox and the broker pass it around.
//!
//! The core's own type, so none of them names the transport's. It is cheap to clone (a
//! reference count) and every recipient of a room event shares the same bytes.
//!
//! Inside, it is the text type of the WebSocket library, kept private to this module:
//! the writer turns a frame into a text message by taking it out, without copying or
//! checking it again. A frame holding plain `bytes::Bytes` would be as neutral, but the
//! library builds text from bytes only through a UTF-8 check, which would run once per
//! recipient of every broadcast; here the text is known to be UTF-8 when the frame is
//! made, from a `String` or a `&'static str`. A transport that receives frames as bytes
//! (a broker between nodes) checks them once per node when it makes them.

use std::fmt;
use tungstenite::Utf8Bytes;

/// One serialised server frame: UTF-8 text, shared by every recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Utf8Bytes);

impl Frame {
    /// A frame of fixed text, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Utf8Bytes::from_static(text))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Its size in bytes, as the outbound queues count it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same bytes as the WebSocket library's text, for the writer: no copy, no check.
    pub(crate) fn into_text(self) -> Utf8Bytes {
        self.0
    }
}

impl From<String> for Frame {
    /// Takes the string's buffer as it is.
    fn from(text: String) -> Self {
        Self(Utf8Bytes::from(text))
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Self::from_static(text)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reaches_the_writer_as_the_same_bytes_it_was_made_from() {
        let text = String::from(r#"{"type":"message"}"#);
        let start = text.as_ptr();
        let frame = Frame::from(text);
        let shared = frame.clone();
        let out = frame.into_text();
        assert_eq!(out.as_str(), r#"{"type":"message"}"#);
        assert_eq!(out.as_str().as_ptr(), start, "not copied on the way out");
        assert_eq!(shared.as_str().as_ptr(), start, "clones share the bytes");
    }
}
