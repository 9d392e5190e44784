//! The job queue against a plain model (`kiln_core::conformance::model`):
//! the bytes are a sequence of enqueue / claim / heartbeat / complete /
//! fail / cancel / pause / time passing / close-and-reopen on a store in a
//! scratch directory; every answer, and every job's state, attempts and
//! the counters after every step, must agree with the model, and `check`
//! finds nothing at the end. A step can make the store's next commit fail
//! (kiln-store's test hook): the step it strikes changes nothing, the
//! store is reopened, and everything acknowledged before is there.
#![no_main]

use std::path::PathBuf;

use kiln_core::conformance::{Harness, model};
use kiln_store::{Durability, QueueConfig, Store, StoreConfig};
use libfuzzer_sys::fuzz_target;

/// A store in this process's scratch directory, emptied when opened anew.
struct Scratch(PathBuf);

impl Scratch {
    fn config(queue: QueueConfig) -> StoreConfig {
        StoreConfig {
            queue,
            // Acknowledged means on disk, so a failed commit loses nothing
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
        let _ = std::fs::remove_dir_all(&self.0);
        Store::open(&self.0, Scratch::config(config)).expect("open")
    }

    fn reopen(&mut self, store: Store, config: QueueConfig) -> Store {
        drop(store);
        Store::open(&self.0, Scratch::config(config)).expect("reopen")
    }

    fn break_next_commit(&mut self, store: &Store, fsync: bool) -> bool {
        store.inject_commit_failure(fsync).is_ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = kiln_fuzz::scratch("queue_model");
    model::run_bytes(&mut Scratch(dir.clone()), data);
    let _ = std::fs::remove_dir_all(&dir);
});
