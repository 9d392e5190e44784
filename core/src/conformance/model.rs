//! The model test: random sequences of enqueue / claim / heartbeat /
//! complete / fail / cancel / pause / time passing (lease expiry, backoff,
//! delays) / close-and-reopen, run against the backend and against a
//! deliberately plain in-memory model (a map scanned linearly). Every
//! answer and, after every step, every job's state and attempts and the
//! counters must agree. The byte sequences (for a fuzzer) also make the
//! backend's commits, writes and reads fail where the harness can: a step
//! such a failure strikes is refused, the backend is reopened, and it must
//! hold the state before the step or the one after it (a failed write may
//! strike after the step's batch reached the disk), with every step
//! acknowledged before.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::Harness;
use crate::{
    Backend, CancelOutcome, Clock, Enqueued, FailOutcome, JobState, LeaseToken, NewJob, Priority,
    QueueConfig, RetryPolicy, StoreError,
};

const T0: u64 = 1_000_000;
const ATTEMPTS: u32 = 2;
const POLICY: RetryPolicy = RetryPolicy {
    base_ms: 1_000,
    cap_ms: 8_000,
};

/// One operation of a sequence.
#[derive(Clone, Debug)]
enum Step {
    Enqueue {
        priority: u8,
        delay_ms: Option<u64>,
        key: Option<u8>,
    },
    Claim {
        max: usize,
        lease_ms: u64,
    },
    Heartbeat {
        pick: usize,
        extend_ms: u64,
    },
    Complete {
        pick: usize,
    },
    Fail {
        pick: usize,
    },
    Cancel {
        id: u64,
    },
    Pause {
        priority: u8,
        paused: bool,
    },
    Advance {
        ms: u64,
    },
    Reopen,
    /// The backend's next commit fails (a write, or with `fsync` an
    /// fsync); only where the harness can make it (the byte sequences).
    BreakCommit {
        fsync: bool,
    },
    /// The `nth` next call of I/O kind `fault` (see
    /// [`Harness::fail_io`]) on the backend's files fails; only where the
    /// harness can make it.
    FailIo {
        fault: u8,
        nth: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..3, proptest::option::of(0u64..3_000), proptest::option::of(0u8..4))
            .prop_map(|(priority, delay_ms, key)| Step::Enqueue { priority, delay_ms, key }),
        3 => (1usize..4, 100u64..2_000).prop_map(|(max, lease_ms)| Step::Claim { max, lease_ms }),
        1 => (any::<usize>(), 100u64..2_000).prop_map(|(pick, extend_ms)| Step::Heartbeat { pick, extend_ms }),
        2 => any::<usize>().prop_map(|pick| Step::Complete { pick }),
        2 => any::<usize>().prop_map(|pick| Step::Fail { pick }),
        1 => (1u64..12).prop_map(|id| Step::Cancel { id }),
        1 => (0u8..3, any::<bool>()).prop_map(|(priority, paused)| Step::Pause { priority, paused }),
        2 => (0u64..3_000).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Clone, Debug)]
struct MJob {
    priority: u8,
    state: JobState,
    attempts: u32,
    run_at: u64,
    lease_expires: u64,
    key: Option<String>,
}

#[derive(Clone, Default)]
struct Model {
    jobs: BTreeMap<u64, MJob>,
    next_id: u64,
    paused: [bool; 3],
}

impl Model {
    fn expire(&mut self, now: u64) {
        for job in self.jobs.values_mut() {
            if job.state == JobState::Running && job.lease_expires <= now {
                job.state = if job.attempts >= ATTEMPTS {
                    JobState::Dead
                } else {
                    JobState::Queued
                };
                job.run_at = now;
            }
        }
    }

    /// The job `t` holds, if it still does.
    fn held(&mut self, t: LeaseToken) -> Option<&mut MJob> {
        self.jobs
            .get_mut(&t.job_id)
            .filter(|j| j.state == JobState::Running && j.attempts == t.attempt)
    }

    fn counts(&self) -> [u64; 6] {
        let mut c = [0; 6];
        for j in self.jobs.values() {
            c[j.state as usize] += 1;
        }
        c
    }
}

fn config(clock: &Clock) -> QueueConfig {
    QueueConfig {
        clock: clock.clone(),
        attempts_max: ATTEMPTS,
        retry: POLICY,
        history_max: u64::MAX,
        retention_ms: None,
        ..QueueConfig::default()
    }
}

fn priority(p: u8) -> Priority {
    Priority::ALL[usize::from(p)]
}

fn run_steps<H: Harness>(harness: &mut H, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let clock = Clock::manual(T0);
    let mut store = harness.open(config(&clock));
    let mut model = Model {
        next_id: 1,
        ..Model::default()
    };
    let mut tokens: Vec<LeaseToken> = Vec::new();
    // A failure was made to strike the backend and has not struck yet.
    let mut armed = false;
    for step in steps {
        let now = clock.now_ms();
        model.expire(now);
        let advanced = matches!(step, Step::Advance { .. });
        match step {
            Step::Advance { ms } => clock.advance_ms(ms),
            Step::Reopen => {
                store = reopen(harness, store, &clock, &mut model, now);
                armed = false;
            }
            Step::BreakCommit { fsync } => armed |= harness.break_next_commit(&store, fsync),
            Step::FailIo { fault, nth } => armed |= harness.fail_io(fault, nth),
            step => {
                let op = Op::of(step, &tokens);
                let before = model.clone();
                let want = expect(&op, &mut model, &mut tokens, now);
                match call(&store, &op, now) {
                    Ok(got) => prop_assert_eq!(got, want, "{:?}", op),
                    // The failure struck (this step's commit, or one before
                    // it): the backend refuses everything until it is
                    // reopened. A failed commit changed nothing; a failed
                    // write or read may have struck after the step's batch
                    // reached the disk, so the step happened or did not.
                    // Every step acknowledged before it is there.
                    Err(e) if armed => {
                        let after = model;
                        store = harness.reopen(store, config(&clock));
                        armed = false;
                        model = [before, after]
                            .into_iter()
                            .map(|mut m| {
                                requeue_running::<H>(&mut m, now);
                                m
                            })
                            .find(|m| agree(&store, m).is_ok())
                            .ok_or_else(|| {
                                TestCaseError::fail(format!(
                                    "after {op:?} failed ({e}) and the store was reopened, it has neither the state before the step nor the one after"
                                ))
                            })?;
                    }
                    Err(e) => return Err(refused(e)),
                }
            }
        }
        // After time passes, the writer's idle tick may expire leases before
        // the model does (at the next step); compare after every other step.
        if !advanced && !armed {
            agree(&store, &model)?;
        }
    }
    // A failure made to strike may have struck a commit of the backend's
    // own (its idle tick): reopened, it has all that was acknowledged.
    if armed {
        store = reopen(harness, store, &clock, &mut model, clock.now_ms());
        agree(&store, &model)?;
    }
    let report = store.check().expect("check");
    prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
    Ok(())
}

/// Every job's state and attempts, and the counters, as the model has them.
fn agree<B: Backend>(store: &B, model: &Model) -> Result<(), TestCaseError> {
    for (id, j) in &model.jobs {
        let got = store.job(*id).expect("read").expect("job exists");
        prop_assert_eq!(
            (got.state, got.attempts),
            (j.state, j.attempts),
            "job {}",
            id
        );
    }
    prop_assert_eq!(store.stats().expect("stats").by_state, model.counts());
    Ok(())
}

/// A backend's refusal where the model expects an answer.
fn refused(e: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("refused: {e}"))
}

/// Closes and reopens the backend (a failure still armed is disarmed
/// first); the jobs it had running go back to the queue (or die on their
/// last attempt) where the harness says so.
fn reopen<H: Harness>(
    harness: &mut H,
    store: H::Backend,
    clock: &Clock,
    model: &mut Model,
    now: u64,
) -> H::Backend {
    let store = harness.reopen(store, config(clock));
    requeue_running::<H>(model, now);
    store
}

fn requeue_running<H: Harness>(model: &mut Model, now: u64) {
    for j in model.jobs.values_mut() {
        if H::REOPEN_REQUEUES_RUNNING && j.state == JobState::Running {
            j.state = if j.attempts >= ATTEMPTS {
                JobState::Dead
            } else {
                JobState::Queued
            };
            j.run_at = now;
        }
    }
}

/// A step that calls the backend, its lease (if it takes one) picked.
#[derive(Clone, Debug)]
enum Op {
    Enqueue {
        priority: u8,
        delay_ms: Option<u64>,
        key: Option<String>,
    },
    Claim {
        max: usize,
        lease_ms: u64,
    },
    Heartbeat {
        token: LeaseToken,
        extend_ms: u64,
    },
    Complete {
        token: LeaseToken,
    },
    Fail {
        token: LeaseToken,
    },
    Cancel {
        id: u64,
    },
    Pause {
        priority: u8,
        paused: bool,
    },
    /// A step on a lease when none was handed out yet.
    Nothing,
}

impl Op {
    fn of(step: Step, tokens: &[LeaseToken]) -> Op {
        let pick = |i: usize| tokens.get(i % tokens.len().max(1)).copied();
        match step {
            Step::Enqueue {
                priority,
                delay_ms,
                key,
            } => Op::Enqueue {
                priority,
                delay_ms,
                key: key.map(|k| format!("key{k}")),
            },
            Step::Claim { max, lease_ms } => Op::Claim { max, lease_ms },
            Step::Heartbeat { pick: i, extend_ms } => pick(i)
                .map(|token| Op::Heartbeat { token, extend_ms })
                .unwrap_or(Op::Nothing),
            Step::Complete { pick: i } => pick(i)
                .map(|token| Op::Complete { token })
                .unwrap_or(Op::Nothing),
            Step::Fail { pick: i } => pick(i)
                .map(|token| Op::Fail { token })
                .unwrap_or(Op::Nothing),
            Step::Cancel { id } => Op::Cancel { id },
            Step::Pause { priority, paused } => Op::Pause { priority, paused },
            Step::Advance { .. }
            | Step::Reopen
            | Step::BreakCommit { .. }
            | Step::FailIo { .. } => Op::Nothing,
        }
    }
}

/// What a step answers: the backend's answer, or the model's.
#[derive(Debug, PartialEq)]
enum Answer {
    Enqueued(Enqueued),
    Claimed(Vec<LeaseToken>),
    Extended(u64),
    Completed,
    Failed(FailOutcome),
    Cancel(CancelOutcome),
    Paused,
    LeaseLost,
    UnknownJob(u64),
    Nothing,
}

/// The model's side of a step: the answer the backend must give, with the
/// model (and the leases a claim hands out) updated.
fn expect(op: &Op, model: &mut Model, tokens: &mut Vec<LeaseToken>, now: u64) -> Answer {
    match op {
        Op::Enqueue {
            priority: p,
            delay_ms,
            key,
        } => {
            let existing = key.as_ref().and_then(|k| {
                model
                    .jobs
                    .iter()
                    .find(|(_, j)| !j.state.is_terminal() && j.key.as_ref() == Some(k))
                    .map(|(id, _)| *id)
            });
            Answer::Enqueued(match existing {
                Some(id) => Enqueued::Existing(id),
                None => {
                    let id = model.next_id;
                    model.next_id += 1;
                    let job = MJob {
                        priority: *p,
                        state: JobState::Queued,
                        attempts: 0,
                        run_at: now + delay_ms.unwrap_or(0),
                        lease_expires: 0,
                        key: key.clone(),
                    };
                    model.jobs.insert(id, job);
                    Enqueued::Created(id)
                }
            })
        }
        Op::Claim { max, lease_ms } => {
            let mut due: Vec<(u8, u64)> = model
                .jobs
                .iter()
                .filter(|(_, j)| {
                    j.state.is_waiting()
                        && j.run_at <= now
                        && !model.paused[usize::from(j.priority)]
                })
                .map(|(id, j)| (j.priority, *id))
                .collect();
            due.sort();
            let mut claimed = Vec::new();
            for (_, id) in due.into_iter().take(*max) {
                if let Some(j) = model.jobs.get_mut(&id) {
                    j.state = JobState::Running;
                    j.attempts += 1;
                    j.lease_expires = now + lease_ms;
                    claimed.push(LeaseToken {
                        job_id: id,
                        attempt: j.attempts,
                    });
                }
            }
            tokens.extend(&claimed);
            Answer::Claimed(claimed)
        }
        Op::Heartbeat { token, extend_ms } => match model.held(*token) {
            Some(j) => {
                j.lease_expires = now + extend_ms;
                Answer::Extended(now + extend_ms)
            }
            None => Answer::LeaseLost,
        },
        Op::Complete { token } => match model.held(*token) {
            Some(j) => {
                j.state = JobState::Succeeded;
                Answer::Completed
            }
            None => Answer::LeaseLost,
        },
        Op::Fail { token } => match model.held(*token) {
            Some(j) if j.attempts >= ATTEMPTS => {
                j.state = JobState::Dead;
                Answer::Failed(FailOutcome::Dead)
            }
            Some(j) => {
                j.state = JobState::Failed;
                j.run_at = now + POLICY.delay_ms(token.job_id, token.attempt);
                Answer::Failed(FailOutcome::Retry {
                    run_at_ms: j.run_at,
                })
            }
            None => Answer::LeaseLost,
        },
        Op::Cancel { id } => match model.jobs.get_mut(id) {
            None => Answer::UnknownJob(*id),
            Some(j) if j.state.is_waiting() => {
                j.state = JobState::Cancelled;
                Answer::Cancel(CancelOutcome::Cancelled)
            }
            Some(j) => Answer::Cancel(CancelOutcome::NotCancellable(j.state)),
        },
        Op::Pause { priority, paused } => {
            model.paused[usize::from(*priority)] = *paused;
            Answer::Paused
        }
        Op::Nothing => Answer::Nothing,
    }
}

/// The backend's side of a step: its answer, or a refusal the model does
/// not know (an error other than a lost lease or an unknown job).
fn call<B: Backend>(store: &B, op: &Op, now: u64) -> Result<Answer, StoreError> {
    let answer = match op {
        Op::Enqueue {
            priority: p,
            delay_ms,
            key,
        } => {
            let mut job = NewJob::new("t", vec![]).priority(priority(*p));
            if let Some(d) = delay_ms {
                job = job.run_at_ms(now + d);
            }
            if let Some(k) = key {
                job = job.idempotency_key(k.clone());
            }
            store.enqueue(job).map(Answer::Enqueued)
        }
        Op::Claim { max, lease_ms } => store
            .claim_with_lease(*max, *lease_ms)
            .map(|leases| Answer::Claimed(leases.into_iter().map(|l| l.token).collect())),
        Op::Heartbeat { token, extend_ms } => {
            store.heartbeat(*token, *extend_ms).map(Answer::Extended)
        }
        Op::Complete { token } => store.complete(*token, vec![]).map(|()| Answer::Completed),
        Op::Fail { token } => store.fail(*token, "err").map(Answer::Failed),
        Op::Cancel { id } => store.cancel(*id).map(Answer::Cancel),
        Op::Pause {
            priority: p,
            paused,
        } => store
            .set_paused(priority(*p), *paused)
            .map(|()| Answer::Paused),
        Op::Nothing => Ok(Answer::Nothing),
    };
    match answer {
        Err(StoreError::LeaseLost { .. }) => Ok(Answer::LeaseLost),
        Err(StoreError::UnknownJob(id)) => Ok(Answer::UnknownJob(id)),
        other => other,
    }
}

/// Reads bytes as a sequence of steps (for a coverage-guided fuzzer): each
/// step is a tag byte and up to three argument bytes, in the proportions
/// and ranges of the random sequences; missing bytes read as 0; at most
/// 256 steps.
fn steps_from(data: &[u8]) -> Vec<Step> {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let mut steps = Vec::new();
    while let Some(tag) = next() {
        if steps.len() == 256 {
            break;
        }
        let mut arg = || next().unwrap_or(0);
        let step = match tag % 18 {
            0..=3 => {
                let (p, d, k) = (arg(), arg(), arg());
                Step::Enqueue {
                    priority: p % 3,
                    delay_ms: (d >= 128).then(|| u64::from(d - 128) * 23),
                    key: (k >= 128).then_some(k % 4),
                }
            }
            4..=6 => Step::Claim {
                max: 1 + usize::from(arg() % 3),
                lease_ms: 100 + u64::from(arg()) * 7,
            },
            7 => Step::Heartbeat {
                pick: usize::from(arg()),
                extend_ms: 100 + u64::from(arg()) * 7,
            },
            8 | 9 => Step::Complete {
                pick: usize::from(arg()),
            },
            10 | 11 => Step::Fail {
                pick: usize::from(arg()),
            },
            12 => Step::Cancel {
                id: 1 + u64::from(arg() % 11),
            },
            13 => {
                let (p, on) = (arg(), arg());
                Step::Pause {
                    priority: p % 3,
                    paused: on % 2 == 1,
                }
            }
            14 | 15 => Step::Advance {
                ms: u64::from(arg()) * 12,
            },
            16 => Step::Reopen,
            // A failed write, not a failed fsync: after that, a process
            // leaves the store as it is (it leaks sled's handle) and must
            // not reopen it, so one fuzz process could not go on.
            _ if tag / 18 % 2 == 0 => Step::BreakCommit { fsync: false },
            _ => Step::FailIo {
                fault: arg(),
                nth: arg(),
            },
        };
        steps.push(step);
    }
    steps
}

/// Runs the sequence `data` reads as (see `steps_from`) against a backend
/// from `harness` and the model; panics where they disagree. For `fuzz/`'s
/// queue_model target.
pub fn run_bytes<H: Harness>(harness: &mut H, data: &[u8]) {
    let steps = steps_from(data);
    if let Err(e) = run_steps(harness, steps.clone()) {
        panic!("the backend disagrees with the model: {e}\nsteps: {steps:?}");
    }
}

/// Runs `cases` random sequences of up to 60 operations, each against a
/// backend from a new harness, and fails with the smallest sequence that
/// breaks agreement with the model.
pub fn run<H: Harness>(harness: impl Fn() -> H, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(step(), 1..60), |steps| {
        run_steps(&mut harness(), steps)
    });
    if let Err(e) = result {
        panic!("the backend disagrees with the model: {e}");
    }
}
