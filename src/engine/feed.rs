//! The live event feed: a Unix socket in the data directory, `events.sock`,
//! through which the process holding the directory streams the durable
//! event log to `kiln watch` in another process (sled lets only one process
//! open a data directory). A client sends one line, the sequence number to
//! start after; the feed answers with every later event as a JSON line
//! ([`crate::json::event`]), following the log (it waits on the store's
//! watermark, so an event goes out as soon as it is committed) until the
//! feed stops.

use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_core::prelude::*;

use super::Engine;

/// The feed's socket, in the data directory.
pub const FEED_SOCKET: &str = "events.sock";
/// Watchers served at once; more are turned away.
const CLIENTS_MAX: usize = 16;
/// Longest wait for news before a watcher's connection is looked at again
/// (has it gone? is the feed stopping?).
const WAIT: Duration = Duration::from_millis(250);
/// Events read from the log at a time.
const EVENTS_PER_READ: usize = 1000;

/// The socket path of the data directory `dir`.
pub fn feed_path(dir: &Path) -> PathBuf {
    dir.join(FEED_SOCKET)
}

/// A running feed; dropping it stops it, disconnects every watcher and
/// removes the socket.
pub struct EventFeed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the listener's blocking accept, which then sees the flag.
        // If the socket file is gone (someone removed it), nothing can
        // wake it: the thread is left to end with the process.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Engine {
    /// Serves the event log on the data directory's socket until the
    /// returned feed is dropped.
    pub fn serve_events(&self) -> std::io::Result<EventFeed> {
        let path = feed_path(self.dir());
        // A socket left by a process that died: this process holds the
        // directory's lock, so nobody else is serving it.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (self.clone(), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("kiln-event-feed".into())
            .spawn(move || listen(&engine, &listener, &flag))?;
        Ok(EventFeed {
            stop,
            thread: Some(thread),
            path,
        })
    }
}

fn listen(engine: &Engine, listener: &UnixListener, stop: &Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the event feed stopped accepting watchers");
                break;
            }
        };
        if clients.load(Ordering::SeqCst) >= CLIENTS_MAX {
            let mut s = stream;
            let _ = writeln!(s, "{{\"error\":\"more than {CLIENTS_MAX} watchers\"}}");
            continue;
        }
        clients.fetch_add(1, Ordering::SeqCst);
        let (engine, stop, clients) = (engine.clone(), Arc::clone(stop), Arc::clone(&clients));
        threads.retain(|t: &JoinHandle<()>| !t.is_finished());
        let spawned = std::thread::Builder::new()
            .name("kiln-event-watcher".into())
            .spawn(move || {
                if let Err(e) = serve(&engine, stream, &stop) {
                    tracing::debug!(error = %e, "a watcher left");
                }
                clients.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot serve a watcher"),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Streams events after the client's sequence number until the feed stops
/// or the client goes away.
fn serve(engine: &Engine, stream: UnixStream, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    (&mut reader).take(64).read_line(&mut first)?;
    let mut after: u64 = first.trim().parse().unwrap_or(0);
    // From now on reads only look for the end of the connection.
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut out = BufWriter::new(stream);
    let store = engine.store();
    while !stop.load(Ordering::SeqCst) {
        let seen = store.watermark().map_err(std::io::Error::other)?;
        let events = store
            .events(after, EVENTS_PER_READ)
            .map_err(std::io::Error::other)?;
        if events.is_empty() {
            out.flush()?;
            // The client sends nothing more, so a read only ends with
            // data-less success when it has gone.
            match reader.read(&mut [0u8; 64]) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
            store
                .wait_for_change(seen, WAIT)
                .map_err(std::io::Error::other)?;
            continue;
        }
        for e in &events {
            after = e.seq;
            writeln!(out, "{}", crate::json::event(e))?;
        }
    }
    out.flush()
}
