//! Criterion benchmarks of the durable queue's paths (`kiln bench queue`
//! measures the same paths at scale, concurrently, next to their floors).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::store::{
    Completion, FrameWrite, JobQueue, NewJob, Series, SeriesKey, Store, StoreConfig, Symbol,
};

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new("bench", b"payload".to_vec()))
        .collect()
}

fn claim_and_complete(store: &Store, n: usize, results: impl Fn(u64) -> Vec<(SeriesKey, Series)>) {
    let results = |id| -> Vec<FrameWrite> { results(id).into_iter().map(Into::into).collect() };
    let leases = store.claim(n).expect("claim");
    let completions = leases
        .into_iter()
        .map(|l| Completion {
            token: l.token,
            results: results(l.job.id),
        })
        .collect();
    for r in store.complete_many(completions).expect("complete") {
        r.expect("lease held");
    }
}

fn series(bars: usize) -> Series {
    Series {
        bar_count: bars as u64,
        last_ts: 0,
        data_hash: 0,
        values: vec![1.5; bars],
        state: vec![],
    }
}

fn queue(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let symbol = Symbol::new("BENCH").expect("symbol");
    let mut g = c.benchmark_group("queue");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(100));

    g.bench_function("enqueue_batch100", |b| {
        b.iter(|| store.enqueue_many(jobs(100)).expect("enqueue"))
    });
    // Drain what the enqueue benchmark left behind.
    while !store.claim(1000).expect("claim").is_empty() {}

    g.bench_function("claim_complete_batch100", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                store.enqueue_many(jobs(100)).expect("enqueue");
                let t = Instant::now();
                claim_and_complete(&store, 100, |_| vec![]);
                spent += t.elapsed();
            }
            spent
        })
    });

    g.bench_function("lifecycle_sync_batch100", |b| {
        b.iter(|| {
            store.enqueue_many(jobs(100)).expect("enqueue");
            claim_and_complete(&store, 100, |id| {
                let key = SeriesKey::new(symbol.clone(), format!("j{id}")).expect("key");
                vec![(key, series(8))]
            });
        })
    });

    g.throughput(Throughput::Bytes(20 * 2000 * 8));
    g.bench_function("results_20x2000_bars", |b| {
        b.iter(|| {
            store.enqueue_many(jobs(1)).expect("enqueue");
            claim_and_complete(&store, 1, |_| {
                (0..20)
                    .map(|f| {
                        (
                            SeriesKey::new(symbol.clone(), format!("f{f}")).expect("key"),
                            series(2000),
                        )
                    })
                    .collect()
            });
        })
    });
    g.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
