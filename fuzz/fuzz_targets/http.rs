//! The HTTP API, as a client reaches it: a `kiln serve` service (started
//! once per process on 127.0.0.1, over a small computed universe) gets one
//! request per input: the first byte picks the method, the rest of the
//! first line is the path and query (bytes HTTP forbids there replaced),
//! the next line is sent as headers (`name: value` pairs separated by
//! `;`), the remainder is the body. Whatever the request, the answer has a
//! status below 500, and it comes.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use kiln::api::Service;
use kiln::config::Config;
use kiln::engine::Engine;
use kiln::features::standard_plan;
use kiln::market::synth;
use kiln::store::Priority;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        config.engine.background_idle = false;
        let engine = Engine::open(&dir, config.clone()).expect("open");
        let universe = synth::universe(3, 300, 7);
        engine.ingest_columns("fuzz", &universe).expect("ingest");
        let symbols: Vec<_> = universe.iter().map(|(s, _)| s.clone()).collect();
        let plan = standard_plan().expect("plan");
        engine
            .submit(&symbols, plan.specs(), Priority::Normal)
            .expect("submit");
        engine.run_until_idle(&mut |_| {}).expect("run");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let service =
            Service::start(engine, config.serve, listener, std::future::pending()).expect("start");
        let addr = service.addr();
        // Serves until the process ends.
        std::mem::forget(service);
        addr
    })
}

/// Bytes that may stand in a request line or a header: visible ASCII.
fn clean(bytes: &[u8], also_space: bool) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' ' if also_space => ' ',
            0x21..=0x7e => b as char,
            _ => '_',
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(which) % METHODS.len()];
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let target = clean(lines.next().unwrap_or_default(), false);
    let headers = clean(lines.next().unwrap_or_default(), true);
    let body = lines.next().unwrap_or_default();
    let path = if target.starts_with('/') {
        target
    } else {
        format!("/{target}")
    };
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for pair in headers.split(';') {
        if let Some((name, value)) = pair.split_once(':')
            && !name.trim().is_empty()
            && !name.eq_ignore_ascii_case("content-length")
            && !name.eq_ignore_ascii_case("transfer-encoding")
            && !name.eq_ignore_ascii_case("host")
            && !name.eq_ignore_ascii_case("connection")
        {
            request.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
        }
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));

    let mut stream = TcpStream::connect(server()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send the head");
    // The server may answer (and close) before reading the whole body.
    let _ = stream.write_all(body);
    // The status line is enough (an event stream never ends).
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => answer.push(byte[0]),
            // libFuzzer's timeout timer (SIGALRM) interrupts a read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no answer to {method} {path}: {e}"),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    let Some(status) = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse::<u16>().ok())
    else {
        // The server refused the bytes themselves (hyper closes without an
        // answer only for requests it cannot parse, which we never send).
        panic!("no status line for {method} {path}: {line:?}");
    };
    assert!(status < 500, "{status} for {method} {path} {headers:?}");
});
