//! One behaviour per test: every job transition and every error of the queue
//! and the result store, through the public API.

use kiln_store::{
    CancelOutcome, Clock, Completion, Durability, Enqueued, FailOutcome, JobQueue, JobState,
    NewJob, Priority, ResultStore, RetryPolicy, Series, SeriesKey, Store, StoreConfig, StoreError,
    Symbol,
};

use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn config(clock: &Clock) -> StoreConfig {
    StoreConfig {
        clock: clock.clone(),
        retry: RetryPolicy {
            base_ms: 1_000,
            cap_ms: 60_000,
        },
        ..StoreConfig::default()
    }
}

fn open() -> (tempfile::TempDir, Clock, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    (dir, clock, store)
}

fn job(name: &str) -> NewJob {
    NewJob::new("compute", name.as_bytes().to_vec())
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("symbol")
}

fn series(values: Vec<f64>) -> Series {
    Series {
        bar_count: values.len() as u64,
        last_ts: 42,
        data_hash: 0,
        values,
        state: vec![1, 2, 3],
    }
}

#[test]
fn enqueued_job_is_queued_with_its_fields() {
    let (_d, _c, store) = open();
    let id = store
        .enqueue(job("a").symbols(vec![sym("AAPL")]).priority(Priority::High))
        .expect("enqueue")
        .id();
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(&*j.payload, b"a");
    assert_eq!(j.symbols, vec![sym("AAPL")]);
    assert_eq!(
        (j.attempts, j.attempts_max, j.enqueued_ms, j.run_at_ms),
        (0, 4, T0, T0)
    );
    assert_eq!(store.stats().count(JobState::Queued), 1);
    assert_eq!(store.stats().depth(Priority::High), 1);
}

#[test]
fn claims_follow_strict_priority_then_fifo() {
    let (_d, _c, store) = open();
    let low = store
        .enqueue(job("l").priority(Priority::Low))
        .expect("e")
        .id();
    let n1 = store.enqueue(job("n1")).expect("e").id();
    let high = store
        .enqueue(job("h").priority(Priority::High))
        .expect("e")
        .id();
    let n2 = store.enqueue(job("n2")).expect("e").id();
    let order: Vec<u64> = store
        .claim(10)
        .expect("claim")
        .iter()
        .map(|l| l.job.id)
        .collect();
    assert_eq!(order, vec![high, n1, n2, low]);
}

#[test]
fn claim_takes_at_most_max_and_empty_queue_gives_nothing() {
    let (_d, _c, store) = open();
    assert!(store.claim(5).expect("claim").is_empty());
    store
        .enqueue_many((0..5).map(|i| job(&i.to_string())).collect())
        .expect("enqueue");
    assert_eq!(store.claim(3).expect("claim").len(), 3);
    assert_eq!(store.claim(3).expect("claim").len(), 2);
    assert_eq!(store.stats().count(JobState::Running), 5);
}

#[test]
fn claimed_job_is_running_with_a_lease_and_an_attempt() {
    let (_d, _c, store) = open();
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim_with_lease(1, 500).expect("claim").remove(0);
    assert_eq!(lease.job.state, JobState::Running);
    assert_eq!(lease.token.attempt, 1);
    assert_eq!(lease.expires_ms, T0 + 500);
    let stored = store.job(lease.job.id).expect("read").expect("exists");
    assert_eq!(
        (stored.state, stored.attempts, stored.lease_expires_ms),
        (JobState::Running, 1, Some(T0 + 500))
    );
}

#[test]
fn delayed_job_is_not_claimable_before_run_at() {
    let (_d, clock, store) = open();
    let id = store
        .enqueue(job("later").run_at_ms(T0 + 1_000))
        .expect("enqueue")
        .id();
    assert!(store.claim(1).expect("claim").is_empty());
    clock.advance_ms(999);
    assert!(store.claim(1).expect("claim").is_empty());
    clock.advance_ms(1);
    assert_eq!(store.claim(1).expect("claim")[0].job.id, id);
}

#[test]
fn expired_lease_returns_job_to_queue() {
    let (_d, clock, store) = open();
    let id = store.enqueue(job("a")).expect("enqueue").id();
    let first = store.claim_with_lease(1, 100).expect("claim").remove(0);
    clock.advance_ms(100);
    let again = store.claim(1).expect("claim").remove(0);
    assert_eq!(again.job.id, id);
    assert_eq!(again.token.attempt, 2);
    assert!(
        again
            .job
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("lease expired")
    );
    let lost = store
        .complete(first.token, vec![])
        .expect_err("stale lease");
    assert!(
        matches!(lost, StoreError::LeaseLost { job_id, attempt: 1 } if job_id == id),
        "{lost}"
    );
}

#[test]
fn heartbeat_extends_the_lease() {
    let (_d, clock, store) = open();
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim_with_lease(1, 100).expect("claim").remove(0);
    clock.advance_ms(90);
    assert_eq!(
        store.heartbeat(lease.token, 100).expect("heartbeat"),
        T0 + 190
    );
    clock.advance_ms(90);
    assert!(
        store.claim(1).expect("claim").is_empty(),
        "lease still held"
    );
    store
        .complete(lease.token, vec![])
        .expect("complete under the extended lease");
}

#[test]
fn heartbeat_after_expiry_is_lease_lost() {
    let (_d, clock, store) = open();
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim_with_lease(1, 100).expect("claim").remove(0);
    clock.advance_ms(100);
    assert!(matches!(
        store.heartbeat(lease.token, 100),
        Err(StoreError::LeaseLost { .. })
    ));
}

#[test]
fn lease_expiry_on_last_attempt_makes_the_job_dead() {
    let (_d, clock, store) = open();
    let id = store
        .enqueue(job("a").attempts_max(1))
        .expect("enqueue")
        .id();
    store.claim_with_lease(1, 100).expect("claim");
    clock.advance_ms(100);
    assert!(store.claim(1).expect("claim").is_empty());
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(j.state, JobState::Dead);
    assert!(
        j.last_error
            .as_deref()
            .unwrap_or("")
            .contains("lease expired")
    );
}

#[test]
fn complete_stores_results_and_marks_succeeded_atomically() {
    let (_d, clock, store) = open();
    let id = store
        .enqueue(job("a").symbols(vec![sym("AAPL")]))
        .expect("enqueue")
        .id();
    let lease = store.claim(1).expect("claim").remove(0);
    clock.advance_ms(25);
    let key = SeriesKey::new(sym("AAPL"), "sma(20)").expect("key");
    store
        .complete(
            lease.token,
            vec![(key.clone(), series(vec![f64::NAN, 1.0, 2.0]))],
        )
        .expect("complete");
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(
        (j.state, j.finished_ms),
        (JobState::Succeeded, Some(T0 + 25))
    );
    let view = store.series(&key).expect("read").expect("stored");
    assert!(view.values()[0].is_nan());
    assert_eq!(&view.values()[1..], &[1.0, 2.0]);
    assert_eq!(
        (view.bar_count(), view.last_ts(), view.state()),
        (3, 42, &[1u8, 2, 3][..])
    );
    assert_eq!(store.series_writer(&key).expect("read"), Some(id));
    let stats = store.symbol_stats(&sym("AAPL")).expect("stats");
    assert_eq!(
        (stats.jobs, stats.failures, stats.duration_ms_total),
        (1, 0, 25)
    );
}

#[test]
fn a_second_completion_replaces_the_series() {
    let (_d, _c, store) = open();
    let key = SeriesKey::new(sym("X"), "ema(3)").expect("key");
    for v in [1.0, 2.0] {
        store.enqueue(job("a")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        store
            .complete(lease.token, vec![(key.clone(), series(vec![v]))])
            .expect("complete");
    }
    assert_eq!(
        store.series(&key).expect("read").expect("stored").values(),
        &[2.0]
    );
    assert_eq!(store.series_keys(&sym("X")).expect("keys"), vec![key]);
}

#[test]
fn complete_many_reports_each_outcome() {
    let (_d, _c, store) = open();
    store
        .enqueue_many(vec![job("a"), job("b")])
        .expect("enqueue");
    let leases = store.claim(2).expect("claim");
    let bogus = kiln_store::LeaseToken {
        job_id: 999,
        attempt: 1,
    };
    let out = store
        .complete_many(vec![
            Completion {
                token: leases[0].token,
                results: vec![],
            },
            Completion {
                token: bogus,
                results: vec![],
            },
            Completion {
                token: leases[1].token,
                results: vec![],
            },
        ])
        .expect("complete");
    assert!(out[0].is_ok() && out[2].is_ok());
    assert!(matches!(
        out[1],
        Err(StoreError::LeaseLost { job_id: 999, .. })
    ));
    assert_eq!(store.stats().count(JobState::Succeeded), 2);
}

#[test]
fn failure_schedules_a_retry_with_backoff() {
    let (_d, clock, store) = open();
    let id = store
        .enqueue(job("a").symbols(vec![sym("A")]))
        .expect("enqueue")
        .id();
    let lease = store.claim(1).expect("claim").remove(0);
    let FailOutcome::Retry { run_at_ms } = store.fail(lease.token, "boom").expect("fail") else {
        panic!("expected a retry");
    };
    // Equal jitter around base_ms = 1000 for the first retry: within [500, 1000].
    assert!((T0 + 500..=T0 + 1_000).contains(&run_at_ms), "{run_at_ms}");
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(
        (j.state, j.last_error.as_deref()),
        (JobState::Failed, Some("boom"))
    );
    assert_eq!(store.stats().depth(Priority::Normal), 1);
    assert!(
        store.claim(1).expect("claim").is_empty(),
        "not before the backoff"
    );
    clock.advance_ms(run_at_ms - T0);
    assert_eq!(store.claim(1).expect("claim")[0].token.attempt, 2);
    assert_eq!(store.symbol_stats(&sym("A")).expect("stats").failures, 1);
}

#[test]
fn exhausted_attempts_make_the_job_dead_with_the_last_error() {
    let (_d, clock, store) = open();
    let id = store
        .enqueue(job("a").attempts_max(2))
        .expect("enqueue")
        .id();
    let l1 = store.claim(1).expect("claim").remove(0);
    assert!(matches!(
        store.fail(l1.token, "first").expect("fail"),
        FailOutcome::Retry { .. }
    ));
    clock.advance_ms(10_000);
    let l2 = store.claim(1).expect("claim").remove(0);
    assert_eq!(
        store.fail(l2.token, "second").expect("fail"),
        FailOutcome::Dead
    );
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(
        (j.state, j.last_error.as_deref()),
        (JobState::Dead, Some("second"))
    );
    assert_eq!(store.stats().count(JobState::Dead), 1);
    assert_eq!(store.stats().depth(Priority::Normal), 0);
}

#[test]
fn idempotency_key_of_an_unfinished_job_returns_that_job() {
    let (_d, _c, store) = open();
    let first = store
        .enqueue(job("a").idempotency_key("AAPL:v7"))
        .expect("enqueue");
    let again = store
        .enqueue(job("b").idempotency_key("AAPL:v7"))
        .expect("enqueue");
    assert!(matches!(first, Enqueued::Created(_)));
    assert_eq!(again, Enqueued::Existing(first.id()));
    let lease = store.claim(1).expect("claim").remove(0);
    assert_eq!(
        store
            .enqueue(job("c").idempotency_key("AAPL:v7"))
            .expect("e"),
        Enqueued::Existing(first.id())
    );
    store.complete(lease.token, vec![]).expect("complete");
    assert!(matches!(
        store
            .enqueue(job("d").idempotency_key("AAPL:v7"))
            .expect("e"),
        Enqueued::Created(_)
    ));
}

#[test]
fn duplicate_keys_within_one_batch_make_one_job() {
    let (_d, _c, store) = open();
    let out = store
        .enqueue_many(vec![
            job("a").idempotency_key("k"),
            job("b").idempotency_key("k"),
        ])
        .expect("e");
    assert_eq!(out[1], Enqueued::Existing(out[0].id()));
    assert_eq!(store.stats().count(JobState::Queued), 1);
}

#[test]
fn cancel_removes_a_queued_job_and_refuses_a_running_one() {
    let (_d, _c, store) = open();
    let a = store.enqueue(job("a")).expect("enqueue").id();
    let b = store.enqueue(job("b")).expect("enqueue").id();
    let lease = store.claim(1).expect("claim").remove(0);
    assert_eq!(lease.job.id, a);
    assert_eq!(
        store.cancel(a).expect("cancel"),
        CancelOutcome::NotCancellable(JobState::Running)
    );
    assert_eq!(store.cancel(b).expect("cancel"), CancelOutcome::Cancelled);
    assert_eq!(
        store.cancel(b).expect("cancel"),
        CancelOutcome::NotCancellable(JobState::Cancelled)
    );
    assert!(store.claim(1).expect("claim").is_empty());
    assert!(matches!(
        store.cancel(12345),
        Err(StoreError::UnknownJob(12345))
    ));
    assert_eq!(store.stats().count(JobState::Cancelled), 1);
}

#[test]
fn cancel_stops_a_scheduled_retry() {
    let (_d, clock, store) = open();
    let id = store.enqueue(job("a")).expect("enqueue").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.fail(lease.token, "x").expect("fail");
    assert_eq!(store.cancel(id).expect("cancel"), CancelOutcome::Cancelled);
    clock.advance_ms(100_000);
    assert!(store.claim(1).expect("claim").is_empty());
}

#[test]
fn paused_priority_is_skipped_until_resumed() {
    let (_d, _c, store) = open();
    let h = store
        .enqueue(job("h").priority(Priority::High))
        .expect("e")
        .id();
    let n = store.enqueue(job("n")).expect("e").id();
    store.set_paused(Priority::High, true).expect("pause");
    assert!(store.stats().paused[0]);
    assert_eq!(
        store
            .claim(5)
            .expect("claim")
            .iter()
            .map(|l| l.job.id)
            .collect::<Vec<_>>(),
        vec![n]
    );
    store.set_paused(Priority::High, false).expect("resume");
    assert_eq!(store.claim(5).expect("claim")[0].job.id, h);
}

#[test]
fn pause_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    {
        let store = Store::open(dir.path(), config(&clock)).expect("open");
        store.set_paused(Priority::Low, true).expect("pause");
        store
            .enqueue(job("l").priority(Priority::Low))
            .expect("enqueue");
    }
    let store = Store::open(dir.path(), config(&clock)).expect("reopen");
    assert!(store.claim(1).expect("claim").is_empty());
    assert!(store.stats().paused[2]);
}

#[test]
fn queue_full_refuses_submissions_beyond_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            queue_depth_max: 2,
            ..StoreConfig::default()
        },
    )
    .expect("open");
    store
        .enqueue_many(vec![job("a"), job("b")])
        .expect("enqueue");
    let e = store.enqueue(job("c")).expect_err("full");
    assert!(
        matches!(e, StoreError::QueueFull { depth: 2, max: 2 }),
        "{e}"
    );
    assert!(e.to_string().contains("queue_depth_max = 2"));
}

#[test]
fn oversized_and_malformed_inputs_are_typed_errors_that_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        payload_bytes_max: 8,
        batch_jobs_max: 3,
        job_symbols_max: 1,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).expect("open");
    let cases: Vec<(Vec<NewJob>, &str)> = vec![
        (
            vec![NewJob::new("compute", vec![0; 9])],
            "payload_bytes_max = 8",
        ),
        (vec![NewJob::new("", vec![])], "invalid kind"),
        (vec![NewJob::new("has space", vec![])], "invalid kind"),
        (
            vec![job("a").idempotency_key("")],
            "invalid idempotency_key",
        ),
        (vec![job("a").attempts_max(0)], "invalid attempts_max"),
        (
            vec![job("a").symbols(vec![sym("A"), sym("B")])],
            "job_symbols_max = 1",
        ),
        (
            vec![job("a"), job("b"), job("c"), job("d")],
            "batch_jobs_max = 3",
        ),
        (
            vec![job("ok"), NewJob::new("compute", vec![0; 9])],
            "payload_bytes_max",
        ),
    ];
    for (jobs, needle) in cases {
        let e = store.enqueue_many(jobs).expect_err(needle).to_string();
        assert!(e.contains(needle), "{e} lacks {needle}");
    }
    assert_eq!(store.stats(), kiln_store::QueueStats::default());
    assert!(store.claim(4).is_err(), "claim above batch_jobs_max");
}

#[test]
fn oversized_series_is_refused_and_the_job_stays_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            series_bytes_max: 1024,
            ..StoreConfig::default()
        },
    )
    .expect("open");
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let key = SeriesKey::new(sym("A"), "sma(5)").expect("key");
    let e = store
        .complete(lease.token, vec![(key.clone(), series(vec![0.0; 1000]))])
        .expect_err("too big");
    assert!(e.to_string().contains("series_bytes_max = 1024"), "{e}");
    assert_eq!(store.stats().count(JobState::Running), 1);
    assert!(store.series(&key).expect("read").is_none());
}

#[test]
fn unknown_job_reads_as_none() {
    let (_d, _c, store) = open();
    assert!(store.job(77).expect("read").is_none());
}

#[test]
fn running_jobs_of_a_dead_process_are_requeued_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let (a, b);
    {
        let store = Store::open(dir.path(), config(&clock)).expect("open");
        a = store.enqueue(job("a")).expect("e").id();
        b = store.enqueue(job("b").attempts_max(1)).expect("e").id();
        store.claim(2).expect("claim");
        // Dropped without completing: as if the process had died.
    }
    let store = Store::open(dir.path(), config(&clock)).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.requeued, r.dead, r.counters_drift.clone()), (1, 1, None));
    let ja = store.job(a).expect("read").expect("exists");
    assert_eq!((ja.state, ja.attempts), (JobState::Queued, 1));
    assert!(
        ja.last_error
            .as_deref()
            .unwrap_or("")
            .contains("process ended")
    );
    assert_eq!(
        store.job(b).expect("read").expect("exists").state,
        JobState::Dead
    );
    assert_eq!(store.claim(5).expect("claim")[0].token.attempt, 2);
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn everything_acknowledged_survives_reopen_in_relaxed_mode_after_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        durability: Durability::Relaxed,
        ..StoreConfig::default()
    };
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), cfg.clone()).expect("open");
        let ids = store
            .enqueue_many((0..50).map(|i| job(&i.to_string())).collect())
            .expect("e");
        store.sync().expect("sync");
        ids.into_iter().map(Enqueued::id).collect()
    };
    let store = Store::open(dir.path(), cfg).expect("reopen");
    for id in ids {
        assert_eq!(
            store.job(id).expect("read").expect("exists").state,
            JobState::Queued
        );
    }
}

#[test]
fn a_power_loss_in_relaxed_mode_reruns_the_jobs_whose_results_did_not_reach_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        // The background flusher never runs: only `sync` makes bytes durable.
        tick_ms: 3_600_000,
        ..StoreConfig::default()
    };
    // 4096 values archive to about 32 KiB: value-log records, not inline.
    let big = |x: f64| series(vec![x; 4096]);
    let key = |s: &str| SeriesKey::new(sym(s), "close").expect("key");
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        let ids: Vec<u64> = store
            .enqueue_many(vec![job("a"), job("b"), job("c")])
            .expect("enqueue")
            .into_iter()
            .map(Enqueued::id)
            .collect();
        let leases = store.claim(3).expect("claim");
        store
            .complete(leases[0].token, vec![(key("A"), big(1.0))])
            .expect("complete a");
        store.sync().expect("sync");
        store
            .complete(leases[1].token, vec![(key("B"), big(2.0))])
            .expect("complete b");
        store
            .complete(
                leases[2].token,
                vec![(key("C"), big(3.0)), (key("A"), big(4.0))],
            )
            .expect("complete c");
        store.simulate_power_loss(true).expect("power loss");
        ids
    };
    // The next session may run in either mode.
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (3, 2), "{r:?}");
    assert_eq!(
        store.job(ids[0]).expect("read").expect("a").state,
        JobState::Succeeded
    );
    assert_eq!(r.counters_drift, None, "the requeues are expected");
    for &id in &ids[1..] {
        let j = store.job(id).expect("read").expect("exists");
        assert_eq!(
            (j.state, j.attempts),
            (JobState::Queued, 0),
            "the lost attempt is not counted"
        );
        assert!(j.last_error.unwrap_or_default().contains("power loss"));
    }
    // A's newer series was lost with job c; its index entry is gone with it.
    assert!(store.series(&key("A")).expect("read").is_none());
    assert!(store.series(&key("B")).expect("read").is_none());
    assert!(store.check().expect("check").problems.is_empty());

    // The requeued jobs run again and their results are stored for good.
    let leases = store.claim(5).expect("claim");
    assert_eq!(leases.len(), 2);
    for l in &leases {
        let (s, x) = if l.job.id == ids[1] {
            ("B", 2.0)
        } else {
            ("C", 3.0)
        };
        store
            .complete(l.token, vec![(key(s), big(x))])
            .expect("complete");
    }
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().vlog.lost_records, 0);
    assert_eq!(store.stats().count(JobState::Succeeded), 3);
    for (s, x) in [("B", 2.0), ("C", 3.0)] {
        let view = store.series(&key(s)).expect("read").expect("stored");
        assert!(view.values().iter().all(|&v| v == x), "{s}");
    }
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn the_relaxed_flusher_makes_results_durable_within_ticks_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        tick_ms: 5,
        // About 32 KiB per series: a new segment every other record.
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let key = |i: usize| SeriesKey::new(sym(&format!("S{i}")), "close").expect("key");
    {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        store
            .enqueue_many((0..12).map(|i| job(&i.to_string())).collect())
            .expect("enqueue");
        for (i, l) in store.claim(12).expect("claim").iter().enumerate() {
            store
                .complete(l.token, vec![(key(i), series(vec![i as f64; 4096]))])
                .expect("complete");
        }
        // No explicit sync: the flusher fsyncs, the writer records the mark.
        std::thread::sleep(Duration::from_millis(500));
        store.simulate_power_loss(true).expect("power loss");
    }
    let store = Store::open(dir.path(), relaxed).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (0, 0), "{r:?}");
    assert_eq!(store.stats().count(JobState::Succeeded), 12);
    for i in 0..12 {
        let view = store.series(&key(i)).expect("read").expect("stored");
        assert!(view.values().iter().all(|&v| v == i as f64), "S{i}");
    }
    assert!(
        fs_segments(dir.path()) > 3,
        "the records span several segments"
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn a_job_with_one_lost_record_loses_all_its_records_past_the_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relaxed = StoreConfig {
        durability: Durability::Relaxed,
        tick_ms: 3_600_000,
        ..StoreConfig::default()
    };
    let key = |f: &str| SeriesKey::new(sym("X"), f).expect("key");
    let id = {
        let store = Store::open(dir.path(), relaxed.clone()).expect("open");
        let id = store.enqueue(job("x")).expect("enqueue").id();
        let l = store.claim(1).expect("claim").remove(0);
        let results = vec![
            (key("out"), series(vec![7.5; 4096])),
            (key("@state"), series(vec![9.25; 4096])),
        ];
        store.complete(l.token, results).expect("complete");
        store.simulate_power_loss(false).expect("power loss");
        id
    };
    // Only the output's bytes are damaged; the state's are intact.
    let needle = 7.5f64.to_le_bytes();
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path().join("vlog")).expect("vlog") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        if let Some(at) = bytes.windows(8).position(|w| w == needle) {
            bytes[at] ^= 0x01;
            std::fs::write(&path, bytes).expect("write");
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let store = Store::open(dir.path(), relaxed).expect("reopen");
    let r = store.recovery_report();
    assert_eq!((r.vlog.lost_records, r.rerun_lost), (2, 1), "{r:?}");
    assert!(store.series(&key("out")).expect("read").is_none());
    assert!(
        store.series(&key("@state")).expect("read").is_none(),
        "the state must not outlive the outputs it belongs to"
    );
    assert_eq!(
        store.job(id).expect("read").expect("job").state,
        JobState::Queued
    );
    assert!(store.check().expect("check").problems.is_empty());
}

fn fs_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("vlog")).expect("vlog").count()
}

#[test]
fn failed_commit_poisons_the_store_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        store.enqueue(job("kept")).expect("enqueue");
        store.inject_commit_failure().expect("inject");
        let e = store.enqueue(job("lost")).expect_err("commit fails");
        assert!(matches!(e, StoreError::Poisoned { .. }), "{e}");
        let again = store.enqueue(job("refused")).expect_err("poisoned");
        assert!(
            again.to_string().contains("injected write failure"),
            "{again}"
        );
        assert!(store.poisoned().is_some());
        assert!(store.claim(1).is_err());
    }
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert!(store.poisoned().is_none());
    assert_eq!(store.stats().count(JobState::Queued), 1);
    store.enqueue(job("works")).expect("writes work again");
}

#[test]
fn format_version_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), StoreConfig::default()).expect("open"));
    std::fs::write(dir.path().join(kiln_store::FORMAT_FILE), "kiln-store 999\n").expect("write");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("mismatch")
        .to_string();
    assert!(
        e.contains("format version kiln-store 999")
            && e.contains(&format!("reads version {}", kiln_store::FORMAT_VERSION)),
        "{e}"
    );
}

#[test]
fn a_foreign_non_empty_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("foreign")
        .to_string();
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn a_directory_whose_creation_a_crash_interrupted_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join(format!("{}.tmp", kiln_store::FORMAT_FILE));
    std::fs::write(&tmp, "kiln-st").expect("write");
    std::fs::write(dir.path().join("LOCK"), "").expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    store.enqueue(job("a")).expect("enqueue");
    assert!(!tmp.exists(), "the half-written format file is replaced");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(kiln_store::FORMAT_FILE)).expect("read"),
        format!("kiln-store {}\n", kiln_store::FORMAT_VERSION)
    );
}

#[test]
fn a_newest_segment_a_crash_left_without_its_header_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SeriesKey::new(sym("A"), "big").expect("key");
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        store.enqueue(job("a")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        let values = (0..1000).map(f64::from).collect();
        store
            .complete(lease.token, vec![(key.clone(), series(values))])
            .expect("complete");
    }
    let vlog = dir.path().join("vlog");
    for (name, bytes) in [
        // A segment created in place and cut before its header was whole,
        // and one whose creation in a temporary file was cut.
        ("0000000002.seg", &b"KILNV"[..]),
        ("0000000003.seg.tmp", &[0u8; 16][..]),
    ] {
        std::fs::write(vlog.join(name), bytes).expect("write");
    }
    {
        let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert_eq!(store.recovery_report().vlog.removed_segments, 2);
        let view = store.series(&key).expect("read").expect("kept");
        assert_eq!(view.values()[999], 999.0);
        store.enqueue(job("b")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        let values = (0..1000).map(|i| f64::from(i) * 2.0).collect();
        let other = SeriesKey::new(sym("B"), "big").expect("key");
        store
            .complete(lease.token, vec![(other, series(values))])
            .expect("complete");
        assert!(store.check().expect("check").problems.is_empty());
    }
    // A newest segment with a whole header of another program is not
    // kiln's to keep either.
    std::fs::write(vlog.join("0000000009.seg"), [0xabu8; 16]).expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen again");
    assert_eq!(store.recovery_report().vlog.removed_segments, 1);
    let other = SeriesKey::new(sym("B"), "big").expect("key");
    assert_eq!(
        store.series(&other).expect("read").expect("kept").values()[999],
        1998.0
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn history_keeps_only_the_most_recent_finished_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            history_max: 3,
            ..StoreConfig::default()
        },
    )
    .expect("open");
    let ids: Vec<u64> = store
        .enqueue_many((0..5).map(|i| job(&i.to_string())).collect())
        .expect("e")
        .into_iter()
        .map(Enqueued::id)
        .collect();
    for lease in store.claim(5).expect("claim") {
        store.complete(lease.token, vec![]).expect("complete");
    }
    store
        .enqueue(job("flush"))
        .expect("one more group trims history");
    let kept: Vec<u64> = store
        .history(10)
        .expect("history")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(kept, vec![ids[4], ids[3], ids[2]]);
    assert!(store.job(ids[0]).expect("read").is_none());
    assert_eq!(store.stats().count(JobState::Succeeded), 3);
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn purge_removes_finished_jobs_older_than_an_age() {
    let (_d, clock, store) = open();
    let old = store.enqueue(job("old")).expect("e").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, vec![]).expect("complete");
    clock.advance_ms(10_000);
    let new = store.enqueue(job("new")).expect("e").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, vec![]).expect("complete");
    assert_eq!(store.purge_finished_older_than(5_000).expect("purge"), 1);
    assert!(store.job(old).expect("read").is_none());
    assert!(store.job(new).expect("read").is_some());
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn retention_purges_old_finished_jobs_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let cfg = StoreConfig {
        retention_ms: Some(1_000),
        ..config(&clock)
    };
    let store = Store::open(dir.path(), cfg).expect("open");
    let id = store.enqueue(job("a")).expect("e").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, vec![]).expect("complete");
    clock.advance_ms(1_000);
    store.enqueue(job("b")).expect("a group runs the purge");
    assert!(store.job(id).expect("read").is_none());
}

#[test]
fn compaction_moves_live_series_and_deletes_sparse_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).expect("open");
    let key = |i: usize| SeriesKey::new(sym(&format!("S{i}")), "sma(5)").expect("key");
    // 20 series of 16 KB fill several 64 KB segments; then overwrite most.
    for round in 0..2 {
        for i in 0..20 {
            if round == 1 && i % 5 == 0 {
                continue;
            }
            store.enqueue(job("a")).expect("e");
            let lease = store.claim(1).expect("claim").remove(0);
            let v = vec![(round * 100 + i) as f64; 2000];
            store
                .complete(lease.token, vec![(key(i), series(v))])
                .expect("complete");
        }
    }
    let segments_before = std::fs::read_dir(dir.path().join("vlog"))
        .expect("ls")
        .count();
    let report = store.compact().expect("compact");
    assert!(report.removed_segments > 0, "{report:?}");
    let segments_after = std::fs::read_dir(dir.path().join("vlog"))
        .expect("ls")
        .count();
    assert!(
        segments_after < segments_before,
        "{segments_before} -> {segments_after}"
    );
    for i in 0..20 {
        let want = if i % 5 == 0 { i } else { 100 + i } as f64;
        let view = store.series(&key(i)).expect("read").expect("kept");
        assert!(view.values().iter().all(|&v| v == want), "S{i}");
    }
    assert!(store.check().expect("check").problems.is_empty());
    drop(store);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(
        store.series(&key(3)).expect("read").expect("kept").values()[0],
        103.0
    );
}

/// Stores one 1000-value series (so it goes to the value log) in a store at
/// `dir`, closes it, and returns the key and the segment file.
fn store_one_large_series(dir: &std::path::Path) -> (SeriesKey, std::path::PathBuf) {
    let key = SeriesKey::new(sym("A"), "sma(5)").expect("key");
    let store = Store::open(dir, StoreConfig::default()).expect("open");
    store.enqueue(job("a")).expect("e");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![(key.clone(), series(vec![1.0; 1000]))])
        .expect("complete");
    let seg = std::fs::read_dir(dir.join("vlog"))
        .expect("ls")
        .next()
        .expect("one segment")
        .expect("entry")
        .path();
    (key, seg)
}

#[test]
fn unindexed_value_log_tail_is_truncated_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, seg) = store_one_large_series(dir.path());
    let len = std::fs::metadata(&seg).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    std::io::Write::write_all(&mut f, &[7u8; 1000]).expect("append garbage");
    drop(f);
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().vlog.truncated_bytes, 1000);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), len);
    assert_eq!(
        store.series(&key).expect("read").expect("kept").values(),
        &[1.0; 1000]
    );
}

#[test]
fn corrupted_series_bytes_are_reported_not_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, seg) = store_one_large_series(dir.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    std::fs::write(&seg, bytes).expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    let e = store.series(&key).expect_err("corrupt").to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    assert_eq!(store.check().expect("check").problems.len(), 1);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let e = Store::open(dir.path(), StoreConfig::default())
        .expect_err("locked")
        .to_string();
    assert!(e.contains("another kiln"), "{e}");
}

#[test]
fn small_series_stay_in_sled_and_large_ones_go_to_the_value_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let vlog_bytes = || -> u64 {
        std::fs::read_dir(dir.path().join("vlog"))
            .expect("ls")
            .map(|e| e.expect("entry").metadata().expect("stat").len())
            .sum()
    };
    let empty = vlog_bytes();
    let small = SeriesKey::new(sym("A"), "rsi(14)").expect("key");
    let large = SeriesKey::new(sym("A"), "sma(200)").expect("key");
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![(small.clone(), series(vec![0.5; 16]))])
        .expect("complete");
    assert_eq!(vlog_bytes(), empty, "a 16-value series is kept inline");
    store.enqueue(job("b")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    store
        .complete(lease.token, vec![(large.clone(), series(vec![0.25; 2000]))])
        .expect("complete");
    assert!(
        vlog_bytes() >= empty + 16_000,
        "a 2000-value series goes to the value log"
    );
    assert_eq!(
        store
            .series(&small)
            .expect("read")
            .expect("stored")
            .values(),
        &[0.5; 16]
    );
    assert_eq!(
        store
            .series(&large)
            .expect("read")
            .expect("stored")
            .values(),
        &[0.25; 2000][..]
    );
    assert_eq!(
        store.series_keys(&sym("A")).expect("keys"),
        vec![small, large]
    );
}

#[test]
fn history_lists_finished_jobs_newest_first_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0);
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), config(&clock)).expect("open");
        let ids: Vec<u64> = store
            .enqueue_many((0..4).map(|i| job(&i.to_string())).collect())
            .expect("enqueue")
            .into_iter()
            .map(Enqueued::id)
            .collect();
        let leases = store.claim(4).expect("claim");
        store.complete(leases[2].token, vec![]).expect("complete");
        store.fail(leases[0].token, "x").expect("fail");
        store.complete(leases[1].token, vec![]).expect("complete");
        store
            .cancel(ids[3])
            .expect("cancel of a running job is refused, not an error");
        ids
    };
    let store = Store::open(dir.path(), config(&clock)).expect("reopen");
    let history: Vec<(u64, JobState)> = store
        .history(10)
        .expect("history")
        .iter()
        .map(|j| (j.id, j.state))
        .collect();
    assert_eq!(
        history,
        vec![(ids[1], JobState::Succeeded), (ids[2], JobState::Succeeded)]
    );
    assert_eq!(store.history(1).expect("history").len(), 1);
}

#[test]
fn a_complete_call_larger_than_its_bound_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        complete_bytes_max: 20_000,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).expect("open");
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let results = (0..3)
        .map(|i| {
            (
                SeriesKey::new(sym("A"), format!("f{i}")).expect("key"),
                series(vec![1.0; 1000]),
            )
        })
        .collect();
    let e = store
        .complete(lease.token, results)
        .expect_err("too much")
        .to_string();
    assert!(e.contains("complete_bytes_max = 20000"), "{e}");
    assert_eq!(store.stats().count(JobState::Running), 1);
}

#[test]
fn a_half_written_sled_snapshot_left_by_a_kill_does_not_stop_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let id = store.enqueue(job("kept")).expect("enqueue").id();
    drop(store);
    // What a kill between sled's snapshot write and its rename leaves: a
    // `.generating` file that sorts after every complete snapshot.
    let partial = dir
        .path()
        .join("sled")
        .join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot").expect("write");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    assert_eq!(store.recovery_report().partial_snapshots_removed, 1);
    assert!(!partial.exists());
    assert_eq!(
        store.job(id).expect("job").map(|j| j.state),
        Some(JobState::Queued)
    );
}
