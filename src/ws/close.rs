//! WebSocket close codes of the protocol (`docs/protocol.md`), each with the reason text
//! sent along: what each of the core's [`CloseReason`]s becomes on the wire, and which
//! reason a transport error from the socket closes with.
//!
//! The codes and texts are a contract with clients; the core only names causes, so a
//! transport other than this one can carry the same closes in its own terms.

use crate::hub::outbox::CloseReason;
use std::io;
use tungstenite::error::ProtocolError;

/// How the server closes a WebSocket: the code and text a client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal close.
    Normal,
    /// 1001: the server is shutting down or draining.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol itself (unmasked frame, reserved
    /// opcode or bits, bad fragmentation...).
    ProtocolError,
    /// 1003: a binary frame was received.
    Unsupported,
    /// 1007: not UTF-8, not JSON, unknown `type` or field, wrong field type.
    InvalidPayload,
    /// 1008: the client kept sending (frames, pings or pongs) while out of rate budget.
    /// (Making the server buffer too much for it is a slow consumer: 4008.)
    PolicyViolation,
    /// 1009: a frame or message over the size limit.
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 4001: the token expired and was not refreshed.
    TokenExpired,
    /// 4002: no pong or frame within the heartbeat timeout.
    HeartbeatTimeout,
    /// 4003: the user was revoked or banned.
    Revoked,
    /// 4008: the outbound queue overflowed, or the client took none of our writes for
    /// the write-stall limit.
    SlowConsumer,
}

impl CloseCode {
    /// Every code the server may send, for metrics that list them all from the start.
    pub const ALL: [CloseCode; 12] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::Unsupported,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::TokenExpired,
        CloseCode::HeartbeatTimeout,
        CloseCode::Revoked,
        CloseCode::SlowConsumer,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::TokenExpired => 4001,
            CloseCode::HeartbeatTimeout => 4002,
            CloseCode::Revoked => 4003,
            CloseCode::SlowConsumer => 4008,
        }
    }

    /// The short reason sent in the close frame (well under the 123-byte limit).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::Unsupported => "binary frames are not supported",
            CloseCode::InvalidPayload => "invalid frame",
            CloseCode::PolicyViolation => "rate limit abuse",
            CloseCode::TooBig => "frame too large",
            CloseCode::Internal => "internal error",
            CloseCode::TokenExpired => "token expired",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
            CloseCode::Revoked => "access revoked",
            CloseCode::SlowConsumer => "slow consumer",
        }
    }
}

impl From<CloseReason> for CloseCode {
    /// Exhaustive, so a new reason cannot reach clients without a code chosen for it.
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Normal => CloseCode::Normal,
            CloseReason::ServerShutdown => CloseCode::GoingAway,
            CloseReason::ProtocolError => CloseCode::ProtocolError,
            CloseReason::Unsupported => CloseCode::Unsupported,
            CloseReason::InvalidPayload => CloseCode::InvalidPayload,
            CloseReason::RateAbuse => CloseCode::PolicyViolation,
            CloseReason::TooBig => CloseCode::TooBig,
            CloseReason::Internal => CloseCode::Internal,
            CloseReason::TokenExpired => CloseCode::TokenExpired,
            CloseReason::HeartbeatTimeout => CloseCode::HeartbeatTimeout,
            CloseReason::Revoked => CloseCode::Revoked,
            CloseReason::SlowConsumer => CloseCode::SlowConsumer,
        }
    }
}

/// What a socket error means for the connection: the reason to close with and a short
/// cause for the log.
pub fn for_transport_error(error: &tungstenite::Error) -> (CloseReason, &'static str) {
    use tungstenite::Error;
    match error {
        Error::Capacity(_) => (CloseReason::TooBig, "too_big"),
        Error::Utf8(_) => (CloseReason::InvalidPayload, "invalid_utf8"),
        // The peer just went away: nobody is left to tell.
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            (CloseReason::Normal, "reset")
        }
        Error::Protocol(_) => (CloseReason::ProtocolError, "protocol_violation"),
        // tungstenite keeps at most one pending pong: what fills its buffer is our own
        // frames to a client that does not read them, a slow consumer.
        Error::WriteBufferFull(_) => (CloseReason::SlowConsumer, "write_buffer_full"),
        Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            (CloseReason::SlowConsumer, "write_stalled")
        }
        _ => (CloseReason::Normal, "connection_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_close_reason_goes_out_with_its_documented_code_and_text() {
        // docs/protocol.md, "Close codes": a contract with clients, checked row by row.
        let documented = [
            (CloseReason::Normal, 1000, "bye"),
            (CloseReason::ServerShutdown, 1001, "server shutting down"),
            (CloseReason::ProtocolError, 1002, "protocol error"),
            (
                CloseReason::Unsupported,
                1003,
                "binary frames are not supported",
            ),
            (CloseReason::InvalidPayload, 1007, "invalid frame"),
            (CloseReason::RateAbuse, 1008, "rate limit abuse"),
            (CloseReason::TooBig, 1009, "frame too large"),
            (CloseReason::Internal, 1011, "internal error"),
            (CloseReason::TokenExpired, 4001, "token expired"),
            (CloseReason::HeartbeatTimeout, 4002, "heartbeat timeout"),
            (CloseReason::Revoked, 4003, "access revoked"),
            (CloseReason::SlowConsumer, 4008, "slow consumer"),
        ];
        assert_eq!(documented.len(), CloseReason::ALL.len(), "every reason");
        for (reason, code, text) in documented {
            let close = CloseCode::from(reason);
            assert_eq!((close.code(), close.reason()), (code, text), "{reason:?}");
            assert!(text.len() <= 123, "fits a close frame: {reason:?}");
        }
        let mut codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        let mut mapped: Vec<u16> = CloseReason::ALL
            .iter()
            .map(|&r| CloseCode::from(r).code())
            .collect();
        codes.sort_unstable();
        mapped.sort_unstable();
        assert_eq!(
            mapped, codes,
            "every code the metrics list is one a reason sends"
        );
    }

    #[test]
    fn transport_errors_map_to_the_contract_codes() {
        let code = |error| {
            let (reason, _) = for_transport_error(&error);
            CloseCode::from(reason).code()
        };
        assert_eq!(code(tungstenite::Error::Utf8("x".into())), 1007);
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::UnmaskedFrameFromClient
            )),
            1002
        );
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            1000
        );
        assert_eq!(
            code(tungstenite::Error::Io(io::ErrorKind::TimedOut.into())),
            4008
        );
        assert_eq!(
            code(tungstenite::Error::Io(io::ErrorKind::BrokenPipe.into())),
            1000
        );
    }
}
