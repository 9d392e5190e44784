//! `kiln serve`: the HTTP API, the queue's dispatcher and the event feed in
//! one process, until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use kiln::api::{self, App};

use super::{Ctx, DATA_DEFAULT, open_engine};

/// The environment variable holding the bearer token when `--token` is not given.
pub const TOKEN_ENV: &str = "KILN_TOKEN";

pub fn serve(
    ctx: &Ctx,
    out: &mut impl Write,
    addr: &str,
    token: Option<String>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--addr {addr:?} is not an address like 127.0.0.1:7070"))?;
    let token = token
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    if token.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "kiln: warning: serving on {addr} without a token; anyone who can reach it may submit and ingest"
        );
    }
    let mut config = ctx.config.clone();
    config.serve.token = token;
    let dir = ctx.dir(DATA_DEFAULT);
    kiln::engine::build_compute_pool(config.background_idle);
    let engine = open_engine(&dir, &config)?;
    let runner = engine.spawn_runner()?;
    let feed = match engine.serve_events() {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("kiln: warning: no event feed for `kiln watch`: {e}");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let app = App::new(engine, Some(runner));
    let served: anyhow::Result<()> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        let local = listener.local_addr()?;
        if ctx.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"listening": local.to_string()})
            )?;
        } else {
            writeln!(
                out,
                "kiln: serving {} on http://{local} (token {}); Ctrl-C stops",
                dir.display(),
                if app.engine().config().serve.token.is_some() {
                    "required"
                } else {
                    "off"
                }
            )?;
        }
        out.flush()?;
        api::serve(listener, std::sync::Arc::clone(&app), stop_signal()).await?;
        Ok(())
    });
    // Stop claiming, commit the batch in hand.
    let stopped = app.stop_runner();
    drop(feed);
    served?;
    stopped?;
    if !ctx.json {
        writeln!(out, "kiln: stopped; everything acknowledged is on disk")?;
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
