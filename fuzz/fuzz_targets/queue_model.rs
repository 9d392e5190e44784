//! The job queue against a plain model (`kiln_core::conformance::model`):
//! the bytes are a sequence of enqueue / claim / heartbeat / complete /
//! fail / cancel / pause / time passing / close-and-reopen on a store in a
//! scratch directory; every answer, and every job's state, attempts and
//! the counters after every step, must agree with the model, and `check`
//! finds nothing at the end.
//!
//! Steps also make things fail: the store's next commit (kiln-store's test
//! hook), or the n-th next I/O call of one kind on the store's files,
//! through the fault shim `tests/faults/io_fault.c`, which must be
//! preloaded (`.ci/fuzz` builds it and sets `LD_PRELOAD`; without it the
//! target stops at once); `kiln_core::conformance::faults` says which
//! calls. A step a failure strikes is refused; the store is reopened (an
//! open the failure made fail is tried again) and holds the state before
//! the step or after it, with everything acknowledged before.
#![no_main]

use std::path::PathBuf;

use kiln_core::conformance::faults::FaultShim;
use kiln_core::conformance::{Harness, model};
use kiln_store::{Durability, QueueConfig, Store, StoreConfig};
use libfuzzer_sys::fuzz_target;

fn shim() -> &'static FaultShim {
    FaultShim::find().expect(
        "run queue_model with the fault shim preloaded \
         (LD_PRELOAD=<io_fault.so built from tests/faults/io_fault.c>; .ci/fuzz does)",
    )
}

/// A store in this process's scratch directory, emptied when opened anew.
struct Scratch(PathBuf);

impl Scratch {
    fn config(queue: QueueConfig) -> StoreConfig {
        StoreConfig {
            queue,
            // Acknowledged means on disk, so a failure loses nothing
            // acknowledged (fsyncs are cheap on tmpfs).
            durability: Durability::Sync,
            cache_bytes_max: 16 << 20,
            ..StoreConfig::default()
        }
    }
}

impl Harness for Scratch {
    type Backend = Store;
    const REOPEN_REQUEUES_RUNNING: bool = true;

    fn open(&mut self, config: QueueConfig) -> Store {
        shim().disarm();
        let _ = std::fs::remove_dir_all(&self.0);
        Store::open(&self.0, Scratch::config(config)).expect("open")
    }

    fn reopen(&mut self, store: Store, config: QueueConfig) -> Store {
        drop(store);
        // A reopen here stands for a new process.
        Store::forget_failed_fsyncs();
        shim().reopen(|| Store::open(&self.0, Scratch::config(config.clone())))
    }

    fn break_next_commit(&mut self, store: &Store, fsync: bool) -> bool {
        store.inject_commit_failure(fsync).is_ok()
    }

    fn fail_io(&mut self, fault: u8, nth: u8) -> bool {
        shim().fail(&self.0, fault, nth)
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = kiln_fuzz::scratch("queue_model");
    model::run_bytes(&mut Scratch(dir.clone()), data);
    shim().disarm();
    let _ = std::fs::remove_dir_all(&dir);
});
