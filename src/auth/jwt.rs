//! HS256 JSON Web Tokens: minted at login, checked on every way in.
//!
//! The algorithm is pinned: a token whose header names `none` or any other algorithm
//! is refused, as are expired and not-yet-valid ones (no leeway), and, when configured,
//! tokens for another issuer or audience.

use super::Identity;
use crate::config::Settings;
use crate::model::{Role, UserRef, now_secs};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// The claims palisade reads. Unknown claims from other issuers are ignored; `iss` and
/// `aud` are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    #[serde(default)]
    iat: i64,
    exp: i64,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// The claims palisade writes.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    name: &'a str,
    iat: i64,
    exp: i64,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Why a token was refused: for the security log only, never for the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenRejection {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    Immature,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not allowed")]
    WrongAlgorithm,
    #[error("wrong issuer or audience")]
    WrongIssuerOrAudience,
    #[error("malformed token")]
    Malformed,
    #[error("token revoked")]
    Revoked,
}

impl TokenRejection {
    /// A stable label for the security log.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenRejection::Expired => "token_expired",
            TokenRejection::Immature => "token_not_yet_valid",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::WrongAlgorithm => "wrong_algorithm",
            TokenRejection::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            TokenRejection::Malformed => "malformed_token",
            TokenRejection::Revoked => "token_revoked",
        }
    }
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    ttl_secs: i64,
}

/// A freshly minted token.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: i64,
}

impl JwtKeys {
    pub fn new(settings: &Settings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &settings.jwt_issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            ttl_secs: i64::try_from(settings.limits.token_ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// Mints a token for a user, valid for the configured lifetime.
    pub fn issue(
        &self,
        user: &UserRef,
        role: Role,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let exp = iat.saturating_add(self.ttl_secs);
        let claims = IssuedClaims {
            sub: &user.id,
            name: &user.name,
            iat,
            exp,
            role,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            expires_at: exp,
        })
    }

    /// Checks signature, algorithm and time claims, and returns who the token names.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenRejection> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenRejection::Expired,
                ErrorKind::ImmatureSignature => TokenRejection::Immature,
                ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenRejection::WrongAlgorithm
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenRejection::WrongIssuerOrAudience
                }
                _ => TokenRejection::Malformed,
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.name.is_empty() {
            return Err(TokenRejection::Malformed);
        }
        Ok(Identity {
            user: UserRef {
                id: claims.sub,
                name: claims.name,
            },
            role: claims.role.unwrap_or_default(),
            rooms: claims.rooms,
            expires_at: claims.exp,
            issued_at: claims.iat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Settings::development())
    }

    fn alice() -> UserRef {
        UserRef {
            id: "u-1".into(),
            name: "alice".into(),
        }
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let keys = keys();
        let issued = keys.issue(&alice(), Role::User).unwrap();
        let identity = keys.verify(&issued.token).unwrap();
        assert_eq!(identity.user, alice());
        assert_eq!(identity.expires_at, issued.expires_at);
    }

    #[test]
    fn a_token_from_another_secret_is_refused() {
        let issued = keys().issue(&alice(), Role::User).unwrap();
        assert!(matches!(
            keys().verify(&issued.token),
            Err(TokenRejection::BadSignature)
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(
            format!(
                r#"{{"sub":"u-1","name":"alice","iat":0,"exp":{}}}"#,
                now_secs() + 600
            )
            .as_bytes(),
        );
        assert!(keys.verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn an_expired_token_is_refused_without_leeway() {
        let keys = keys();
        let claims = IssuedClaims {
            sub: "u-1",
            name: "alice",
            iat: now_secs() - 100,
            exp: now_secs() - 1,
            role: Role::User,
            iss: None,
            aud: None,
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenRejection::Expired)));
    }
}
