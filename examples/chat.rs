//! A tiny command-line chat client for the README's tour.
//!
//! ```text
//! cargo run --example chat -- --user alice --password 'correct horse' --room general
//! ```
//!
//! It registers the user (or logs in if the name is taken), trades the token for a
//! single-use ticket, opens the socket, joins the room, prints what arrives and sends
//! each line typed on standard input. It ends when standard input does (exit status 0)
//! or when the server closes the connection or cannot be reached (a sentence on
//! standard error saying why, exit status 1).

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::ExitCode;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

#[derive(Debug, Parser)]
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

fn main() -> ExitCode {
    ExitCode::from(chat(Args::parse()))
}

/// Runs a session to its end: the process's exit status.
fn chat(args: Args) -> u8 {
    // Standard input is read on a thread of its own: a read that never returns (nobody
    // typing) must not keep the process alive once the session is over, as it would on
    // the runtime's blocking pool.
    let (typed, lines) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if typed.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("could not start: {error}");
            return 1;
        }
    };
    let ended = runtime.block_on(run(&args, lines, &mut |line| println!("{line}")));
    runtime.shutdown_background();
    match ended {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{failure}");
            1
        }
    }
}

/// Why a session ended other than by the user; each reads as one sentence.
#[derive(Debug)]
enum Failure {
    /// The server could not be reached at all.
    Connect { server: String, reason: String },
    /// The server answered a step with an error.
    Refused {
        step: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was not what palisade sends.
    Unexpected { step: &'static str, reason: String },
    /// The server closed the WebSocket.
    Closed { code: u16, reason: String },
    /// The connection broke without a close.
    Lost(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect { server, reason } => {
                write!(f, "could not connect to {server}: {reason}")
            }
            Self::Refused {
                step,
                status,
                code,
                message,
            } => {
                write!(f, "the server refused {step}: {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, " ({message})")?;
                }
                Ok(())
            }
            Self::Unexpected { step, reason } => {
                write!(
                    f,
                    "the server's answer to {step} is not palisade's: {reason}"
                )
            }
            Self::Closed { code, reason } if reason.is_empty() => {
                write!(f, "the server closed the connection: {code}")
            }
            Self::Closed { code, reason } => {
                write!(f, "the server closed the connection: {code} {reason}")
            }
            Self::Lost(reason) => write!(f, "the connection to the server was lost: {reason}"),
        }
    }
}

/// Signs in, connects, joins and chats until the input ends (`Ok`) or the server ends
/// the session. `lines` are the typed lines; `print` shows each line of output.
async fn run(
    args: &Args,
    mut lines: mpsc::Receiver<String>,
    print: &mut dyn FnMut(String),
) -> Result<(), Failure> {
    let base = args.server.trim_end_matches('/');
    let server = authority(base);
    let http = reqwest::Client::new();
    let credentials = json!({"username": args.user, "password": args.password});
    let register = post(
        &http,
        &server,
        format!("{base}/api/register"),
        &credentials,
        None,
    )
    .await?;
    let session = match register {
        (409, _) => {
            post(
                &http,
                &server,
                format!("{base}/api/login"),
                &credentials,
                None,
            )
            .await?
        }
        answer => answer,
    };
    let session = answered(session, "the sign-in")?;
    let token = text_field(&session, "token", "the sign-in")?;
    let ticket = post(
        &http,
        &server,
        format!("{base}/api/tickets"),
        &json!({}),
        Some(&token),
    )
    .await?;
    let ticket = answered(ticket, "the ticket request")?;
    let ticket = text_field(&ticket, "ticket", "the ticket request")?;

    let ws_url = format!("{}/ws?ticket={ticket}", base.replacen("http", "ws", 1));
    let (socket, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|error| handshake_failure(error, &server))?;
    let (mut sink, mut stream) = socket.split();
    let join = json!({"type": "join", "room": args.room}).to_string();
    sink.send(Message::text(join)).await.map_err(lost)?;

    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(frame) => print_frame(&frame, print),
                    Err(_) => print(format!("* {text}")),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                        (u16::from(frame.code), frame.reason.to_string())
                    });
                    return Err(Failure::Closed { code, reason });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(lost(error)),
                None => return Err(Failure::Lost("it ended without a close frame".to_owned())),
            },
            line = lines.recv() => match line {
                Some(body) if !body.trim().is_empty() => {
                    let frame = json!({"type": "send", "room": args.room, "body": body});
                    sink.send(Message::text(frame.to_string())).await.map_err(lost)?;
                }
                Some(_) => {}
                None => {
                    let bye = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(bye))).await;
                    return Ok(());
                }
            },
        }
    }
}

/// `host:port` of a base URL, for messages.
fn authority(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => base.to_owned(),
        },
        Err(_) => base.to_owned(),
    }
}

/// POSTs JSON: the status and the JSON body (`Null` if there is none).
async fn post(
    http: &reqwest::Client,
    server: &str,
    url: String,
    body: &Value,
    bearer: Option<&str>,
) -> Result<(u16, Value), Failure> {
    let mut request = http.post(url).json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| Failure::Connect {
        server: server.to_owned(),
        reason: root_cause(&error),
    })?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// The body of a successful answer, or the server's error as a [`Failure`].
fn answered((status, body): (u16, Value), step: &'static str) -> Result<Value, Failure> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let error = &body["error"];
    Err(Failure::Refused {
        step,
        status,
        code: error["code"].as_str().unwrap_or_default().to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
    })
}

fn text_field(body: &Value, field: &str, step: &'static str) -> Result<String, Failure> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::Unexpected {
            step,
            reason: format!("it has no {field}"),
        })
}

fn handshake_failure(error: tungstenite::Error, server: &str) -> Failure {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            answered(
                (response.status().as_u16(), body),
                "the WebSocket handshake",
            )
            .err()
            .unwrap_or_else(|| Failure::Unexpected {
                step: "the WebSocket handshake",
                reason: "it did not switch protocols".to_owned(),
            })
        }
        tungstenite::Error::Io(error) => Failure::Connect {
            server: server.to_owned(),
            reason: describe_io(&error),
        },
        other => Failure::Lost(other.to_string()),
    }
}

fn lost(error: tungstenite::Error) -> Failure {
    match error {
        tungstenite::Error::Io(error) => Failure::Lost(describe_io(&error)),
        other => Failure::Lost(other.to_string()),
    }
}

/// The innermost cause of an HTTP client error, in words.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) => describe_io(io),
        None => cause.to_string(),
    }
}

fn describe_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset => "the connection was reset".to_owned(),
        ErrorKind::ConnectionAborted => "the connection was aborted".to_owned(),
        ErrorKind::TimedOut => "it timed out".to_owned(),
        ErrorKind::BrokenPipe => "the connection was closed".to_owned(),
        _ => error.to_string(),
    }
}

fn print_frame(frame: &Value, print: &mut dyn FnMut(String)) {
    let name = |who: &Value| who["name"].as_str().unwrap_or("?").to_owned();
    match frame["type"].as_str() {
        Some("message") => print(format!(
            "[{}] {}: {}",
            frame["seq"],
            name(&frame["from"]),
            frame["body"].as_str().unwrap_or("")
        )),
        Some("joined") => {
            for message in frame["messages"].as_array().into_iter().flatten() {
                print_frame(message, print);
            }
            print(format!(
                "* joined {} ({} online)",
                frame["room"],
                frame["online"]
                    .as_u64()
                    .unwrap_or_else(|| frame["members"].as_array().map_or(0, |m| m.len() as u64))
            ));
        }
        Some("occupancy") => print(format!("* {} online in {}", frame["online"], frame["room"])),
        Some("presence") => print(format!(
            "* {} {}",
            name(&frame["user"]),
            if frame["event"] == "join" {
                "joined"
            } else {
                "left"
            }
        )),
        Some("welcome") => print(format!("* signed in as {}", name(&frame["user"]))),
        Some("error") => print(format!(
            "* refused: {} ({})",
            frame["code"].as_str().unwrap_or("?"),
            frame["message"].as_str().unwrap_or("")
        )),
        Some("ack" | "typing") => {}
        _ => print(format!("* {frame}")),
    }
}

/// The example run as a process, the way a user runs it: the test binary starts itself
/// again with [`CHILD_ARGS`] set, and that copy runs [`chat`] in
/// `process_entry_point` and exits with its status.
#[cfg(test)]
mod tests {
    use super::*;
    use palisade::config::Settings;
    use palisade::startup::Application;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    const CHILD_ARGS: &str = "PALISADE_CHAT_EXAMPLE_ARGS";
    const WAIT: Duration = Duration::from_secs(20);

    #[test]
    #[ignore = "the process the other tests start, not a test of its own"]
    fn process_entry_point() {
        let Ok(args) = std::env::var(CHILD_ARGS) else {
            return;
        };
        let args: Vec<String> = serde_json::from_str(&args).unwrap();
        let args = Args::parse_from(std::iter::once("chat".to_owned()).chain(args));
        std::process::exit(i32::from(chat(args)));
    }

    /// The example as a process with these arguments, standard input held open (as a
    /// terminal nobody types in) and its output piped.
    fn spawn_chat(args: &[&str]) -> tokio::process::Child {
        let args = serde_json::to_string(args).unwrap();
        tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::process_entry_point",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ARGS, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// Waits for the process to exit: its status and standard error.
    async fn exit_of(mut child: tokio::process::Child) -> (std::process::ExitStatus, String) {
        let mut stderr = child.stderr.take().unwrap();
        // `Child::wait` closes standard input first, and the example ends (status 0) when
        // its input does: hold it open until the process has exited by itself.
        let _stdin = child.stdin.take();
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("the example exits")
            .unwrap();
        let mut said = String::new();
        stderr.read_to_string(&mut said).await.unwrap();
        (status, said)
    }

    #[tokio::test]
    async fn the_example_exits_with_a_sentence_when_the_server_closes_the_connection() {
        let data = tempfile::tempdir().unwrap();
        let mut settings = Settings::development();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.database_url = format!("sqlite://{}", data.path().join("p.db").display());
        let app = Application::build(settings).await.unwrap();
        let server = format!("http://{}", app.local_addr());
        let stop = app.shutdown_handle();
        let serving = tokio::spawn(app.run_until_stopped());

        let mut child = spawn_chat(&[
            "--server",
            &server,
            "--user",
            "alice",
            "--password",
            "correct horse",
        ]);
        let mut output = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = output.next_line().await.unwrap() {
                if line.starts_with("* joined") {
                    return;
                }
            }
            panic!("the example ended before joining");
        })
        .await
        .expect("the example joins the room");

        stop.trigger();
        let (status, said) = exit_of(child).await;
        assert_eq!(status.code(), Some(1), "{said}");
        assert_eq!(
            said.trim_end(),
            "the server closed the connection: 1001 server shutting down"
        );
        serving.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_example_says_it_could_not_connect_and_exits_non_zero() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = format!("http://{addr}");
        let child = spawn_chat(&["--server", &server, "--user", "a", "--password", "b"]);
        let (status, said) = exit_of(child).await;
        assert_eq!(status.code(), Some(1), "{said}");
        assert_eq!(
            said.trim_end(),
            format!("could not connect to {addr}: connection refused")
        );
    }

    #[test]
    fn a_refusal_reads_as_a_sentence() {
        let body = json!({"error": {"code": "invalid_credentials", "message": "wrong username or password"}});
        let failure = answered((401, body), "the sign-in").unwrap_err();
        assert_eq!(
            failure.to_string(),
            "the server refused the sign-in: 401 invalid_credentials (wrong username or password)"
        );
        let closed = Failure::Closed {
            code: 4003,
            reason: "token revoked".to_owned(),
        };
        assert_eq!(
            closed.to_string(),
            "the server closed the connection: 4003 token revoked"
        );
    }
}
