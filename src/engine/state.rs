//! The saved kernel state: how the engine keeps, beside a symbol's feature
//! outputs, the state that lets a refresh continue a plan over new bars
//! instead of recomputing it. This module is its one owner (the layout is
//! described in `store/FORMAT.md`, "Saved kernel state"):
//!
//! - the key: the symbol and `@state:` + the plan's fingerprint (16 hex
//!   digits), a series key no feature output can have (outputs are specs,
//!   which start with a letter);
//! - the record: a series with no values, whose data version (bars, last
//!   timestamp, content hash) is that of the bars the state was computed
//!   over, and whose state bytes are the payload below;
//! - the payload, version 1: `KSV1`, the plan text's length (u32 LE), the
//!   plan text (its canonical spec list), then the plan's state
//!   (`features::state`, versioned itself). Version 0, written before the
//!   payload had a version, is the same without `KSV1`; it is still read.

use kiln_core::{SeriesKey, StoreError, Symbol};

use crate::features::Plan;

/// Prefix of the feature name under which a plan's state is stored.
const PREFIX: &str = "@state:";
/// The payload's magic and version.
const MAGIC_V1: &[u8; 4] = b"KSV1";

/// The key of `plan`'s saved state for `symbol`.
pub fn key(symbol: &Symbol, plan: &Plan) -> Result<SeriesKey, StoreError> {
    SeriesKey::new(
        symbol.clone(),
        format!("{PREFIX}{:016x}", plan.fingerprint()),
    )
}

/// Whether `key` holds a saved state (not a feature output).
pub fn is_state(key: &SeriesKey) -> bool {
    key.feature.starts_with(PREFIX)
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
    fn state_keys_are_told_from_outputs() {
        let plan = Plan::parse(&["sma(5)"]).expect("plan");
        let s = Symbol::new("A").expect("symbol");
        let k = key(&s, &plan).expect("key");
        assert!(is_state(&k));
        assert_eq!(k.feature.len(), PREFIX.len() + 16);
        assert!(!is_state(&SeriesKey::new(s, "sma(5)").expect("key")));
    }
}
