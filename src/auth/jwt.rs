//! JSON Web Tokens: minted at login (HS256), checked on every way in.
//!
//! Besides its own HS256 tokens, palisade accepts tokens minted by the operator's app:
//! with the same shared secret, or signed with a private key whose public half (PEM) is
//! configured for exactly one of RS256, ES256 or EdDSA. Each key accepts only its own
//! algorithm: a token whose header names `none` or any other algorithm is refused, as are
//! expired and not-yet-valid ones (no leeway), and, when configured, tokens for another
//! issuer or audience.
//!
//! A token dated in the future (`iat` after palisade's clock, no leeway) is refused too:
//! revocation voids the tokens issued up to a moment, so a token claiming to be issued
//! later would escape every revocation recorded before that date. An issuing app whose
//! clock may run ahead can safely backdate `iat` by a second or two instead.
//!
//! palisade marks the tokens it mints with the claim `"issued_by":"palisade"`, so renewal can
//! tell its own tokens from an external issuer's (see [`Minter`]).
//! The `name` claim is shown to every other member of a room, so a token whose name
//! breaks the display-name rule ([`is_valid_display_name`]: control characters, bidi
//! overrides, more than 64 characters) is refused as a whole rather than rewritten: the
//! issuer made a mistake, and silently showing a different name would hide it.

use super::Identity;
use crate::model::{Role, UserRef, is_valid_display_name, now_secs};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The value of the `issued_by` claim palisade writes into its own tokens.
const MINTED_BY_PALISADE: &str = "palisade";

/// Who minted a token. Only palisade's own tokens may be renewed by palisade: an external
/// issuer decides itself how long its users stay signed in, and renews their tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Minter {
    /// Signed with palisade's HS256 key and carrying palisade's mark.
    Palisade,
    /// The operator's app (shared secret or public key), or anything without the mark.
    #[default]
    External,
}

/// The claims palisade reads. Unknown claims from other issuers are ignored; `iss` and
/// `aud` are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    /// A missing `iat` counts as the epoch: any revocation of the user voids the token.
    #[serde(default)]
    iat: i64,
    exp: i64,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    issued_by: Option<String>,
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
    rooms: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    issued_by: &'a str,
}

/// Why a token was refused: for the security log only, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token revoked")]
    Revoked,
    #[error("account disabled")]
    Disabled,
    #[error("the name claim is not a valid display name")]
    BadDisplayName,
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
            TokenRejection::IssuedInFuture => "token_issued_in_future",
            TokenRejection::Revoked => "token_revoked",
            TokenRejection::Disabled => "account_disabled",
            TokenRejection::BadDisplayName => "bad_display_name",
        }
    }
}

/// The algorithms an operator's public key may be configured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PublicKeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl PublicKeyAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            PublicKeyAlgorithm::Rs256 => Algorithm::RS256,
            PublicKeyAlgorithm::Es256 => Algorithm::ES256,
            PublicKeyAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }

    fn decoding_key(self, pem: &[u8]) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        match self {
            PublicKeyAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            PublicKeyAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
            PublicKeyAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the JWT public key {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("--jwt-public-key needs --jwt-public-key-algorithm (RS256, ES256 or EdDSA)")]
    AlgorithmMissing,
}

/// What the keys are made from: the few settings of tokens. The configuration builds it
/// (`Settings::jwt_config`), so this module needs nothing of the configuration's and the
/// dependency points one way, config → jwt.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// palisade's own HS256 secret, also accepted from the operator's app.
    pub secret: SecretString,
    /// PEM public key of an external issuer, and the one algorithm it signs with.
    pub public_key: Option<PathBuf>,
    pub public_key_algorithm: Option<PublicKeyAlgorithm>,
    /// When set, required in every token (and written into palisade's own).
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Lifetime of the tokens palisade mints.
    pub ttl_secs: u64,
}

impl JwtConfig {
    /// HS256 only, no issuer or audience: the shape of a development server's tokens.
    pub fn with_secret(secret: SecretString, ttl_secs: u64) -> Self {
        Self {
            secret,
            public_key: None,
            public_key_algorithm: None,
            issuer: None,
            audience: None,
            ttl_secs,
        }
    }
}

/// A key that verifies tokens of one algorithm.
struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    verifiers: Vec<Verifier>,
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
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let secret = config.secret.expose_secret().as_bytes();
        let validation_for = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = 0;
            validation.validate_nbf = true;
            // A configured issuer or audience is required, not only checked when present.
            let mut required = vec!["exp", "sub"];
            match &config.issuer {
                Some(iss) => {
                    validation.set_issuer(&[iss]);
                    required.push("iss");
                }
                None => validation.iss = None,
            }
            match &config.audience {
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        let mut verifiers = vec![Verifier {
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
            validation: validation_for(Algorithm::HS256),
        }];
        if let Some(path) = &config.public_key {
            let algorithm = config
                .public_key_algorithm
                .ok_or(KeyError::AlgorithmMissing)?;
            let unreadable = |reason: String| KeyError::Unreadable {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
            let key = algorithm
                .decoding_key(&pem)
                .map_err(|e| unreadable(e.to_string()))?;
            verifiers.push(Verifier {
                algorithm: algorithm.algorithm(),
                key,
                validation: validation_for(algorithm.algorithm()),
            });
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            verifiers,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: i64::try_from(config.ttl_secs).unwrap_or(i64::MAX / 2),
        })
    }

    /// Mints a token for a user, valid for the configured lifetime.
    pub fn issue(
        &self,
        user: &UserRef,
        role: Role,
        rooms: Option<&[String]>,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let exp = iat.saturating_add(self.ttl_secs);
        let claims = IssuedClaims {
            sub: &user.id,
            name: &user.name,
            iat,
            exp,
            role,
            rooms,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            issued_by: MINTED_BY_PALISADE,
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
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        let verifier = self
            .verifiers
            .iter()
            .find(|v| v.algorithm == header.alg)
            .ok_or(TokenRejection::WrongAlgorithm)?;
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
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
        if claims.iat > now_secs() {
            return Err(TokenRejection::IssuedInFuture);
        }
        if !is_valid_display_name(&claims.name) {
            return Err(TokenRejection::BadDisplayName);
        }
        // The mark counts only under palisade's own key: a public-key issuer cannot claim it.
        let minted_by = if verifier.algorithm == Algorithm::HS256
            && claims.issued_by.as_deref() == Some(MINTED_BY_PALISADE)
        {
            Minter::Palisade
        } else {
            Minter::External
        };
        Ok(Identity {
            user: UserRef {
                id: claims.sub,
                name: claims.name,
            },
            role: claims.role.unwrap_or_default(),
            rooms: claims.rooms,
            expires_at: claims.exp,
            issued_at: claims.iat,
            minted_by,
        })
    }
}

/// Keys with a fresh random secret, as a development server's: no two calls agree.
#[cfg(test)]
pub(crate) fn random_keys() -> JwtKeys {
    let secret = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
    JwtKeys::new(&JwtConfig::with_secret(secret, 15 * 60)).expect("HS256 keys need no file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys() -> JwtKeys {
        random_keys()
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
        let issued = keys.issue(&alice(), Role::User, None).unwrap();
        let identity = keys.verify(&issued.token).unwrap();
        assert_eq!(identity.user, alice());
        assert_eq!(identity.expires_at, issued.expires_at);
    }

    #[test]
    fn a_token_from_another_secret_is_refused() {
        let issued = keys().issue(&alice(), Role::User, None).unwrap();
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
    fn a_token_in_an_algorithm_no_key_is_configured_for_is_refused() {
        let keys = keys();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"u","name":"n","exp":9999999999}"#);
        assert!(matches!(
            keys.verify(&format!("{header}.{body}.c2ln")),
            Err(TokenRejection::WrongAlgorithm)
        ));
    }

    #[test]
    fn a_token_whose_name_holds_a_bidi_override_is_refused() {
        let keys = keys();
        let spoof = UserRef {
            id: "u-2".into(),
            name: "admin\u{202E}nimda".into(),
        };
        let issued = keys.issue(&spoof, Role::User, None).unwrap();
        assert!(matches!(
            keys.verify(&issued.token),
            Err(TokenRejection::BadDisplayName)
        ));
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
            rooms: None,
            iss: None,
            aud: None,
            issued_by: MINTED_BY_PALISADE,
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenRejection::Expired)));
    }

    fn signed(keys: &JwtKeys, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::default(), &claims, &keys.encoding).unwrap()
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused_without_leeway() {
        let keys = keys();
        let now = now_secs();
        let ahead = signed(
            &keys,
            serde_json::json!({"sub":"u-1","name":"alice","iat":now + 2,"exp":now + 600}),
        );
        assert!(matches!(
            keys.verify(&ahead),
            Err(TokenRejection::IssuedInFuture)
        ));
        let backdated = signed(
            &keys,
            serde_json::json!({"sub":"u-1","name":"alice","iat":now - 2,"exp":now + 600}),
        );
        assert!(keys.verify(&backdated).is_ok());
    }

    #[test]
    fn a_token_without_iat_counts_as_issued_at_the_epoch() {
        let keys = keys();
        let token = signed(
            &keys,
            serde_json::json!({"sub":"u-1","name":"alice","exp":now_secs() + 600}),
        );
        assert_eq!(keys.verify(&token).unwrap().issued_at, 0);
    }

    #[test]
    fn only_palisade_s_own_tokens_carry_its_mark() {
        let keys = keys();
        let own = keys.issue(&alice(), Role::User, None).unwrap();
        assert_eq!(keys.verify(&own.token).unwrap().minted_by, Minter::Palisade);
        let now = now_secs();
        let external = signed(
            &keys,
            serde_json::json!({"sub":"u-1","name":"alice","iat":now,"exp":now + 600}),
        );
        assert_eq!(keys.verify(&external).unwrap().minted_by, Minter::External);
    }
}
