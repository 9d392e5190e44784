//! The plan frame: how the engine keeps a symbol's feature outputs. Each
//! plan (a list of specs computed together) has one frame per symbol, every
//! output a column, and beside it the state that lets a refresh continue
//! the plan over new bars instead of recomputing it. This module is its one
//! owner (the layout is described in `store/FORMAT.md`, "Plan frames"):
//!
//! - the frame: the symbol and `@plan:` + the plan's fingerprint (16 hex
//!   digits), a name no feature output can have (outputs are specs, which
//!   start with a letter); its labels are the plan's output labels;
//! - the state, saved with the frame at least every [`STATE_SAVE_BARS`]
//!   bars: a payload, version 1: `KSV1`, the plan text's length (u32 LE),
//!   the plan text (its canonical spec list), then the plan's state
//!   (`features::state`, versioned itself). Version 0, written before the
//!   payload had a version, is the same without `KSV1`; it is still read.
//!
//! A store migrated from FORMAT_VERSION 3 keeps each old saved state as a
//! frame of no columns named `@state:` + the fingerprint ([`is_legacy`]);
//! a refresh recomputes its plan into the plan frame and removes it.

use kiln_core::{FrameKey, StoreError, Symbol};

use crate::features::Plan;

/// Prefix of a plan frame's name.
const PREFIX: &str = "@plan:";
/// Prefix of the saved states a FORMAT_VERSION 3 store kept.
const LEGACY_PREFIX: &str = "@state:";
/// The payload's magic and version.
const MAGIC_V1: &[u8; 4] = b"KSV1";

/// A refresh saves the state with the rows it appends once the state saved
/// last is this many bars behind: a refresh without the live state (after
/// a restart) replays at most this many bars to continue, microseconds per
/// symbol, and a state is written once per this many bars. The standard
/// set's state is 8.6 KB against its 160 bytes of rows per bar: saved
/// every 64 bars it was a sixth of what a tick wrote (`kiln bench live`).
pub const STATE_SAVE_BARS: u64 = 256;

/// The frame of `plan`'s outputs for `symbol`.
pub fn key(symbol: &Symbol, plan: &Plan) -> Result<FrameKey, StoreError> {
    FrameKey::new(
        symbol.clone(),
        format!("{PREFIX}{:016x}", plan.fingerprint()),
    )
}

/// Whether `key` is a plan frame, or a saved state a migrated store kept.
pub fn is_plan(key: &FrameKey) -> bool {
    key.name.starts_with(PREFIX) || is_legacy(key)
}

/// Whether `key` is a saved state a FORMAT_VERSION 3 store kept.
pub fn is_legacy(key: &FrameKey) -> bool {
    key.name.starts_with(LEGACY_PREFIX)
}

/// A plan's saved state, as stored: the plan's text and its state bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedState<'a> {
    /// The plan's canonical spec list, to rebuild the plan from.
    pub plan: &'a str,
    /// `Plan::encode_state` of the state after the last bar.
    pub state: &'a [u8],
}

impl<'a> SavedState<'a> {
    /// The payload (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.plan.len() + self.state.len());
        v.extend_from_slice(MAGIC_V1);
        v.extend_from_slice(&(self.plan.len() as u32).to_le_bytes());
        v.extend_from_slice(self.plan.as_bytes());
        v.extend_from_slice(self.state);
        v
    }

    /// Reads a payload of either version; `None` when it is neither.
    pub fn decode(payload: &'a [u8]) -> Option<Self> {
        let body = payload.strip_prefix(MAGIC_V1).unwrap_or(payload);
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let plan = std::str::from_utf8(body.get(4..4 + len)?).ok()?;
        Some(SavedState {
            plan,
            state: body.get(4 + len..)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_and_the_unversioned_layout_still_reads() {
        let saved = SavedState {
            plan: "sma(5),rsi(14)",
            state: &[1, 2, 3],
        };
        let v1 = saved.encode();
        assert_eq!(&v1[..4], b"KSV1");
        assert_eq!(SavedState::decode(&v1), Some(saved));
        // Version 0, as FORMAT_VERSION 3 stores hold it: length, text, state.
        let mut v0 = (14u32).to_le_bytes().to_vec();
        v0.extend_from_slice(b"sma(5),rsi(14)");
        v0.extend_from_slice(&[1, 2, 3]);
        assert_eq!(SavedState::decode(&v0), Some(saved));
        for bad in [&[][..], &[9, 0, 0, 0, b'a'][..], &b"KSV1\x05\0\0\0ab"[..]] {
            assert_eq!(SavedState::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plan_frames_are_told_from_outputs_and_legacy_states() {
        let plan = Plan::parse(&["sma(5)"]).expect("plan");
        let s = Symbol::new("A").expect("symbol");
        let k = key(&s, &plan).expect("key");
        assert!(is_plan(&k) && !is_legacy(&k));
        assert_eq!(k.name.len(), PREFIX.len() + 16);
        let legacy = FrameKey::new(s.clone(), "@state:00000000000000aa").expect("key");
        assert!(is_plan(&legacy) && is_legacy(&legacy));
        assert!(!is_plan(&FrameKey::new(s, "sma(5)").expect("key")));
    }
}
