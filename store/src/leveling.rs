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
