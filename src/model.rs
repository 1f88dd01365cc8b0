//! Plain data shared by the store, the hub and the wire protocol, with the value rules
//! of the contract (room names, bodies, nonces, usernames, passwords).
//!
//! Each rule lives here once so the HTTP API, the WebSocket session and the tests agree.

use serde::{Deserialize, Serialize};

/// Who someone is, as every other client sees them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn from_db(text: &str) -> Self {
        if text == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// A message as stored, and as sent to clients (`{"type":"message",…}`); read back
/// from JSON by the Redis broker, which passes it between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "message")]
pub struct StoredMessage {
    pub room: String,
    pub seq: u64,
    pub from: UserRef,
    pub body: String,
    /// Unix time in milliseconds.
    pub ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`
pub fn is_valid_room(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// A nonce is at most 64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= 64
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    Empty,
    TooLong,
    ControlCharacter,
    BidiControl,
}

impl BodyProblem {
    pub fn message(self, max_chars: usize) -> String {
        match self {
            BodyProblem::Empty => "the message is empty".to_owned(),
            BodyProblem::TooLong => format!("the message is longer than {max_chars} characters"),
            BodyProblem::ControlCharacter => {
                "the message contains a control character (only newline and tab are allowed)"
                    .to_owned()
            }
            BodyProblem::BidiControl => {
                "the message contains a bidirectional override or isolate character (U+202A to U+202E, U+2066 to U+2069), which would change how the text around it is displayed"
                    .to_owned()
            }
        }
    }
}

/// The explicit bidirectional embedding, override and isolate controls (U+202A–U+202E,
/// U+2066–U+2069). They reorder the text that follows them in every client that renders
/// bidirectional text, so a name or message could show something other than what it
/// says ("Trojan Source"); they are refused like control characters. The implicit marks
/// (U+200E, U+200F, U+061C) only nudge neutral characters and stay allowed.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// 1 to `max_chars` characters, no control characters except `\n` and `\t`.
pub fn check_body(body: &str, max_chars: usize) -> Result<(), BodyProblem> {
    if body.is_empty() {
        return Err(BodyProblem::Empty);
    }
    if body.chars().count() > max_chars {
        return Err(BodyProblem::TooLong);
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(BodyProblem::ControlCharacter);
    }
    if body.chars().any(is_bidi_control) {
        return Err(BodyProblem::BidiControl);
    }
    Ok(())
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// A display name (the `name` every other client sees): 1 to 64 characters, no control
/// characters at all and no bidirectional controls. Names palisade registers itself are
/// usernames and always pass; names in tokens from an external issuer are checked here.
pub fn is_valid_display_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_DISPLAY_NAME_CHARS
        && !name.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// `^[A-Za-z0-9_]{3,32}$`
pub fn is_valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// 8 to 128 characters.
pub fn is_acceptable_password(password: &str) -> bool {
    (8..=128).contains(&password.chars().count())
}

/// Whether a `rooms` claim (`None`: no restriction) lets its holder into `room`.
/// An entry ending in `*` matches every room that starts with what precedes it.
pub fn room_allowed(allowlist: Option<&[String]>, room: &str) -> bool {
    let Some(list) = allowlist else { return true };
    list.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => entry == room,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// [`now_millis`], unsigned: the expiry scores the cluster keeps in Redis.
pub(crate) fn unix_millis() -> u64 {
    u64::try_from(now_millis()).unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_pattern() {
        for ok in ["general", "a", "0day", "x-y_z", &"a".repeat(64)] {
            assert!(is_valid_room(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            "General",
            "a b",
            "é",
            &"a".repeat(65),
            "a/b",
        ] {
            assert!(!is_valid_room(bad), "{bad}");
        }
    }

    #[test]
    fn bodies_allow_newline_and_tab_but_no_other_control_character() {
        assert_eq!(check_body("hi\nthere\t!", 2000), Ok(()));
        assert_eq!(check_body("", 2000), Err(BodyProblem::Empty));
        assert_eq!(
            check_body("a\u{0}b", 2000),
            Err(BodyProblem::ControlCharacter)
        );
        assert_eq!(check_body("a\rb", 2000), Err(BodyProblem::ControlCharacter));
        assert_eq!(check_body(&"é".repeat(2000), 2000), Ok(()));
        assert_eq!(
            check_body(&"é".repeat(2001), 2000),
            Err(BodyProblem::TooLong)
        );
    }

    #[test]
    fn bodies_refuse_every_bidi_override_and_isolate() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(
                check_body(&format!("pay {c}gnp.exe"), 2000),
                Err(BodyProblem::BidiControl),
                "U+{:04X}",
                u32::from(c)
            );
        }
        for allowed in ["\u{200E}marked", "\u{2029}", "\u{2065}", "\u{202F}", "שלום"] {
            assert_eq!(check_body(allowed, 2000), Ok(()), "{allowed:?}");
        }
    }

    #[test]
    fn display_names_refuse_controls_bidi_and_excess_length() {
        assert!(is_valid_display_name("dora"));
        assert!(is_valid_display_name("Dóra Ñ 🙂"));
        assert!(is_valid_display_name(&"é".repeat(64)));
        for bad in [
            String::new(),
            "é".repeat(65),
            "a\tb".to_owned(),
            "a\nb".to_owned(),
            "admin\u{202E}nimda".to_owned(),
            "x\u{2066}y".to_owned(),
        ] {
            assert!(!is_valid_display_name(&bad), "{bad:?}");
        }
    }

    #[test]
    fn nonces_and_usernames_follow_their_patterns() {
        assert!(is_valid_nonce("c1f2a9"));
        assert!(!is_valid_nonce(""));
        assert!(!is_valid_nonce(&"a".repeat(65)));
        assert!(!is_valid_nonce("a b"));
        assert!(is_valid_username("alice_1"));
        assert!(!is_valid_username("al"));
        assert!(!is_valid_username("alice!"));
        assert!(is_acceptable_password("12345678"));
        assert!(!is_acceptable_password("1234567"));
        assert!(!is_acceptable_password(&"x".repeat(129)));
    }

    #[test]
    fn rooms_claim_matches_exact_names_and_star_prefixes() {
        let list = vec!["general".to_owned(), "team-*".to_owned()];
        assert!(room_allowed(Some(&list), "general"));
        assert!(room_allowed(Some(&list), "team-red"));
        assert!(!room_allowed(Some(&list), "generalx"));
        assert!(!room_allowed(Some(&list), "random"));
        assert!(room_allowed(None, "anything"));
    }
}
