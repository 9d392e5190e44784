//! When to merge a sequence of appended chunks (a symbol's bar chunks, a
//! frame's row chunks): like a counter carrying in base `fanout`, runs of
//! `fanout` chunks of one size class (1 to `fanout - 1` rows, then up to
//! `fanout²  - 1`, …) merge into one of the next class, until a chunk holds
//! `sealed_rows` or more and is never merged again. Each row is therefore
//! rewritten once per size class, however many one-row appends follow, and
//! a sequence ends with at most `fanout - 1` chunks per class.

/// The merge policy's two numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leveling {
    /// Chunks of one class that merge into one.
    pub fanout: usize,
    /// A chunk of at least this many rows is never merged.
    pub sealed_rows: usize,
}

/// Where the sequence of chunks of `rows` (their sizes, oldest first)
/// should be merged from to its end, or `None` when nothing merges.
pub(crate) fn merge_from(rows: &[usize], l: Leveling) -> Option<usize> {
    let class = |r: usize| (r < l.sealed_rows).then(|| r.max(1).ilog(l.fanout));
    // (rows, index of the first chunk it stands for) after each carry.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut from: Option<usize> = None;
    for (i, &r) in rows.iter().enumerate() {
        stack.push((r, i));
        while stack.len() >= l.fanout {
            let top = &stack[stack.len() - l.fanout..];
            let level = class(top[l.fanout - 1].0);
            if level.is_none() || top.iter().any(|&(r, _)| class(r) != level) {
                break;
            }
            let merged = (top.iter().map(|t| t.0).sum(), top[0].1);
            stack.truncate(stack.len() - l.fanout);
            stack.push(merged);
            from = Some(from.map_or(merged.1, |f| f.min(merged.1)));
        }
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLD: Leveling = Leveling {
        fanout: 32,
        sealed_rows: 1024,
    };

    #[test]
    fn thirty_two_chunks_of_a_class_merge_and_sealed_chunks_stay() {
        // A body, 31 chunks of 32 rows and the 32nd fold of tails: one chunk
        // of 1024 rows from the first 32-row chunk on.
        let mut rows = vec![5000];
        rows.extend([32; 31]);
        rows.push(32);
        assert_eq!(merge_from(&rows, FOLD), Some(1));
        rows.pop();
        assert_eq!(merge_from(&rows, FOLD), None, "31 are not enough");
        // Sealed chunks never merge, however many.
        assert_eq!(merge_from(&[1024; 40], FOLD), None);
        // A fold of fewer than 32 tails starts its own class.
        assert_eq!(merge_from(&[5000, 7], FOLD), None);
    }
}
