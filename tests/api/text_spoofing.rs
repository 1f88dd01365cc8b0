//! Bidirectional override and isolate controls reorder the text around them in every
//! client: they are refused in message bodies and in display names, like control
//! characters.

use crate::helpers::{generous_budget, now, sign, spawn_app, spawn_app_with};
use serde_json::json;

/// Every explicit embedding, override and isolate control.
fn bidi_controls() -> impl Iterator<Item = char> {
    ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}')
}

#[tokio::test]
async fn a_body_with_a_bidi_override_gets_invalid_body_and_the_connection_stays_open() {
    let app = spawn_app_with(generous_budget).await;
    let (mut alice, _) = app.join("alice", "general").await;
    for (id, c) in bidi_controls().enumerate() {
        alice
            .send(
                json!({"type":"send","id":id,"room":"general","body":format!("invoice{c}fdp.exe")}),
            )
            .await;
        let error = alice.recv_type("error").await;
        assert_eq!(
            error["code"],
            "invalid_body",
            "U+{:04X}: {error}",
            u32::from(c)
        );
        assert_eq!(error["id"], id);
        assert!(
            error["message"].as_str().unwrap().contains("bidirectional"),
            "{error}"
        );
    }
    // Nothing was stored, and an ordinary right-to-left message still goes through.
    let ack = alice.say("general", "שלום עולם").await;
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn a_token_whose_display_name_holds_a_bidi_control_is_refused() {
    let app = spawn_app().await;
    for c in bidi_controls() {
        let token = sign(&json!({
            "sub": "id-mallory",
            "name": format!("admin{c}yrollam"),
            "iat": now(),
            "exp": now() + 900,
        }));
        let refusal = app.refused(&token).await;
        assert_eq!(refusal.status, 401, "U+{:04X}", u32::from(c));
        assert_eq!(refusal.code(), "unauthorized");
        let ticket = app.request_ticket(&token).await;
        assert_eq!(ticket.status(), 401);
    }
}

#[tokio::test]
async fn a_token_whose_display_name_holds_a_control_character_or_is_too_long_is_refused() {
    let app = spawn_app().await;
    for name in [
        "line\nbreak".to_owned(),
        "bell\u{7}".to_owned(),
        "n".repeat(65),
    ] {
        let token = sign(&json!({"sub":"id-x","name":name,"iat":now(),"exp":now()+900}));
        assert_eq!(app.refused(&token).await.status, 401, "{name:?}");
    }
    let fine = sign(&json!({"sub":"id-y","name":"Dóra 🙂","iat":now(),"exp":now()+900}));
    assert!(app.connect_with(&fine).await.is_ok());
}
