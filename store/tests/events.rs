//! The event log and checkpoints.

use kiln_store::{
    CancelOutcome, JobQueue, JobState, NewJob, ResultStore, Series, SeriesKey, Store, StoreConfig,
    StoreError, Symbol,
};

fn job(name: &str) -> NewJob {
    NewJob::new("compute", name.as_bytes().to_vec())
        .symbols(vec![Symbol::new(name).expect("symbol")])
}

fn series(n: usize) -> Series {
    Series {
        bar_count: n as u64,
        last_ts: 9,
        data_hash: 3,
        values: (0..n).map(|i| i as f64).collect(),
        state: vec![],
    }
}

#[test]
fn every_outcome_is_an_event_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let ok = store.enqueue(job("OK")).expect("enqueue").id();
    let retried = store.enqueue(job("RETRY")).expect("enqueue").id();
    let dead = store
        .enqueue(job("DEAD").attempts_max(1))
        .expect("enqueue")
        .id();
    let cancelled = store.enqueue(job("CANCEL")).expect("enqueue").id();
    assert_eq!(
        store.cancel(cancelled).expect("cancel"),
        CancelOutcome::Cancelled
    );
    let leases = store.claim(3).expect("claim");
    for l in leases {
        match l.job.id {
            id if id == ok => store.complete(l.token, vec![]).expect("complete"),
            id if id == retried => {
                store.fail(l.token, "transient").expect("fail");
            }
            _ => {
                store.fail(l.token, "bad bar 7").expect("fail");
            }
        }
    }
    let events = store.events(0, 100).expect("events");
    let seen: Vec<(u64, u64, JobState)> =
        events.iter().map(|e| (e.seq, e.job_id, e.state)).collect();
    assert_eq!(
        seen,
        [
            (1, cancelled, JobState::Cancelled),
            (2, ok, JobState::Succeeded),
            (3, retried, JobState::Failed),
            (4, dead, JobState::Dead),
        ]
    );
    assert_eq!(events[2].error.as_deref(), Some("transient"));
    assert_eq!(events[3].error.as_deref(), Some("bad bar 7"));
    assert_eq!(events[1].symbols, ["OK"]);
    assert_eq!(
        store.events(2, 1).expect("events")[0].seq,
        3,
        "resumes after a sequence number"
    );
}

#[test]
fn the_log_is_trimmed_and_numbers_continue_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let config = StoreConfig {
        events_max: 3,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config.clone()).expect("open");
    for i in 0..5 {
        store.enqueue(job(&format!("J{i}"))).expect("enqueue");
        let l = store.claim(1).expect("claim").remove(0);
        store.complete(l.token, vec![]).expect("complete");
    }
    store.enqueue(job("TRIM")).expect("a later group trims");
    let seqs: Vec<u64> = store
        .events(0, 10)
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    drop(store);
    let store = Store::open(dir.path(), config).expect("reopen");
    let l = store.claim(1).expect("claim").remove(0);
    store.complete(l.token, vec![]).expect("complete");
    let last = store.events(5, 10).expect("events");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, 6);
}

#[test]
fn a_checkpoint_stores_results_and_keeps_the_job_running() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let id = store.enqueue(job("A")).expect("enqueue").id();
    let l = store.claim(1).expect("claim").remove(0);
    let key = SeriesKey::new(Symbol::new("A").expect("symbol"), "sma(3)").expect("key");
    store
        .checkpoint(l.token, vec![(key.clone(), series(5))])
        .expect("checkpoint");
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Running)
    );
    assert_eq!(
        store.series(&key).expect("read").map(|v| v.values().len()),
        Some(5)
    );
    assert!(
        store.events(0, 10).expect("events").is_empty(),
        "no outcome yet"
    );
    // Survives a restart; the job is requeued with its checkpoint kept.
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store.series(&key).expect("read").map(|v| v.values().len()),
        Some(5)
    );
    let again = store.claim(1).expect("claim").remove(0);
    // The old lease is gone.
    let e = store.checkpoint(l.token, vec![]).expect_err("stale lease");
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e}");
    store.complete(again.token, vec![]).expect("complete");
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Succeeded)
    );
}
