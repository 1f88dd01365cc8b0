//! Tokens minted by the operator's own app: public-key algorithms, pinned per key, and
//! `iss` / `aud` checks.

use crate::helpers::{now, sign, spawn_app_with};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade::auth::jwt::PublicKeyAlgorithm;
use serde_json::{Value, json};
use std::path::PathBuf;

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn claims() -> Value {
    json!({"sub":"app-user-7","name":"dora","iat":now(),"exp":now()+600})
}

pub(crate) fn signed_with(algorithm: Algorithm, private_pem: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(private_pem)).unwrap();
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => unreachable!(),
    }
    .unwrap();
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
}

pub(crate) async fn app_trusting(
    algorithm: PublicKeyAlgorithm,
    public_pem: &str,
) -> crate::helpers::TestApp {
    let path = fixture(public_pem);
    spawn_app_with(move |s| {
        s.jwt_public_key = Some(path);
        s.jwt_public_key_algorithm = Some(algorithm);
    })
    .await
}

#[tokio::test]
async fn tokens_signed_by_the_configured_key_are_accepted_for_each_algorithm() {
    for (config, algorithm, name) in [
        (PublicKeyAlgorithm::Rs256, Algorithm::RS256, "rs256"),
        (PublicKeyAlgorithm::Es256, Algorithm::ES256, "es256"),
        (PublicKeyAlgorithm::EdDsa, Algorithm::EdDSA, "eddsa"),
    ] {
        let app = app_trusting(config, &format!("{name}-public.pem")).await;
        let token = signed_with(algorithm, &format!("{name}-private.pem"), &claims());
        let mut client = app
            .connect_with(&token)
            .await
            .unwrap_or_else(|refusal| panic!("{name}: {refusal:?}"));
        assert_eq!(
            client.recv().await["user"],
            json!({"id":"app-user-7","name":"dora"})
        );
        // palisade's own HS256 tokens keep working next to the external key.
        assert!(app.connect_with(&app.token("alice")).await.is_ok());
    }
}

#[tokio::test]
async fn a_key_accepts_only_its_own_algorithm() {
    let app = app_trusting(PublicKeyAlgorithm::Es256, "es256-public.pem").await;
    let rs = signed_with(Algorithm::RS256, "rs256-private.pem", &claims());
    let ed = signed_with(Algorithm::EdDSA, "eddsa-private.pem", &claims());
    for token in [rs, ed] {
        assert_eq!(app.refused(&token).await.status, 401);
    }
    // The classic confusion attack: HS256 with the public key as the HMAC secret.
    let public_pem = std::fs::read(fixture("es256-public.pem")).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(app.refused(&confused).await.status, 401);
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|s| {
        s.jwt_issuer = Some("https://app.example".into());
        s.jwt_audience = Some("palisade".into());
    })
    .await;
    let with = |extra: Value| {
        let mut c = claims();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(&c)
    };
    let good = with(json!({"iss":"https://app.example","aud":"palisade"}));
    assert!(app.connect_with(&good).await.is_ok());
    for bad in [
        with(json!({})),
        with(json!({"iss":"https://evil.example","aud":"palisade"})),
        with(json!({"iss":"https://app.example","aud":"someone-else"})),
        with(json!({"iss":"https://app.example"})),
    ] {
        assert_eq!(app.refused(&bad).await.status, 401);
    }
    // Tokens palisade issues itself carry the configured iss and aud.
    let registered: Value = app
        .register("erin", "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let token = registered["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"));
    assert!(app.connect_with(token).await.is_ok());
}
