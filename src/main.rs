//! The `kiln` command-line front end: parses the arguments and hands the
//! command to its handler in `cli`. Errors are one line on stderr and exit
//! status 1.

/// Writes one line to stderr, like `eprintln!`, but a line that cannot be
/// written (a full disk under `2>log`, a daemon whose stderr is gone) is
/// dropped: `eprintln!` panics then, and a message must never crash kiln.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: the request threads free buffers that
/// other threads allocated, and glibc's per-arena locks made them wait on
/// each other (futex calls on most requests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kiln: a durable, embedded feature-precompute engine for trading systems.
///
/// Start with `kiln demo`. Every command works on one data directory
/// (--data, default ./kiln-data); nothing else is needed.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: cli::Command,
}

/// Logs to stderr at the level `KILN_LOG` names (error, warn, info, debug,
/// trace; default warn).
fn init_logging() -> anyhow::Result<()> {
    let level = match std::env::var("KILN_LOG").as_deref() {
        Err(_) | Ok("") | Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        Ok(other) => anyhow::bail!("KILN_LOG={other:?}: want error, warn, info, debug or trace"),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Reports a panic on one line of stderr, written like every message (a
/// failing stderr drops it). A panic is a bug in kiln or below it, and
/// where it is caught (sled's close, for one) kiln goes on. With
/// `RUST_BACKTRACE` set, the backtrace follows.
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        // A reader's panic on a malformed file becomes an error there.
        if kiln::market::untrusted::decoding() {
            return;
        }
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say!("kiln: internal error{at}: {payload}");
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            say!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

fn main() -> ExitCode {
    report_panics();
    let result = init_logging().and_then(|()| {
        let cli = Cli::parse();
        cli::run(cli.global, cli.command)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}
