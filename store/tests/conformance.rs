//! The behaviour suite of `kiln-core` (every backend runs it against the
//! storage traits) and its model test, against the embedded store.

use kiln_core::conformance::{self, Harness};
use kiln_store::{Durability, QueueConfig, Store, StoreConfig};

/// Stores in a scratch directory of their own.
struct Sled {
    durability: Durability,
    dir: tempfile::TempDir,
}

impl Sled {
    fn new(durability: Durability) -> Self {
        Sled {
            durability,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config(&self, queue: QueueConfig) -> StoreConfig {
        StoreConfig {
            queue,
            durability: self.durability,
            ..StoreConfig::default()
        }
    }
}

impl Harness for Sled {
    type Backend = Store;
    // Open finds the jobs a dead process left running and queues them again.
    const REOPEN_REQUEUES_RUNNING: bool = true;

    fn open(&mut self, config: QueueConfig) -> Store {
        Store::open(self.dir.path(), self.config(config)).expect("open")
    }

    fn reopen(&mut self, store: Store, config: QueueConfig) -> Store {
        drop(store);
        Store::open(self.dir.path(), self.config(config)).expect("reopen")
    }

    fn break_next_commit(&mut self, store: &Store, fsync: bool) -> bool {
        store.inject_commit_failure(fsync).is_ok()
    }
}

kiln_core::conformance_tests!(Sled::new(Durability::Sync));

#[test]
fn store_agrees_with_the_model() {
    // Relaxed: the model test is about the job model, not fsyncs.
    conformance::model::run(|| Sled::new(Durability::Relaxed), 48);
}

/// The inputs of `fuzz/`'s queue_model target kept as seeds (a sequence
/// the fuzzer finds to break agreement joins them): each agrees with the
/// model here too.
#[test]
fn store_agrees_with_the_model_on_the_fuzz_seeds() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/queue_model");
    let mut ran = 0;
    for entry in std::fs::read_dir(&seeds).expect("the seeds") {
        let bytes = std::fs::read(entry.expect("a seed").path()).expect("read a seed");
        // Sync: a failed commit (some seeds make one) loses nothing
        // acknowledged only when acknowledged means on disk.
        conformance::model::run_bytes(&mut Sled::new(Durability::Sync), &bytes);
        ran += 1;
    }
    assert!(ran >= 3, "{ran} seeds in {}", seeds.display());
}
