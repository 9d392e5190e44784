//! The `kiln` command-line front end.

use std::io::Write;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", about = "A durable, embedded feature-precompute engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Throughput of the 20-output feature set over a synthetic universe.
    Features {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Symbols in the synthetic universe.
        #[arg(long, default_value_t = 1000)]
        symbols: usize,
        /// Bars per symbol.
        #[arg(long, default_value_t = 2000)]
        bars: usize,
        /// Timed runs per measurement (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bench {
            which:
                Bench::Features {
                    json,
                    symbols,
                    bars,
                    runs,
                },
        } => {
            let opts = kiln::features::bench::BenchOptions {
                symbols,
                bars,
                runs,
            };
            // Write (not println!) so a closed pipe is an error, not a panic.
            let mut out = std::io::stdout().lock();
            for line in kiln::features::bench::run(opts)? {
                if json {
                    writeln!(out, "{}", line.to_json())?;
                } else {
                    writeln!(
                        out,
                        "features {:<18} {:>16} {}",
                        line.name, line.value, line.unit
                    )?;
                }
            }
        }
    }
    Ok(())
}
