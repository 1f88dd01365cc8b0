//! WebSocket close codes of the wire contract, each with the reason text sent along.

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal close.
    Normal,
    /// 1001: the server is shutting down or draining.
    GoingAway,
    /// 1003: a binary frame was received.
    Unsupported,
    /// 1007: not JSON, unknown `type` or field, wrong field type.
    InvalidPayload,
    /// 1008: the client kept sending while out of rate budget.
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
    /// 4008: the outbound queue overflowed.
    SlowConsumer,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
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
