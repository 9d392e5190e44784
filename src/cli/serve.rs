//! `kiln serve`: the HTTP API ([`kiln::api::Service`]), the queue's runner
//! and the event feed in one process, until SIGINT or SIGTERM; its address
//! in the data directory's serve file while it runs.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use kiln::api::Service;
use kiln::engine::serve_file::ServeFile;

use super::{Ctx, DATA_DEFAULT, open_engine};

/// The environment variable holding the bearer token when `--token` is not given.
pub const TOKEN_ENV: &str = "KILN_TOKEN";

/// `kiln serve`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// Bearer token every route but /health requires (default: the
    /// KILN_TOKEN environment variable; neither: no token).
    #[arg(long)]
    token: Option<String>,
    /// A host name clients reach the service by (repeatable). Requests
    /// must name an IP address, localhost or one of these as their Host:
    /// a web page cannot reach the service by rebinding its own name.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

pub fn run(ctx: &Ctx, out: &mut dyn Write, a: Args) -> anyhow::Result<()> {
    let addr: SocketAddr = a
        .addr
        .parse()
        .with_context(|| format!("--addr {:?} is not an address like 127.0.0.1:7070", a.addr))?;
    let token = a
        .token
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    if token.is_none() && !addr.ip().is_loopback() {
        say!(
            "kiln: warning: serving on {addr} without a token; anyone who can reach it may submit and ingest"
        );
    }
    let mut config = ctx.config.serve.clone();
    config.token = token;
    config
        .hosts
        .extend(a.hosts.iter().map(|h| h.to_ascii_lowercase()));
    let dir = ctx.dir(DATA_DEFAULT);
    // Before the engine computes anything: its pool's threads in the background.
    kiln::engine::build_compute_pool(ctx.config.engine.background_idle);
    let engine = open_engine(&dir, &ctx.config)?;
    let feed = match engine.serve_events() {
        Ok(f) => Some(f),
        Err(e) => {
            say!("kiln: warning: no event feed for `kiln watch`: {e}");
            None
        }
    };
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
    let local = listener.local_addr()?;
    let token_required = config.token.is_some();
    let service = Service::start(engine, config, listener, stop_signal()?)?;
    // Where openers the lock refuses are sent (removed when it stops).
    let announced = ServeFile {
        url: format!("http://{local}"),
        pid: std::process::id(),
    };
    if let Err(e) = announced.write(&dir) {
        say!(
            "kiln: warning: cannot write {}: {e}",
            ServeFile::path(&dir).display()
        );
    }
    if ctx.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"listening": local.to_string()})
        )?;
    } else {
        writeln!(
            out,
            "kiln: serving {} on http://{local} (dashboard http://{local}/ui, token {}); Ctrl-C stops",
            dir.display(),
            if token_required { "required" } else { "off" }
        )?;
    }
    out.flush()?;
    // Until a signal; then answers in flight go out and the runner commits
    // the batch in hand.
    let stopped = service.wait();
    ServeFile::remove_own(&dir);
    drop(feed);
    stopped?;
    if !ctx.json {
        writeln!(out, "kiln: stopped; everything acknowledged is on disk")?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (handled from now on).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    ctrlc::set_handler(move || {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot install the signal handler: {e}"))?;
    Ok(async move {
        let _ = rx.await;
    })
}
