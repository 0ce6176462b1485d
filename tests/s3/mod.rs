//! A real S3-protocol server on loopback for the tests: PyPI `moto[server]`
//! (`moto_server -H 127.0.0.1 -p PORT`), one per test, killed when the guard drops.
//! Plus a tiny HTTP proxy in front of it that can throttle (429/503) or strip
//! `If-None-Match` (a store without conditional writes).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Set the S3 credentials moto accepts, for this process and the `prep` it spawns.
pub fn set_env() {
    // Tests in this binary all set the same values.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::remove_var("AWS_SESSION_TOKEN");
}

impl Moto {
    /// Start moto_server, or `None` (with the reason on stderr) when it is not installed
    /// and `PREP_REQUIRE_MOTO` is unset. `scripts/test` installs it and sets that variable,
    /// so CI fails instead of skipping.
    pub fn start() -> Option<Moto> {
        let port = free_port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("PREP_REQUIRE_MOTO").is_some() {
                    panic!("moto_server cannot be started ({e}) but PREP_REQUIRE_MOTO is set");
                }
                eprintln!(
                    "SKIPPED: moto_server is not installed ({e}); `pip install 'moto[server]'` (scripts/test does) to run the S3 tests"
                );
                return None;
            }
        };
        let mut m = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("moto_server exited at start: {st}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        set_env();
        Some(m)
    }

    /// Create a bucket (moto accepts unsigned requests).
    pub fn bucket(&self, name: &str) {
        let resp = raw(
            self.port,
            &format!("PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port),
        );
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
            "{resp}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw(port: u16, req: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// What the proxy does to requests.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Answer the first `n` requests 503 (odd) / 429 (even) with S3's SlowDown body.
    Throttle(usize),
    /// Forward everything but drop `If-None-Match` (a store that ignores it).
    StripConditional,
}

pub struct Proxy {
    pub port: u16,
    pub endpoint: String,
    pub throttled: Arc<AtomicUsize>,
    pub forwarded: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Proxy {
    pub fn start(upstream: u16, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttled = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        {
            let (throttled, forwarded, stop) = (throttled.clone(), forwarded.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (throttled, forwarded, seen) =
                        (throttled.clone(), forwarded.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, upstream, mode, &seen, &throttled, &forwarded);
                    });
                }
            });
        }
        Proxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            throttled,
            forwarded,
            stop,
        }
    }
}

/// One client connection: requests one after another (keep-alive), each answered either
/// by the proxy (throttled) or by a fresh upstream connection.
fn serve(
    conn: TcpStream,
    upstream: u16,
    mode: Mode,
    seen: &AtomicUsize,
    throttled: &AtomicUsize,
    forwarded: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let len: usize = head
            .iter()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let n = seen.fetch_add(1, Ordering::SeqCst);
        if let Mode::Throttle(k) = mode {
            if n < k {
                throttled.fetch_add(1, Ordering::SeqCst);
                let (code, text) = if n % 2 == 0 {
                    (503, "Service Unavailable")
                } else {
                    (429, "Too Many Requests")
                };
                let msg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                write!(
                    out,
                    "HTTP/1.1 {code} {text}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{msg}",
                    msg.len()
                )?;
                out.flush()?;
                continue;
            }
        }
        forwarded.fetch_add(1, Ordering::SeqCst);
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        for l in &head {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                continue;
            }
            if matches!(mode, Mode::StripConditional) && lower.starts_with("if-none-match:") {
                continue;
            }
            if l == "\r\n" {
                up.write_all(b"Connection: close\r\n")?;
            }
            up.write_all(l.as_bytes())?;
        }
        up.write_all(&body)?;
        up.flush()?;
        // Relay the response; upstream closes after it (Connection: close). Re-frame it
        // with a Content-Length so the client can keep its connection to us.
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(resp.len());
        let (h, b) = resp.split_at(split);
        let h = String::from_utf8_lossy(h);
        let mut new_head = String::new();
        let mut chunked = false;
        for l in h.split("\r\n").filter(|l| !l.is_empty()) {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") {
                chunked = lower.contains("chunked");
                continue;
            }
            if lower.starts_with("content-length:") || lower.starts_with("connection:") {
                continue;
            }
            new_head.push_str(l);
            new_head.push_str("\r\n");
        }
        let body = if chunked { dechunk(b) } else { b.to_vec() };
        let is_head = head[0].starts_with("HEAD ");
        if is_head {
            // Keep the upstream's Content-Length for HEAD (the object's size).
            let cl = h
                .split("\r\n")
                .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
                .unwrap_or("Content-Length: 0");
            write!(out, "{new_head}{cl}\r\n\r\n")?;
        } else {
            write!(out, "{new_head}Content-Length: {}\r\n\r\n", body.len())?;
            out.write_all(&body)?;
        }
        out.flush()?;
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(p) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[p + 2 + n + 2..];
    }
}
