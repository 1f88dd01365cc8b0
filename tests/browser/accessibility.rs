//! Accessibility: the client works from the keyboard alone, and axe-core finds no serious or
//! critical violation on the sign-in page or in a room with messages.
//!
//! axe-core is installed, pinned by `tests/browser/package-lock.json`, into
//! `tests/browser/node_modules/` by `scripts/install-axe.sh` (which `install-browser.sh`
//! runs). Without it the axe test is skipped like a browser test without Chromium, and
//! fails when `PALISADE_REQUIRE_BROWSER` is set.

use super::{Browser, Server, bot_says, count_of, join_room, say, screenshot, sign_up, until};
use fantoccini::Client;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// How many Tab presses may separate two stops in the keyboard pass before it counts as lost.
const MOST_TABS: usize = 12;

/// Presses and releases each key in turn, as a keyboard would: no element is targeted.
async fn press(page: &Client, keys: &str) {
    let mut actions = KeyActions::new("keyboard".into());
    for key in keys.chars() {
        actions = actions
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
    }
    page.perform_actions(actions).await.unwrap();
}

fn key(key: Key) -> String {
    char::from(key).to_string()
}

/// What has keyboard focus, and whether it shows a focus outline.
async fn focused(page: &Client) -> Value {
    page.execute(
        "const e = document.activeElement;
         return {
             id: e.id, tag: e.tagName.toLowerCase(), room: e.dataset.room || null,
             outline: getComputedStyle(e).outlineStyle !== 'none' && getComputedStyle(e).outlineWidth !== '0px',
         };",
        vec![],
    )
    .await
    .unwrap()
}

/// Presses Tab until focus is on the element `is` describes (a JS test of `e`, the focused
/// element), at most `MOST_TABS` times; every stop on the way must show a focus outline.
async fn tab_to(page: &Client, what: &str, is: &str) {
    let mut stops = Vec::new();
    for _ in 0..MOST_TABS {
        press(page, &key(Key::Tab)).await;
        let here = focused(page).await;
        assert_eq!(
            here["outline"],
            json!(true),
            "the focused element shows an outline: {here}"
        );
        let arrived = page
            .execute(
                &format!("const e = document.activeElement; return Boolean({is});"),
                vec![],
            )
            .await
            .unwrap();
        stops.push(here);
        if arrived == json!(true) {
            return;
        }
    }
    panic!("{MOST_TABS} presses of Tab never reached {what}; focus went to {stops:?}");
}

#[tokio::test]
async fn a_keyboard_alone_can_sign_up_open_a_room_and_send_a_message() {
    let Some(browser) = Browser::start("a_keyboard_alone_can_open_a_room").await else {
        return;
    };
    let server = Server::start().await;
    // Someone is already in #lobby, so it is in the room list.
    let mut host = server.bot("host", "lobby").await;
    bot_says(&mut host, "lobby", "welcome, keyboard users").await;

    let page = browser.page("keys").await;
    page.goto(&server.url()).await.unwrap();
    tab_to(&page, "the username field", "e.id === 'username'").await;
    press(&page, "kim_keys").await;
    tab_to(&page, "the password field", "e.id === 'password'").await;
    press(&page, "correct horse battery").await;
    tab_to(&page, "Create account", "e.id === 'register'").await;
    press(&page, &key(Key::Enter)).await;
    until(
        &page,
        "online",
        "document.querySelector('#conn-state.online')",
    )
    .await;
    until(
        &page,
        "#lobby in the room list",
        "document.querySelector('#rooms button[data-room=\"lobby\"]')",
    )
    .await;

    tab_to(
        &page,
        "#lobby in the room list",
        "e.dataset.room === 'lobby'",
    )
    .await;
    press(&page, &key(Key::Enter)).await;
    until(
        &page,
        "#lobby open, with its history",
        &format!(
            "document.querySelector('#room-title').textContent === '#lobby' && {} === 1",
            count_of("welcome, keyboard users")
        ),
    )
    .await;
    tab_to(&page, "the message box", "e.id === 'body'").await;
    press(&page, "typed, not clicked").await;
    press(&page, &key(Key::Enter)).await;
    until(
        &page,
        "the message, delivered",
        &format!("{} === 1", count_of("typed, not clicked")),
    )
    .await;
    let here = focused(&page).await;
    assert_eq!(here["id"], json!("body"), "focus stays in the message box");
    let composer = page
        .execute("return document.getElementById('body').value;", vec![])
        .await
        .unwrap();
    assert_eq!(composer, json!(""), "the message box is emptied");
    screenshot(&page, "keyboard-only").await;
    page.close().await.unwrap();
}

fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js")
}

/// axe-core's source, or `None` (the test is skipped, saying so) when it is not installed.
fn axe_source(test: &str) -> Option<String> {
    let path = axe_path();
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(error) => {
            assert!(
                std::env::var_os("PALISADE_REQUIRE_BROWSER").is_none(),
                "PALISADE_REQUIRE_BROWSER is set but {} cannot be read ({error}): run scripts/install-axe.sh",
                path.display()
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED browser test {test}: no {} (run scripts/install-axe.sh)",
                path.display()
            );
            None
        }
    }
}

/// Runs axe-core in the page and returns its serious and critical violations, one line each.
async fn serious_violations(page: &Client, axe: &str) -> Vec<String> {
    page.execute(axe, vec![]).await.unwrap();
    let found = page
        .execute_async(
            "const done = arguments[0];
             axe.run(document, { resultTypes: ['violations'] }).then(
                 (results) => done(results.violations
                     .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                     .flatMap((v) => v.nodes.map((n) =>
                         `${v.impact} ${v.id} at ${JSON.stringify(n.target)}: ${v.help}`))),
                 (error) => done([`axe failed: ${error}`]));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

#[tokio::test]
async fn the_sign_in_page_and_a_room_have_no_serious_or_critical_axe_violations() {
    let test = "the_sign_in_page_and_a_room_have_no_serious_or_critical_axe_violations";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let Some(axe) = axe_source(test) else {
        return;
    };
    let server = Server::start().await;
    let page = browser.page("axe").await;
    page.goto(&server.url()).await.unwrap();
    let mut found = serious_violations(&page, &axe)
        .await
        .into_iter()
        .map(|v| format!("sign-in page: {v}"))
        .collect::<Vec<_>>();

    let mut friend = server.bot("friend", "lobby").await;
    bot_says(&mut friend, "lobby", "is this page accessible?").await;
    sign_up(&page, &server, "auditor").await;
    join_room(&page, "lobby").await;
    say(&page, "let us check").await;
    until(
        &page,
        "both messages",
        &format!(
            "{} === 1 && {} === 1",
            count_of("is this page accessible?"),
            count_of("let us check")
        ),
    )
    .await;
    found.extend(
        serious_violations(&page, &axe)
            .await
            .into_iter()
            .map(|v| format!("chat view: {v}")),
    );
    // Screen readers hear new messages: the list is a polite live region.
    let live = page
        .execute(
            "return document.getElementById('messages').closest('[aria-live]')?.getAttribute('aria-live');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(live, json!("polite"), "the message list is a live region");
    screenshot(&page, "axe-chat").await;
    page.close().await.unwrap();
    assert!(
        found.is_empty(),
        "axe-core found serious or critical violations:\n{}",
        found.join("\n")
    );
}
