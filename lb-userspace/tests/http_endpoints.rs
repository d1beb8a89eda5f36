//! The metrics and probe endpoints against clients that do not play along, over real loopback
//! sockets: idle and slow clients are cut off, the number of connections is capped, and the
//! probes keep answering through it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::daemon::authz::{Authorize, Deciding, Decision};
use herald::daemon::http::{self, CONNECTION_LIFETIME, HEADER_TIMEOUT, MAX_CONNECTIONS};

async fn server() -> SocketAddr {
    http::serve(
        "127.0.0.1:0".parse().unwrap(),
        http::endpoints(
            Some(Arc::new(|| "m 1\n".to_string())),
            Some(Arc::new(|| true)),
        ),
        http::Security::default(),
    )
    .await
    .expect("bind")
}

/// Whether the server closed `stream` within `within` (EOF or reset), sending nothing.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_cut_off_and_probes_keep_answering() {
    let addr = server().await;
    tokio::task::spawn_blocking(move || {
        // Idle: connected, sends nothing.
        let mut idle = TcpStream::connect(addr).unwrap();
        // Slow: a request head dribbled one byte a second, never finished.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        let dribble = {
            let mut slow = slow.try_clone().unwrap();
            std::thread::spawn(move || {
                while started.elapsed() < HEADER_TIMEOUT * 2 {
                    if slow.write_all(b"X").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        // Meanwhile the probes answer.
        let ready = get(addr, "/readyz").expect("readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(
            closed_within(&mut idle, HEADER_TIMEOUT + Duration::from_secs(2)),
            "an idle connection is still open after {:?}",
            started.elapsed()
        );
        assert!(
            closed_within(&mut slow, HEADER_TIMEOUT + Duration::from_secs(2)),
            "a slow request head is still being read after {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < CONNECTION_LIFETIME,
            "cut off by the head timeout, not the lifetime"
        );
        let _ = dribble.join();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let addr = server().await;
    tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Let the server accept them all.
        std::thread::sleep(Duration::from_millis(500));
        let mut extra = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut extra, Duration::from_secs(2)),
            "a connection past the cap of {MAX_CONNECTIONS} is held open"
        );
        // Once the held ones go, the endpoints answer again.
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if get(addr, "/metrics").is_some_and(|r| r.contains("m 1")) {
                break;
            }
            assert!(Instant::now() < deadline, "metrics never answered again");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}

/// Allows "good", forbids "bad", cannot decide "down"; anything else is not a valid token.
struct Table;

impl Authorize for Table {
    fn decide<'a>(&'a self, token: &'a str) -> Deciding<'a> {
        Box::pin(async move {
            match token {
                "good" => Ok(Decision::Allowed),
                "bad" => Ok(Decision::Forbidden("no RBAC rule".into())),
                "down" => Err("API server unreachable".into()),
                _ => Ok(Decision::Unauthenticated),
            }
        })
    }
}

/// GET `path` with an optional bearer token: the status code.
fn status_of(addr: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_behind_an_authorizer_and_probes_not() {
    let addr = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        http::endpoints(
            Some(Arc::new(|| "m 1\n".to_string())),
            Some(Arc::new(|| true)),
        ),
        http::Security {
            tls: None,
            authorizer: Some(Arc::new(Table)),
        },
    )
    .await
    .expect("bind");
    let cases: [(&str, Option<&str>, u16); 7] = [
        ("/metrics", None, 401),
        ("/metrics", Some("unknown"), 401),
        ("/metrics", Some("bad"), 403),
        ("/metrics", Some("down"), 503),
        ("/metrics", Some("good"), 200),
        ("/readyz", None, 200),
        ("/healthz", None, 200),
    ];
    for (path, token, want) in cases {
        let got = tokio::task::spawn_blocking(move || status_of(addr, path, token))
            .await
            .unwrap();
        assert_eq!(got, want, "{path} with {token:?}");
    }
}
