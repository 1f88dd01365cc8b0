//! The frames of the protocol (`docs/protocol.md`), as Rust types.
//!
//! Client frames are parsed strictly: an unknown `type` or field, a missing required
//! field or a wrong type fails to parse, and the session closes with 1007. Value rules
//! (room names, bodies, limits…) are checked afterwards and answered with `error` frames.

use crate::model::{StoredMessage, UserRef, check_body, is_valid_nonce, is_valid_room};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Most messages a `history` request may ask for.
pub const HISTORY_MAX: u32 = 100;
/// What `history` returns when the client gives no `limit`.
pub const HISTORY_DEFAULT: u32 = 50;

const BAD_ROOM: &str =
    "room names are 1 to 64 characters of a-z, 0-9, _ and -, starting with a letter or digit";

/// Everything a client may send.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Join {
        id: Option<u32>,
        room: String,
        since: Option<u64>,
    },
    Leave {
        id: Option<u32>,
        room: String,
    },
    Send {
        id: Option<u32>,
        room: String,
        body: String,
        nonce: Option<String>,
    },
    History {
        id: Option<u32>,
        room: String,
        before: Option<u64>,
        limit: Option<u32>,
    },
    Typing {
        id: Option<u32>,
        room: String,
    },
    Refresh {
        id: Option<u32>,
        token: String,
    },
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The client's correlation id, echoed on the reply.
    pub fn id(&self) -> Option<u32> {
        match self {
            ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Send { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Typing { id, .. }
            | ClientFrame::Refresh { id, .. } => *id,
        }
    }
}

/// Why a well-formed frame was refused: answered with an `error` frame, connection open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl ClientFrame {
    /// The value rules of the contract (room names, bodies, nonces, limits), checked
    /// after parsing and before anything else, membership included.
    pub fn check_values(&self, max_body_chars: usize) -> Result<(), Refusal> {
        let room = match self {
            ClientFrame::Join { room, .. }
            | ClientFrame::Leave { room, .. }
            | ClientFrame::Send { room, .. }
            | ClientFrame::History { room, .. }
            | ClientFrame::Typing { room, .. } => room,
            ClientFrame::Refresh { .. } => return Ok(()),
        };
        if !is_valid_room(room) {
            return Err(Refusal::new(ErrorCode::BadRequest, BAD_ROOM));
        }
        match self {
            ClientFrame::Send { body, nonce, .. } => {
                if let Err(problem) = check_body(body, max_body_chars) {
                    return Err(Refusal::new(
                        ErrorCode::InvalidBody,
                        problem.message(max_body_chars),
                    ));
                }
                if nonce.as_deref().is_some_and(|n| !is_valid_nonce(n)) {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "a nonce is 1 to 64 characters: letters, digits, _ and -",
                    ));
                }
            }
            ClientFrame::History { limit, .. }
                if !(1..=HISTORY_MAX).contains(&limit.unwrap_or(HISTORY_DEFAULT)) =>
            {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "limit must be between 1 and 100",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Limits announced in `welcome`.
#[derive(Debug, Serialize)]
pub struct AdvertisedLimits {
    pub max_message_bytes: usize,
    /// The longest `send` body, in Unicode scalar values (what `invalid_body` counts), so
    /// a client can say "too long" before sending instead of after.
    pub max_body_chars: usize,
    pub messages_per_sec: u32,
    pub burst: u32,
}

/// Error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotJoined,
    Forbidden,
    RateLimited,
    InvalidBody,
    Unauthorized,
    /// The server cannot store right now (e.g. its disk is full): nothing was stored or
    /// delivered; retry after `retry_after_ms`, with the same nonce.
    Unavailable,
    Internal,
}

/// Everything the server sends (messages themselves are [`StoredMessage`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        user: &'a UserRef,
        expires_at: i64,
        heartbeat_secs: u64,
        limits: AdvertisedLimits,
    },
    Joined {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        room: &'a str,
        last_seq: u64,
        messages: &'a [StoredMessage],
        complete: bool,
        /// Distinct users in the room; `members` lists them all when it has as many.
        online: usize,
        /// Last, so [`joined_with_members`] can fill it in after the rest is encoded.
        members: &'a [UserRef],
    },
    Left {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        room: &'a str,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        room: &'a str,
        seq: u64,
        ts: i64,
        duplicate: bool,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        room: &'a str,
        messages: &'a [StoredMessage],
        /// Present (true) only when the byte bound left older messages out: page on
        /// with `before` set to the first `seq`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    Presence {
        room: &'a str,
        user: &'a UserRef,
        event: PresenceEvent,
    },
    /// How many users a room above `--presence-full-max` has now.
    Occupancy {
        room: &'a str,
        online: usize,
    },
    Typing {
        room: &'a str,
        user: &'a UserRef,
    },
    Refreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        expires_at: i64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// What a `joined` frame encoded with `online: 0` and no `members` ends with.
const JOINED_TAIL: &str = r#","online":0,"members":[]}"#;

/// A `joined` frame encoded with `online: 0` and `members: &[]`, completed with the
/// real ones: the costly part (the messages) is encoded outside the room's lock, and
/// only this runs under it.
pub fn joined_with_members(head: &str, online: usize, members: &[UserRef]) -> String {
    let members = serde_json::to_string(members).unwrap_or_else(|_| "[]".to_owned());
    let head = head.strip_suffix(JOINED_TAIL).unwrap_or_else(|| {
        tracing::error!("a joined frame without its tail");
        head.strip_suffix('}').unwrap_or(head)
    });
    format!(r#"{head},"online":{online},"members":{members}}}"#)
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// The `presence` frame of a change a cluster broker found by itself (a user whose
/// node died, swept): encoded here, where the wire format lives.
pub(crate) fn presence_frame(
    room: &str,
    user: &UserRef,
    change: crate::broker::presence::Change,
) -> crate::hub::Frame {
    use crate::broker::presence::Change;
    let event = match change {
        Change::Join => PresenceEvent::Join,
        Change::Leave => PresenceEvent::Leave,
    };
    crate::broker::encode(&ServerFrame::Presence { room, user, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn client_frames_of_the_contract_parse() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","id":1,"room":"general","since":41}"#).unwrap(),
            ClientFrame::Join {
                id: Some(1),
                room: "general".into(),
                since: Some(41)
            }
        );
        for text in [
            r#"{"type":"leave","id":2,"room":"general"}"#,
            r#"{"type":"send","id":3,"room":"general","body":"hi","nonce":"c1f2a9"}"#,
            r#"{"type":"history","id":4,"room":"general","before":100,"limit":50}"#,
            r#"{"type":"typing","room":"general"}"#,
            r#"{"type":"refresh","id":5,"token":"t"}"#,
        ] {
            assert!(ClientFrame::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn schema_violations_do_not_parse() {
        for text in [
            "not json",
            "[]",
            r#"{"room":"general"}"#,
            r#"{"type":"dance","room":"general"}"#,
            r#"{"type":"join","room":"general","extra":1}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"join","room":7}"#,
            r#"{"type":"join","id":-1,"room":"general"}"#,
            r#"{"type":"join","id":4294967296,"room":"general"}"#,
            r#"{"type":"send","room":"general"}"#,
        ] {
            assert!(ClientFrame::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn value_rules_are_checked_room_first() {
        let check = |text: &str| ClientFrame::parse(text).unwrap().check_values(2000);
        assert!(check(r#"{"type":"send","room":"general","body":"hi","nonce":"n-1"}"#).is_ok());
        let refused = |text: &str| check(text).unwrap_err().code;
        assert_eq!(
            refused(r#"{"type":"send","room":"Bad","body":""}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(r#"{"type":"send","room":"ok","body":""}"#),
            ErrorCode::InvalidBody
        );
        assert_eq!(
            refused(r#"{"type":"send","room":"ok","body":"x","nonce":"a b"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(r#"{"type":"history","room":"ok","limit":0}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(r#"{"type":"history","room":"ok","limit":101}"#),
            ErrorCode::BadRequest
        );
        assert!(check(r#"{"type":"history","room":"ok"}"#).is_ok());
        assert!(check(r#"{"type":"refresh","token":"t"}"#).is_ok());
    }

    #[test]
    fn server_frames_have_the_contract_shape() {
        let user = UserRef {
            id: "u".into(),
            name: "alice".into(),
        };
        let error = serde_json::to_value(ServerFrame::Error {
            id: Some(3),
            code: ErrorCode::RateLimited,
            message: "slow down",
            retry_after_ms: Some(180),
        })
        .unwrap();
        assert_eq!(
            error,
            json!({"type":"error","id":3,"code":"rate_limited","message":"slow down","retry_after_ms":180})
        );
        let message = StoredMessage {
            room: "general".into(),
            seq: 58,
            from: user.clone(),
            body: "hi".into(),
            ts: 1,
            nonce: None,
        };
        let value: Value = serde_json::to_value(&message).unwrap();
        assert_eq!(
            value,
            json!({"type":"message","room":"general","seq":58,"from":{"id":"u","name":"alice"},"body":"hi","ts":1})
        );
        let presence = serde_json::to_value(ServerFrame::Presence {
            room: "general",
            user: &user,
            event: PresenceEvent::Join,
        })
        .unwrap();
        assert_eq!(presence["event"], "join");
    }

    #[test]
    fn a_joined_frame_completed_with_its_members_is_the_frame_encoded_at_once() {
        let members = [UserRef {
            id: "u\"1".into(),
            name: "al\u{e9}ice".into(),
        }];
        let joined = |online, members| ServerFrame::Joined {
            id: Some(1),
            room: "general",
            last_seq: 3,
            messages: &[],
            complete: true,
            online,
            members,
        };
        let head = serde_json::to_string(&joined(0, &[])).unwrap();
        let whole = serde_json::to_string(&joined(7, &members)).unwrap();
        assert_eq!(joined_with_members(&head, 7, &members), whole);
    }
}
