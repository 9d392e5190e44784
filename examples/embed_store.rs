//! Embedding kiln's durable queue as a library: submit jobs, work them under
//! a lease, store each job's result series atomically with its completion,
//! and read the series back zero-copy. Run with `cargo run --example embed_store`.

use kiln::store::prelude::*;
use kiln::store::{JobState, NewJob, Priority, Series, SeriesKey, Store, StoreConfig, Symbol};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;

    // Durable once `enqueue_many` returns (Durability::Sync is the default).
    let symbols: Vec<Symbol> = ["AAPL", "MSFT", "IBM"]
        .into_iter()
        .map(Symbol::new)
        .collect::<Result<_, _>>()?;
    let jobs = symbols
        .iter()
        .map(|s| {
            NewJob::new("compute", b"sma(3)".to_vec())
                .symbols(vec![s.clone()])
                .idempotency_key(format!("{s}:sma(3)"))
        })
        .collect();
    store.enqueue_many(jobs)?;
    // The same key again while that job is unfinished: no second job.
    let again = store.enqueue(
        NewJob::new("compute", b"sma(3)".to_vec())
            .symbols(vec![symbols[2].clone()])
            .idempotency_key("IBM:sma(3)")
            .priority(Priority::High),
    )?;
    println!("resubmitting IBM:sma(3) gives {again:?}");

    // A worker: claim in priority order, compute, complete with results.
    while let Some(lease) = store.claim(1)?.pop() {
        let symbol = lease.job.symbols[0].clone();
        let closes = [10.0, 11.0, 12.0, 13.0];
        let sma3: Vec<f64> = (0..closes.len())
            .map(|i| {
                if i < 2 {
                    f64::NAN
                } else {
                    closes[i - 2..=i].iter().sum::<f64>() / 3.0
                }
            })
            .collect();
        let key = SeriesKey::new(symbol, "sma(3)")?;
        let series = Series {
            bar_count: closes.len() as u64,
            last_ts: 1_700_000_000,
            data_hash: 0,
            values: sma3,
            state: vec![],
        };
        store.complete(lease.token, vec![(key, series).into()])?;
    }

    let view = store
        .series(&SeriesKey::new(Symbol::new("MSFT")?, "sma(3)")?)?
        .ok_or("MSFT sma(3) was stored with its job")?;
    println!(
        "MSFT sma(3) = {:?} (from {} bars)",
        view.values(),
        view.bar_count()
    );
    println!(
        "succeeded jobs: {}",
        store.stats()?.count(JobState::Succeeded)
    );
    Ok(())
}
