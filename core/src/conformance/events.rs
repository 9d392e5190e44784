//! The event log: one record per outcome, in order, bounded, numbered on
//! across a restart; and the watermark waiters block on.

// Each function is one behaviour, and its name says which.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use super::{Harness, sym};
use crate::{CancelOutcome, EventLog, JobQueue, JobState, NewJob, QueueConfig};

fn job(name: &str) -> NewJob {
    NewJob::new("compute", name.as_bytes().to_vec()).symbols(vec![sym(name)])
}

pub fn every_outcome_is_an_event_in_order<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
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

pub fn the_log_is_trimmed_and_numbers_continue_after_a_restart<H: Harness>(harness: &mut H) {
    let config = QueueConfig {
        events_max: 3,
        ..QueueConfig::default()
    };
    let store = harness.open(config.clone());
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
    let store = harness.reopen(store, config);
    let l = store.claim(1).expect("claim").remove(0);
    store.complete(l.token, vec![]).expect("complete");
    let last = store.events(5, 10).expect("events");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, 6);
}

/// A waiter on the watermark wakes when a job is added, well before its
/// timeout, and sees the new job's id as taken.
pub fn a_waiter_wakes_when_a_job_is_added<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig::default());
    let seen = store.watermark().expect("watermark");
    assert_eq!(
        store
            .wait_for_change(seen, Duration::from_millis(30))
            .expect("wait"),
        seen,
        "nothing changed"
    );
    let started = Instant::now();
    let woken = std::thread::scope(|s| {
        let waiter = s.spawn(|| store.wait_for_change(seen, Duration::from_secs(30)));
        let id = store.enqueue(job("A")).expect("enqueue").id();
        let woken = waiter.join().expect("waiter").expect("wait");
        assert!(woken.next_job_id > id, "{woken:?} after job {id}");
        woken
    });
    assert_ne!(woken, seen);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the enqueue, not the timeout"
    );
}
