//! A tiny command-line chat client for the README's tour.
//!
//! ```text
//! cargo run --example chat -- --user alice --password 'correct horse' --room general
//! ```
//!
//! It registers the user (or logs in if the name is taken), trades the token for a
//! single-use ticket, opens the socket, joins the room, prints what arrives and sends
//! each line typed on standard input.

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value = "general")]
    room: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let credentials = json!({"username": args.user, "password": args.password});
    let mut session = http
        .post(format!("{}/api/register", args.server))
        .json(&credentials)
        .send()
        .await?;
    if session.status() == reqwest::StatusCode::CONFLICT {
        session = http
            .post(format!("{}/api/login", args.server))
            .json(&credentials)
            .send()
            .await?;
    }
    let session: Value = session.json().await?;
    let Some(token) = session["token"].as_str() else {
        return Err(format!("sign-in failed: {session}").into());
    };
    let ticket: Value = http
        .post(format!("{}/api/tickets", args.server))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().ok_or("no ticket")?;
    let ws_url = format!(
        "{}/ws?ticket={ticket}",
        args.server.replacen("http", "ws", 1)
    );
    let (socket, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(
        json!({"type": "join", "room": args.room}).to_string(),
    ))
    .await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => print_frame(&serde_json::from_str(&text)?),
                Some(Ok(Message::Close(frame))) => {
                    println!("* closed: {frame:?}");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => break,
            },
            line = lines.next_line() => match line? {
                Some(body) if !body.trim().is_empty() => {
                    let frame = json!({"type": "send", "room": args.room, "body": body});
                    sink.send(Message::text(frame.to_string())).await?;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    Ok(())
}

fn print_frame(frame: &Value) {
    match frame["type"].as_str() {
        Some("message") => println!(
            "[{}] {}: {}",
            frame["seq"],
            frame["from"]["name"].as_str().unwrap_or("?"),
            frame["body"].as_str().unwrap_or("")
        ),
        Some("joined") => {
            for message in frame["messages"].as_array().into_iter().flatten() {
                print_frame(message);
            }
            println!(
                "* joined {} ({} online)",
                frame["room"],
                frame["members"].as_array().map_or(0, Vec::len)
            );
        }
        Some("presence") => println!(
            "* {} {}",
            frame["user"]["name"].as_str().unwrap_or("?"),
            if frame["event"] == "join" {
                "joined"
            } else {
                "left"
            }
        ),
        Some("welcome") => println!(
            "* signed in as {}",
            frame["user"]["name"].as_str().unwrap_or("?")
        ),
        Some("ack" | "typing") => {}
        _ => println!("* {frame}"),
    }
}
