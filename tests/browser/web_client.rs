//! The web client explains itself: a refused origin, refused messages, reloads, form
//! rules, room-bound typing, the room list and focus, the favicon, older history.

use super::{
    Browser, Server, bot_says, count_of, join_room, reader_of_an_archive, say, screenshot, sign_up,
    until,
};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, Locator};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn run(page: &Client, script: &str) -> Value {
    page.execute(script, vec![]).await.unwrap()
}

async fn type_into(page: &Client, id: &str, text: &str) {
    let field = page.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(page: &Client, css: &str) {
    page.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Puts `text` in the composer as if typed (long texts would take send_keys ages).
async fn compose(page: &Client, text: &str) {
    page.execute(
        "const body = document.getElementById('body'); body.value = arguments[0];
         body.dispatchEvent(new Event('input'));",
        vec![json!(text)],
    )
    .await
    .unwrap();
}

async fn press_enter_in_composer(page: &Client) {
    page.find(Locator::Id("body"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
}

/// ChromeDriver's log of the page's console (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

async fn console_lines(page: &Client) -> Vec<Value> {
    let log = page.issue_cmd(BrowserLog).await.unwrap();
    log.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_page_on_a_refused_origin_says_what_the_operator_must_set() {
    let Some(browser) = Browser::start("a_page_on_a_refused_origin").await else {
        return;
    };
    // Allowed: http://127.0.0.1:PORT only. The same server under the name localhost is
    // another origin, as a server reached by a name its operator did not list.
    let server = Server::start().await;
    let page = browser.page("elsewhere").await;
    let origin = format!("http://localhost:{}", server.addr.port());
    page.goto(&format!("{origin}/")).await.unwrap();
    type_into(&page, "username", "stranger").await;
    type_into(&page, "password", "correct horse battery").await;
    click(&page, "#register").await;
    until(
        &page,
        "the explanation",
        "!document.getElementById('problem').hidden",
    )
    .await;
    let text = run(
        &page,
        "return document.getElementById('problem-text').textContent;",
    )
    .await;
    let text = text.as_str().unwrap();
    for needed in [
        format!("origin {origin} is not allowed"),
        "--allowed-origins".to_owned(),
        "PALISADE_ALLOWED_ORIGINS".to_owned(),
    ] {
        assert!(text.contains(&needed), "{needed:?} in {text:?}");
    }
    // It stops there: no handshake is tried, and no ticket asked for again in a loop
    // (watched for two seconds, four retry periods of the backoff's first steps).
    let quiet = page
        .execute_async(
            "const done = arguments[0];
             const badge = document.getElementById('conn-state');
             const observer = new MutationObserver(() => done('changed to ' + badge.textContent));
             observer.observe(badge, { subtree: true, childList: true, characterData: true, attributes: true });
             setTimeout(() => {
                 observer.disconnect();
                 const tickets = performance.getEntriesByType('resource')
                     .filter((e) => e.name.endsWith('/api/tickets')).length;
                 done([badge.textContent, tickets]);
             }, 2000);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(quiet, json!(["not allowed", 1]));
    screenshot(&page, "refused-origin").await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_refused_message_is_marked_failed_and_later_ones_still_send() {
    let Some(browser) = Browser::start("a_refused_message_is_marked_failed").await else {
        return;
    };
    let server = Server::start().await;
    let page = browser.page("alice").await;
    sign_up(&page, &server, "alice").await;
    join_room(&page, "limits").await;

    // While the server is down, Alice writes within the limits she was told; it comes
    // back with an operator's lower ones, and refuses the first two.
    let (addr, database_url, dir) = server.stop_seen_by(&page).await;
    let too_long = "x".repeat(300);
    // Too many bytes for the new frame limit: the server would close the socket on it.
    let too_big = "é".repeat(1500);
    for body in [
        too_long.as_str(),
        too_big.as_str(),
        "after the refused ones",
    ] {
        compose(&page, body).await;
        press_enter_in_composer(&page).await;
    }
    let _server = Server::start_on(addr, database_url, dir, |s| {
        s.limits.max_body_chars = 100;
        s.limits.max_message_bytes = palisade::config::frame_bytes_for_body(100);
    })
    .await;

    until(
        &page,
        "the later message sent",
        &format!("{} === 1", count_of("after the refused ones")),
    )
    .await;
    until(
        &page,
        "both refused ones marked failed, nothing left sending",
        "document.querySelectorAll('#messages li.failed').length === 2
         && document.querySelectorAll('#messages li.pending').length === 0",
    )
    .await;
    let reasons = run(
        &page,
        "return [...document.querySelectorAll('#messages li.failed .meta')].map(m => m.textContent);",
    )
    .await;
    let reasons: Vec<String> = serde_json::from_value(reasons).unwrap();
    assert!(
        reasons[0].starts_with("not sent: ") && reasons[0].contains("100"),
        "the server's reason: {reasons:?}"
    );
    assert!(reasons[1].contains("too large"), "{reasons:?}");
    screenshot(&page, "refused-message").await;

    // Edit takes it back into the composer, which states the new limit.
    click(&page, "#messages li.failed button").await;
    until(
        &page,
        "the body back in the composer with the rule",
        &format!(
            "document.getElementById('body').value.length === 300
             && document.getElementById('composer-error').textContent === {}
             && document.querySelectorAll('#messages li.failed').length === 1",
            json!("Too long: 300 characters, the limit is 100.")
        ),
    )
    .await;
    // Discard drops the other one.
    click(&page, "#messages li.failed button + button").await;
    until(
        &page,
        "no failed message left",
        "document.querySelectorAll('#messages li.failed').length === 0",
    )
    .await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_reload_returns_to_the_open_rooms_without_losing_or_doubling() {
    let Some(browser) = Browser::start("a_reload_returns_to_the_open_rooms").await else {
        return;
    };
    let server = Server::start().await;
    let mut bot_one = server.bot("carol", "one").await;
    let mut bot_two = server.bot("dave", "two").await;
    bot_says(&mut bot_one, "one", "carol in one").await;
    bot_says(&mut bot_two, "two", "dave in two").await;
    let page = browser.page("alice").await;
    sign_up(&page, &server, "alice").await;
    join_room(&page, "two").await;
    say(&page, "alice in two").await;
    until(
        &page,
        "sent",
        &format!("{} === 1", count_of("alice in two")),
    )
    .await;
    join_room(&page, "one").await;
    until(
        &page,
        "carol",
        &format!("{} === 1", count_of("carol in one")),
    )
    .await;
    // Sent and reloaded at once: it must arrive once whether or not it left in time.
    say(&page, "just before the reload").await;
    page.refresh().await.unwrap();

    until(
        &page,
        "back online in #one",
        "document.querySelector('#conn-state.online')
         && document.getElementById('room-title').textContent === '#one'
         && document.querySelector('#rooms button[data-room=one][aria-current=true]')
         && document.querySelector('#rooms button[data-room=two][aria-current=false]')",
    )
    .await;
    bot_says(&mut bot_two, "two", "dave after the reload").await;
    for body in ["carol in one", "just before the reload"] {
        until(&page, body, &format!("{} === 1", count_of(body))).await;
    }
    click(&page, "#rooms button[data-room=two]").await;
    for body in ["dave in two", "alice in two", "dave after the reload"] {
        until(&page, body, &format!("{} === 1", count_of(body))).await;
    }
    let seqs = run(
        &page,
        "return [...document.querySelectorAll('#messages li')].map(li => Number(li.dataset.seq));",
    )
    .await;
    assert_eq!(seqs, json!([1, 2, 3]), "every message once, in order");
    click(&page, "#rooms button[data-room=one]").await;
    until(
        &page,
        "#one once each, nothing pending",
        &format!(
            "{} === 1 && {} === 1 && document.querySelectorAll('#messages li').length === 2",
            count_of("carol in one"),
            count_of("just before the reload")
        ),
    )
    .await;
    screenshot(&page, "after-reload").await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn older_history_loads_with_the_button() {
    let Some(browser) = Browser::start("older_history_loads_with_the_button").await else {
        return;
    };
    let (_server, page) = reader_of_an_archive(&browser, 60).await;
    let count = "document.querySelectorAll('#messages li').length";
    until(
        &page,
        "the latest 50 and the button",
        &format!("{count} === 50 && !document.getElementById('load-older').hidden"),
    )
    .await;
    screenshot(&page, "load-older-button").await;
    click(&page, "#load-older").await;
    until(
        &page,
        "all 60, the first on top, and no button",
        &format!(
            "{count} === 60 && document.querySelector('#messages li').dataset.seq === '1'
             && document.getElementById('load-older').hidden"
        ),
    )
    .await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn no_request_404s_including_the_favicon() {
    let Some(browser) = Browser::start("no_request_404s_including_the_favicon").await else {
        return;
    };
    let server = Server::start().await;
    let page = browser.page("alice").await;
    sign_up(&page, &server, "alice").await;
    join_room(&page, "lobby").await;
    say(&page, "hello").await;
    until(&page, "sent", &format!("{} === 1", count_of("hello"))).await;
    page.refresh().await.unwrap();
    until(
        &page,
        "online again",
        "document.querySelector('#conn-state.online')",
    )
    .await;
    let statuses = run(
        &page,
        "return performance.getEntries()
             .filter((e) => 'responseStatus' in e && e.responseStatus >= 400)
             .map((e) => `${e.responseStatus} ${e.name}`);",
    )
    .await;
    assert_eq!(statuses, json!([]));
    let errors: Vec<Value> = console_lines(&page)
        .await
        .into_iter()
        .filter(|line| line["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let icon = run(
        &page,
        "return document.querySelector('link[rel=icon]')?.href.startsWith('data:image/svg+xml');",
    )
    .await;
    assert_eq!(icon, json!(true));
    page.close().await.unwrap();
}

#[tokio::test]
async fn forms_state_the_rule_and_drop_stale_errors() {
    let Some(browser) = Browser::start("forms_state_the_rule").await else {
        return;
    };
    let server = Server::start().await;
    let page = browser.page("newcomer").await;
    page.goto(&server.url()).await.unwrap();
    type_into(&page, "username", "al").await;
    type_into(&page, "password", "correct horse battery").await;
    click(&page, "#register").await;
    let error = "document.getElementById('auth-error').textContent";
    until(
        &page,
        "the username rule",
        &format!("{error} === 'Username: 3–32 letters, digits or _.'"),
    )
    .await;
    page.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("ice")
        .await
        .unwrap();
    until(&page, "the stale error cleared", &format!("{error} === ''")).await;
    type_into(&page, "password", "short").await;
    click(&page, "#register").await;
    until(
        &page,
        "the password rule",
        &format!("{error} === 'Password: 8–128 characters.'"),
    )
    .await;
    type_into(&page, "password", "correct horse battery").await;
    click(&page, "#register").await;
    until(
        &page,
        "online",
        "document.querySelector('#conn-state.online')",
    )
    .await;

    // No room yet: the composer is off and says how to turn it on.
    let composer = run(
        &page,
        "return [document.getElementById('body').disabled, document.getElementById('composer-hint').textContent];",
    )
    .await;
    assert_eq!(
        composer,
        json!([true, "Join or pick a room to start writing."])
    );
    type_into(&page, "room-name", "Not A Room").await;
    click(&page, "#join-form button").await;
    let join_error = "document.getElementById('join-error').textContent";
    until(
        &page,
        "the room rule",
        &format!("{join_error}.startsWith('Room names: 1–64 characters of a–z, 0–9, _ and -')"),
    )
    .await;
    page.find(Locator::Id("room-name"))
        .await
        .unwrap()
        .send_keys("\u{E003}") // Backspace: the user corrects the name
        .await
        .unwrap();
    until(&page, "cleared", &format!("{join_error} === ''")).await;
    type_into(&page, "room-name", "").await;
    join_room(&page, "lobby").await;
    until(
        &page,
        "the composer on",
        "!document.getElementById('body').disabled && document.getElementById('composer-hint').textContent === ''",
    )
    .await;
    compose(&page, &"a".repeat(2001)).await;
    until(
        &page,
        "the length rule",
        "document.getElementById('composer-error').textContent === 'Too long: 2001 characters, the limit is 2000.'",
    )
    .await;
    press_enter_in_composer(&page).await;
    let pending = run(
        &page,
        "return document.querySelectorAll('#messages li').length;",
    )
    .await;
    assert_eq!(pending, json!(0), "nothing over the limit is queued");
    // 2000 characters outside the BMP are 4000 UTF-16 units and still within the rule.
    compose(&page, &"😀".repeat(2000)).await;
    until(
        &page,
        "no error",
        "document.getElementById('composer-error').textContent === ''",
    )
    .await;
    page.close().await.unwrap();
}

#[tokio::test]
async fn typing_shows_in_its_own_room_and_the_room_list_keeps_focus() {
    let Some(browser) = Browser::start("typing_shows_in_its_own_room").await else {
        return;
    };
    let server = Server::start().await;
    let page = browser.page("alice").await;
    sign_up(&page, &server, "alice").await;
    join_room(&page, "one").await;
    join_room(&page, "two").await;
    let mut bob = server.bot("bob", "one").await;
    bob.send(Message::text(
        json!({"type":"typing","room":"one"}).to_string(),
    ))
    .await
    .unwrap();
    // Viewing #two: Bob typing in #one is not shown here...
    let typing = "document.getElementById('typing').textContent";
    let _carol = server.bot("carol", "three").await;
    page.find(Locator::Css("#rooms button[data-room=one]"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    // ...but is in #one, opened from the keyboard, and the refreshed list (which now
    // has Carol's room) keeps the focus on the button that opened it.
    until(
        &page,
        "bob typing in #one and the list refreshed",
        &format!(
            "document.getElementById('room-title').textContent === '#one'
             && {typing} === 'bob is typing…'
             && document.querySelector('#rooms button[data-room=three]')"
        ),
    )
    .await;
    let focused = run(&page, "return document.activeElement.dataset.room ?? null;").await;
    assert_eq!(focused, json!("one"));
    click(&page, "#rooms button[data-room=two]").await;
    until(&page, "nothing typing in #two", &format!("{typing} === ''")).await;
    page.close().await.unwrap();
}
