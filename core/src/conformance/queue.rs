//! The job queue's behaviour: every transition and every error, and the
//! result series written with completions.

// Each function is one behaviour, and its name says which.
#![allow(missing_docs)]

use super::{Harness, T0, config, job, open, series, sym};
use crate::{
    Backend, CancelOutcome, Clock, Completion, Enqueued, FailOutcome, FrameKey, FrameRead,
    JobFilter, JobQueue, JobState, LeaseToken, NewJob, Priority, QueueConfig, QueueStats,
    ResultStore, SeriesKey, SeriesRead, StoreError,
};

pub fn enqueued_job_is_queued_with_its_fields<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
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
    assert_eq!(store.stats().expect("stats").count(JobState::Queued), 1);
    assert_eq!(store.stats().expect("stats").depth(Priority::High), 1);
}

pub fn job_listing_filters_and_pages_newest_first<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    let a = store
        .enqueue(job("a").symbols(vec![sym("AAPL")]))
        .expect("e")
        .id();
    let b = store
        .enqueue(
            NewJob::new("refresh", Vec::new())
                .symbols(vec![sym("MSFT"), sym("AAPL")])
                .priority(Priority::High),
        )
        .expect("e")
        .id();
    let c = store
        .enqueue(job("c").symbols(vec![sym("MSFT")]).priority(Priority::Low))
        .expect("e")
        .id();
    assert_eq!(store.cancel(c).expect("cancel"), CancelOutcome::Cancelled);
    let ids = |f: JobFilter, limit: usize| -> Vec<u64> {
        let jobs = store.jobs(&f, limit).expect("jobs");
        jobs.iter().map(|j| j.id).collect()
    };
    assert_eq!(ids(JobFilter::default(), 10), vec![c, b, a]);
    assert_eq!(ids(JobFilter::default(), 2), vec![c, b]);
    assert_eq!(
        ids(JobFilter::state(Some(JobState::Queued)), 10),
        vec![b, a]
    );
    assert_eq!(
        ids(JobFilter::state(Some(JobState::Cancelled)), 10),
        vec![c]
    );
    let by_before = |id: u64| JobFilter {
        before: Some(id),
        ..JobFilter::default()
    };
    let by = |f: fn(&mut JobFilter)| {
        let mut filter = JobFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(ids(by(|f| f.priority = Some(Priority::High)), 10), vec![b]);
    assert_eq!(ids(by(|f| f.kind = Some("refresh".into())), 10), vec![b]);
    assert_eq!(
        ids(by(|f| f.kind = Some("nothing".into())), 10),
        Vec::<u64>::new()
    );
    assert_eq!(ids(by(|f| f.symbol = Some(sym("AAPL"))), 10), vec![b, a]);
    assert_eq!(ids(by(|f| f.symbol = Some(sym("MSFT"))), 10), vec![c, b]);
    // The next page starts below the last id of this one.
    assert_eq!(ids(by_before(b), 10), vec![a]);
    assert_eq!(ids(by_before(a), 10), Vec::<u64>::new());
    // Every field at once.
    let all = JobFilter {
        state: Some(JobState::Queued),
        priority: Some(Priority::Normal),
        kind: Some("compute".into()),
        symbol: Some(sym("AAPL")),
        before: Some(c),
    };
    assert_eq!(ids(all, 10), vec![a]);
}

pub fn claims_follow_strict_priority_then_fifo<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
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

pub fn claim_takes_at_most_max_and_empty_queue_gives_nothing<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    assert!(store.claim(5).expect("claim").is_empty());
    store
        .enqueue_many((0..5).map(|i| job(&i.to_string())).collect())
        .expect("enqueue");
    assert_eq!(store.claim(3).expect("claim").len(), 3);
    assert_eq!(store.claim(3).expect("claim").len(), 2);
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 5);
}

pub fn claimed_job_is_running_with_a_lease_and_an_attempt<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
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

pub fn delayed_job_is_not_claimable_before_run_at<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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

pub fn expired_lease_returns_job_to_queue<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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

pub fn heartbeat_extends_the_lease<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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

pub fn heartbeat_after_expiry_is_lease_lost<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim_with_lease(1, 100).expect("claim").remove(0);
    clock.advance_ms(100);
    assert!(matches!(
        store.heartbeat(lease.token, 100),
        Err(StoreError::LeaseLost { .. })
    ));
}

pub fn lease_expiry_on_last_attempt_makes_the_job_dead<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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

pub fn complete_stores_results_and_marks_succeeded_atomically<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
    let id = store
        .enqueue(job("a").symbols(vec![sym("AAPL")]))
        .expect("enqueue")
        .id();
    let lease = store.claim(1).expect("claim").remove(0);
    clock.advance_ms(25);
    let key = SeriesKey::new(sym("AAPL"), "sma(20)").expect("key");
    store
        .complete(lease.token, vec![series(&key, vec![f64::NAN, 1.0, 2.0])])
        .expect("complete");
    let j = store.job(id).expect("read").expect("exists");
    assert_eq!(
        (j.state, j.finished_ms),
        (JobState::Succeeded, Some(T0 + 25))
    );
    let view = store.series(&key).expect("read").expect("stored");
    assert!(view.values()[0].is_nan());
    assert_eq!(&view.values()[1..], &[1.0, 2.0]);
    assert_eq!((view.bar_count(), view.last_ts()), (3, 42));
    let frame = store
        .frame(&FrameKey::new(sym("AAPL"), "sma(20)").expect("key"))
        .expect("read")
        .expect("stored");
    assert_eq!(frame.labels(), &["sma(20)".to_string()]);
    assert_eq!(frame.state(), Some((view.covers(), &[1u8, 2, 3][..])));
    assert_eq!(store.series_writer(&key).expect("read"), Some(id));
    let stats = store.symbol_stats(&sym("AAPL")).expect("stats");
    assert_eq!(
        (stats.jobs, stats.failures, stats.duration_ms_total),
        (1, 0, 25)
    );
}

pub fn a_second_completion_replaces_the_series<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    let key = SeriesKey::new(sym("X"), "ema(3)").expect("key");
    for v in [1.0, 2.0] {
        store.enqueue(job("a")).expect("enqueue");
        let lease = store.claim(1).expect("claim").remove(0);
        store
            .complete(lease.token, vec![series(&key, vec![v])])
            .expect("complete");
    }
    assert_eq!(
        &*store.series(&key).expect("read").expect("stored").values(),
        &[2.0]
    );
    assert_eq!(store.series_keys(&sym("X")).expect("keys"), vec![key]);
}

pub fn complete_many_reports_each_outcome<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    store
        .enqueue_many(vec![job("a"), job("b")])
        .expect("enqueue");
    let leases = store.claim(2).expect("claim");
    let bogus = LeaseToken {
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
    assert_eq!(store.stats().expect("stats").count(JobState::Succeeded), 2);
}

pub fn failure_schedules_a_retry_with_backoff<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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
    assert_eq!(store.stats().expect("stats").depth(Priority::Normal), 1);
    assert!(
        store.claim(1).expect("claim").is_empty(),
        "not before the backoff"
    );
    clock.advance_ms(run_at_ms - T0);
    let lease = store.claim(1).expect("claim").remove(0);
    assert_eq!(lease.token.attempt, 2);
    assert_eq!(
        store.symbol_stats(&sym("A")).expect("stats").jobs,
        0,
        "the aggregates count finished jobs"
    );
    store.complete(lease.token, vec![]).expect("complete");
    assert_eq!(store.symbol_stats(&sym("A")).expect("stats").failures, 1);
}

pub fn exhausted_attempts_make_the_job_dead_with_the_last_error<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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
    assert_eq!(store.stats().expect("stats").count(JobState::Dead), 1);
    assert_eq!(store.stats().expect("stats").depth(Priority::Normal), 0);
}

pub fn idempotency_key_of_an_unfinished_job_returns_that_job<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
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

pub fn duplicate_keys_within_one_batch_make_one_job<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    let out = store
        .enqueue_many(vec![
            job("a").idempotency_key("k"),
            job("b").idempotency_key("k"),
        ])
        .expect("e");
    assert_eq!(out[1], Enqueued::Existing(out[0].id()));
    assert_eq!(store.stats().expect("stats").count(JobState::Queued), 1);
}

pub fn cancel_removes_a_queued_job_and_refuses_a_running_one<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
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
    assert_eq!(store.stats().expect("stats").count(JobState::Cancelled), 1);
}

pub fn cancel_stops_a_scheduled_retry<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
    let id = store.enqueue(job("a")).expect("enqueue").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.fail(lease.token, "x").expect("fail");
    assert_eq!(store.cancel(id).expect("cancel"), CancelOutcome::Cancelled);
    clock.advance_ms(100_000);
    assert!(store.claim(1).expect("claim").is_empty());
}

pub fn paused_priority_is_skipped_until_resumed<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    let h = store
        .enqueue(job("h").priority(Priority::High))
        .expect("e")
        .id();
    let n = store.enqueue(job("n")).expect("e").id();
    store.set_paused(Priority::High, true).expect("pause");
    assert!(store.stats().expect("stats").paused[0]);
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

pub fn pause_survives_reopen<H: Harness>(harness: &mut H) {
    let clock = Clock::manual(T0);
    let store = harness.open(config(&clock));
    store.set_paused(Priority::Low, true).expect("pause");
    store
        .enqueue(job("l").priority(Priority::Low))
        .expect("enqueue");
    let store = harness.reopen(store, config(&clock));
    assert!(store.claim(1).expect("claim").is_empty());
    assert!(store.stats().expect("stats").paused[2]);
}

pub fn queue_full_refuses_submissions_beyond_the_bound<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig {
        queue_depth_max: 2,
        ..QueueConfig::default()
    });
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

pub fn oversized_and_malformed_inputs_are_typed_errors_that_change_nothing<H: Harness>(
    harness: &mut H,
) {
    let cfg = QueueConfig {
        payload_bytes_max: 8,
        batch_jobs_max: 3,
        job_symbols_max: 1,
        ..QueueConfig::default()
    };
    let store = harness.open(cfg);
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
    assert_eq!(store.stats().expect("stats"), QueueStats::default());
    assert!(store.claim(4).is_err(), "claim above batch_jobs_max");
}

pub fn oversized_series_is_refused_and_the_job_stays_running<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig {
        series_bytes_max: 1024,
        ..QueueConfig::default()
    });
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let key = SeriesKey::new(sym("A"), "sma(5)").expect("key");
    let e = store
        .complete(lease.token, vec![series(&key, vec![0.0; 1000])])
        .expect_err("too big");
    assert!(e.to_string().contains("series_bytes_max = 1024"), "{e}");
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 1);
    assert!(store.series(&key).expect("read").is_none());
    // In a batch, only the completion with the oversized series is refused.
    store.enqueue(job("b")).expect("enqueue");
    let b = store.claim(1).expect("claim").remove(0);
    let small = SeriesKey::new(sym("B"), "sma(5)").expect("key");
    let outcomes = store
        .complete_many(vec![
            Completion {
                token: lease.token,
                results: vec![series(&key, vec![0.0; 1000])],
            },
            Completion {
                token: b.token,
                results: vec![series(&small, vec![1.0; 4])],
            },
        ])
        .expect("the call");
    assert!(matches!(&outcomes[0], Err(e) if e.to_string().contains("series_bytes_max")));
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    assert_eq!(
        store.job(b.job.id).expect("job").map(|j| j.state),
        Some(JobState::Succeeded)
    );
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 1);
    assert!(store.series(&key).expect("read").is_none());
    assert!(store.series(&small).expect("read").is_some());
}

pub fn unknown_job_reads_as_none<H: Harness>(harness: &mut H) {
    let (_c, store) = open(harness);
    assert!(store.job(77).expect("read").is_none());
}

pub fn history_keeps_only_the_most_recent_finished_jobs<H: Harness>(harness: &mut H) {
    let store = harness.open(QueueConfig {
        history_max: 3,
        ..QueueConfig::default()
    });
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
    assert_eq!(store.stats().expect("stats").count(JobState::Succeeded), 3);
    assert!(store.check().expect("check").problems.is_empty());
}

pub fn purge_removes_finished_jobs_older_than_an_age<H: Harness>(harness: &mut H) {
    let (clock, store) = open(harness);
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

pub fn retention_purges_old_finished_jobs_by_itself<H: Harness>(harness: &mut H) {
    let clock = Clock::manual(T0);
    let cfg = QueueConfig {
        retention_ms: Some(1_000),
        ..config(&clock)
    };
    let store = harness.open(cfg);
    let id = store.enqueue(job("a")).expect("e").id();
    let lease = store.claim(1).expect("claim").remove(0);
    store.complete(lease.token, vec![]).expect("complete");
    clock.advance_ms(1_000);
    store.enqueue(job("b")).expect("a group runs the purge");
    assert!(store.job(id).expect("read").is_none());
}

pub fn history_lists_finished_jobs_newest_first_and_survives_reopen<H: Harness>(harness: &mut H) {
    let clock = Clock::manual(T0);
    let (store, ids) = {
        let store = harness.open(config(&clock));
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
        (store, ids)
    };
    let store = harness.reopen(store, config(&clock));
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

/// Per-symbol aggregates over finished jobs: one job each, the attempts
/// that did not succeed, the last attempt's run time; the same after a
/// reopen, and after a purge that removes the jobs they were counted from.
pub fn symbol_aggregates_survive_reopen_and_purge<H: Harness>(harness: &mut H) {
    let clock = Clock::manual(T0);
    let store = harness.open(config(&clock));
    // A and B: failed once, then succeeded after 30 ms.
    store
        .enqueue(job("1").symbols(vec![sym("A"), sym("B")]))
        .expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let FailOutcome::Retry { run_at_ms } = store.fail(lease.token, "x").expect("fail") else {
        panic!("expected a retry");
    };
    clock.advance_ms(run_at_ms - T0);
    let lease = store.claim(1).expect("claim").remove(0);
    clock.advance_ms(30);
    store.complete(lease.token, vec![]).expect("complete");
    // A: succeeded at once after 5 ms.
    store
        .enqueue(job("2").symbols(vec![sym("A")]))
        .expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    clock.advance_ms(5);
    store.complete(lease.token, vec![]).expect("complete");
    // B: cancelled before it ran.
    let id = store
        .enqueue(job("3").symbols(vec![sym("B")]))
        .expect("enqueue")
        .id();
    assert_eq!(store.cancel(id).expect("cancel"), CancelOutcome::Cancelled);

    let expected = |store: &H::Backend, when: &str| {
        for (s, want) in [("A", (2, 1, 35)), ("B", (2, 1, 30))] {
            let st = store.symbol_stats(&sym(s)).expect("stats");
            assert_eq!(
                (st.jobs, st.failures, st.duration_ms_total),
                want,
                "{s} {when}"
            );
        }
        assert_eq!(store.symbol_stats(&sym("C")).expect("stats").jobs, 0);
    };
    expected(&store, "before a reopen");
    let store = harness.reopen(store, config(&clock));
    expected(&store, "after a reopen");
    let store = harness.reopen(
        store,
        QueueConfig {
            history_max: 1,
            ..config(&clock)
        },
    );
    store.enqueue(job("flush")).expect("a group trims history");
    assert_eq!(store.history(10).expect("history").len(), 1);
    expected(&store, "after a purge");
    let store = harness.reopen(store, config(&clock));
    expected(&store, "after a purge and a reopen");
}

pub fn a_complete_call_larger_than_its_bound_is_refused<H: Harness>(harness: &mut H) {
    let cfg = QueueConfig {
        complete_bytes_max: 20_000,
        ..QueueConfig::default()
    };
    let store = harness.open(cfg);
    store.enqueue(job("a")).expect("enqueue");
    let lease = store.claim(1).expect("claim").remove(0);
    let results = (0..3)
        .map(|i| {
            series(
                &SeriesKey::new(sym("A"), format!("f{i}")).expect("key"),
                vec![1.0; 1000],
            )
        })
        .collect();
    let e = store
        .complete(lease.token, results)
        .expect_err("too much")
        .to_string();
    assert!(e.contains("complete_bytes_max = 20000"), "{e}");
    assert_eq!(store.stats().expect("stats").count(JobState::Running), 1);
}
