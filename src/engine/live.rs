//! The live states: the plan state each refresh ended with, kept in memory
//! per plan frame, so the next tick continues from its last bar instead of
//! replaying the bars since the state saved on disk (at most
//! `STATE_SAVE_BARS` of them, which costs more than the tick itself).
//!
//! An entry is used only when the frame's stored rows cover exactly the
//! bars the entry was computed over; an append that never committed (a
//! failed write, a lost lease) therefore only costs a replay. At most
//! `live_states_max` entries are kept; when full, it starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_core::{Coverage, FrameKey};

use crate::features::SymbolState;

/// Plan states by frame, each with the bars it was computed over.
#[derive(Debug)]
pub(crate) struct LiveStates {
    entries: Mutex<HashMap<FrameKey, (Coverage, SymbolState)>>,
    max: usize,
}

impl LiveStates {
    pub(crate) fn new(max: usize) -> Self {
        LiveStates {
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The state of `frame` after exactly the bars of `covers`, if kept.
    pub(crate) fn get(&self, frame: &FrameKey, covers: Coverage) -> Option<SymbolState> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(frame)
            .filter(|(c, _)| *c == covers)
            .map(|(_, s)| s.clone())
    }

    /// Keeps `state`, computed over the bars of `covers`, for `frame`.
    pub(crate) fn put(&self, frame: &FrameKey, covers: Coverage, state: SymbolState) {
        if self.max == 0 {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.max && !entries.contains_key(frame) {
                entries.clear();
            }
            entries.insert(frame.clone(), (covers, state));
        }
    }
}
