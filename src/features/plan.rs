//! The plan: a dependency DAG built from a set of specs, so that every intermediate is
//! computed once per symbol, and the per-symbol execution of that DAG.
//!
//! Each node is one column-producing operation (`Op`): a kernel over raw columns or over
//! earlier nodes, or an element-wise combination. Building the plan interns nodes by value,
//! so `sma(20)` and the middle band of `bbands(20,2)` are one node; `bbands(20,2)` and
//! `stddev(20)` share one variance node; `ema(26)` is also the slow EMA of
//! `macd(12,26,9)`; all `macd(12,26,*)` share their EMAs and MACD line; every
//! `volatility(n)` shares the log-return node with `logret`. Nodes are stored in dependency
//! order, so executing them front to back is a topological walk.
//!
//! Walking the columns as few times as possible: all SMAs of the close run in one fused
//! pass, and so do all EMAs of the close (including MACD's), so their latency-bound
//! recurrences overlap instead of waiting on each other; every other kernel computes its
//! whole node (including multi-input ones like ATR, which compute the true range inline)
//! in one pass over contiguous columns, allocation-free in the loop.
//!
//! Incremental continuation: a [`SymbolState`] holds every kernel's scalars plus the last
//! `history` bars of each column that a kernel reads with a lag. [`Plan::advance`] rebuilds
//! `tail ++ new bars`, runs the very same kernel code from the tail's end and returns only
//! the new bars' outputs — bit for bit what a full recompute gives, by construction.

use super::average::{Ema, Sma, Wma, run_ema_group, run_sma_group};
use super::momentum::{LagKind, Lagged, Rsi};
use super::range::{Atr, Natr, Trange};
use super::spec::FeatureSpec;
use super::state::{Decoder, Encoder, MAGIC, STATE_VERSION, StateError, fnv1a};
use super::variance::{Var, band, sample_scale, scaled_std, std_from_var};
use super::volume::{Obv, Vwap};
use super::{Bars, FeatureError, NAN};

/// Where a single-input kernel reads its column from. (Multi-input kernels such as ATR
/// read the raw high/low/close/volume columns directly.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Close,
    Node(usize),
}

/// One node of the DAG. Node indices always point at earlier nodes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Sma {
        n: usize,
        src: Src,
    },
    Ema {
        n: usize,
        skip: usize,
        src: Src,
    },
    Wma {
        n: usize,
        src: Src,
    },
    /// Population standard deviation over n bars: TA-Lib's VAR kernel, then `√` once, so
    /// both Bollinger bands and `stddev` read σ without taking the root again.
    Sd {
        n: usize,
        src: Src,
    },
    Rsi {
        n: usize,
        src: Src,
    },
    Lagged {
        kind: LagKind,
        n: usize,
        src: Src,
    },
    Trange,
    Atr {
        n: usize,
    },
    Natr {
        n: usize,
        atr: usize,
    },
    Obv,
    Vwap {
        n: usize,
    },
    /// `a − b` (MACD line = fast − slow; histogram = line − signal).
    Sub {
        a: usize,
        b: usize,
    },
    /// `x` where `mask` is not NaN, else NaN (the MACD line is output from the signal's start).
    MaskBy {
        x: usize,
        mask: usize,
    },
    /// `mid ± k·σ`.
    Band {
        mid: usize,
        sd: usize,
        k: f64,
        upper: bool,
    },
    /// `σ · scale`.
    Std {
        sd: usize,
        scale: f64,
    },
}

impl Op {
    /// Bars of lag with which this op reads its column inputs.
    fn history(&self) -> usize {
        match self {
            Op::Sma { n, .. } | Op::Wma { n, .. } | Op::Sd { n, .. } | Op::Vwap { n } => n - 1,
            Op::Lagged { n, .. } => *n,
            Op::Rsi { .. } | Op::Trange | Op::Atr { .. } | Op::Obv => 1,
            Op::Ema { .. }
            | Op::Natr { .. }
            | Op::Sub { .. }
            | Op::MaskBy { .. }
            | Op::Band { .. }
            | Op::Std { .. } => 0,
        }
    }

    /// Node columns this op reads.
    fn node_inputs(&self) -> Vec<usize> {
        let src = |s: &Src| match s {
            Src::Node(j) => vec![*j],
            _ => vec![],
        };
        match self {
            Op::Sma { src: s, .. }
            | Op::Ema { src: s, .. }
            | Op::Wma { src: s, .. }
            | Op::Sd { src: s, .. }
            | Op::Rsi { src: s, .. }
            | Op::Lagged { src: s, .. } => src(s),
            Op::Trange | Op::Atr { .. } | Op::Obv | Op::Vwap { .. } => vec![],
            Op::Natr { atr, .. } => vec![*atr],
            Op::Sub { a, b } => vec![*a, *b],
            Op::MaskBy { x, mask } => vec![*x, *mask],
            Op::Band { mid, sd, .. } => vec![*mid, *sd],
            Op::Std { sd, .. } => vec![*sd],
        }
    }

    fn kernel(&self) -> Kernel {
        match *self {
            Op::Sma { n, .. } => Kernel::Sma(Sma::new(n)),
            Op::Ema { n, skip, .. } => Kernel::Ema(Ema::new(n, skip)),
            Op::Wma { n, .. } => Kernel::Wma(Wma::new(n)),
            Op::Sd { n, .. } => Kernel::Var(Var::new(n)),
            Op::Rsi { n, .. } => Kernel::Rsi(Rsi::new(n)),
            Op::Lagged { kind, n, .. } => Kernel::Lagged(Lagged::new(kind, n)),
            Op::Trange => Kernel::Trange(Trange::new()),
            Op::Atr { n } => Kernel::Atr(Atr::new(n)),
            Op::Natr { n, .. } => Kernel::Natr(Natr::new(n)),
            Op::Obv => Kernel::Obv(Obv::new()),
            Op::Vwap { n } => Kernel::Vwap(Vwap::new(n)),
            Op::Sub { .. } | Op::MaskBy { .. } | Op::Band { .. } | Op::Std { .. } => Kernel::Pure,
        }
    }
}

/// The resumable state of one node's kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kernel {
    Sma(Sma),
    Ema(Ema),
    Wma(Wma),
    Var(Var),
    Rsi(Rsi),
    Lagged(Lagged),
    Trange(Trange),
    Atr(Atr),
    Natr(Natr),
    Obv(Obv),
    Vwap(Vwap),
    /// Element-wise ops keep no state.
    Pure,
}

impl Kernel {
    fn tag(&self) -> u8 {
        match self {
            Kernel::Pure => 0,
            Kernel::Sma(_) => 1,
            Kernel::Ema(_) => 2,
            Kernel::Wma(_) => 3,
            Kernel::Var(_) => 4,
            Kernel::Rsi(_) => 5,
            Kernel::Lagged(_) => 6,
            Kernel::Trange(_) => 7,
            Kernel::Atr(_) => 8,
            Kernel::Natr(_) => 9,
            Kernel::Obv(_) => 10,
            Kernel::Vwap(_) => 11,
        }
    }

    fn seen(&self) -> u64 {
        match self {
            Kernel::Pure => 0,
            Kernel::Sma(k) => k.seen,
            Kernel::Ema(k) => k.seen,
            Kernel::Wma(k) => k.seen,
            Kernel::Var(k) => k.seen,
            Kernel::Rsi(k) => k.seen,
            Kernel::Lagged(k) => k.seen,
            Kernel::Trange(k) => k.seen,
            Kernel::Atr(k) => k.seen,
            Kernel::Natr(k) => k.seen,
            Kernel::Obv(k) => k.seen,
            Kernel::Vwap(k) => k.seen,
        }
    }

    fn encode(&self, e: &mut Encoder) {
        e.u8(self.tag());
        e.u64(self.seen());
        match self {
            Kernel::Pure | Kernel::Lagged(_) | Kernel::Trange(_) | Kernel::Natr(_) => {}
            Kernel::Sma(k) => e.f64(k.sum),
            Kernel::Ema(k) => e.f64(k.acc),
            Kernel::Wma(k) => {
                e.f64s(&[k.sum, k.sub, k.trailing]);
                e.i64(k.since);
            }
            Kernel::Var(k) => {
                e.f64s(&[k.shift, k.p1, k.p2]);
                e.i64(k.since);
            }
            Kernel::Rsi(k) => e.f64s(&[k.gain, k.loss]),
            Kernel::Atr(k) => e.f64(k.acc),
            Kernel::Obv(k) => e.f64(k.obv),
            Kernel::Vwap(k) => e.f64s(&[k.pv, k.vol]),
        }
    }

    /// Decode the state of `op`'s kernel; the tag must match the op.
    fn decode(op: &Op, d: &mut Decoder<'_>, bars: u64) -> Result<Kernel, StateError> {
        let mut k = op.kernel();
        if d.u8()? != k.tag() {
            return Err(StateError::Invalid(
                "kernel kind differs from the plan's node",
            ));
        }
        let seen = d.u64()?;
        if seen > bars || (matches!(k, Kernel::Pure) && seen != 0) {
            return Err(StateError::Invalid(
                "kernel has seen more bars than the state",
            ));
        }
        match &mut k {
            Kernel::Pure => {}
            Kernel::Sma(k) => (k.seen, k.sum) = (seen, d.f64()?),
            Kernel::Ema(k) => (k.seen, k.acc) = (seen, d.f64()?),
            Kernel::Wma(k) => {
                let max = k.since;
                (k.seen, k.sum, k.sub, k.trailing, k.since) =
                    (seen, d.f64()?, d.f64()?, d.f64()?, d.i64()?);
                if k.since < 1 || k.since > max {
                    return Err(StateError::Invalid("WMA rebuild counter out of range"));
                }
            }
            Kernel::Var(k) => {
                let max = k.since;
                (k.seen, k.shift, k.p1, k.p2, k.since) =
                    (seen, d.f64()?, d.f64()?, d.f64()?, d.i64()?);
                if k.since < 1 || k.since > max {
                    return Err(StateError::Invalid("variance rebuild counter out of range"));
                }
            }
            Kernel::Rsi(k) => (k.seen, k.gain, k.loss) = (seen, d.f64()?, d.f64()?),
            Kernel::Lagged(k) => k.seen = seen,
            Kernel::Trange(k) => k.seen = seen,
            Kernel::Atr(k) => (k.seen, k.acc) = (seen, d.f64()?),
            Kernel::Natr(k) => k.seen = seen,
            Kernel::Obv(k) => (k.seen, k.obv) = (seen, d.f64()?),
            Kernel::Vwap(k) => (k.seen, k.pv, k.vol) = (seen, d.f64()?, d.f64()?),
        }
        Ok(k)
    }
}

/// Raw input columns in `Src` order: high, low, close, volume.
type Raw<'a> = [&'a [f64]; 4];

fn column<'a>(src: Src, raw: &Raw<'a>, done: &'a [Vec<f64>]) -> &'a [f64] {
    match src {
        Src::Close => raw[2],
        Src::Node(j) => &done[j],
    }
}

/// Run one node over bars `start..`, reading `done` (earlier nodes) and writing `out`.
fn run_node(
    op: &Op,
    k: &mut Kernel,
    raw: &Raw<'_>,
    done: &[Vec<f64>],
    start: usize,
    out: &mut [f64],
) {
    let [h, l, c, v] = *raw;
    match (op, k) {
        (Op::Sma { src, .. }, Kernel::Sma(k)) => k.run(column(*src, raw, done), start, out),
        (Op::Ema { src, .. }, Kernel::Ema(k)) => k.run(column(*src, raw, done), start, out),
        (Op::Wma { src, .. }, Kernel::Wma(k)) => k.run(column(*src, raw, done), start, out),
        (Op::Sd { src, .. }, Kernel::Var(k)) => {
            k.run(column(*src, raw, done), start, out);
            for o in &mut out[start..] {
                *o = std_from_var(*o);
            }
        }
        (Op::Rsi { src, .. }, Kernel::Rsi(k)) => k.run(column(*src, raw, done), start, out),
        (Op::Lagged { src, .. }, Kernel::Lagged(k)) => k.run(column(*src, raw, done), start, out),
        (Op::Trange, Kernel::Trange(k)) => k.run(h, l, c, start, out),
        (Op::Atr { .. }, Kernel::Atr(k)) => k.run(h, l, c, start, out),
        (Op::Natr { atr, .. }, Kernel::Natr(k)) => k.run(h, l, c, &done[*atr], start, out),
        (Op::Obv, Kernel::Obv(k)) => k.run(c, v, start, out),
        (Op::Vwap { .. }, Kernel::Vwap(k)) => k.run(h, l, c, v, start, out),
        (Op::Sub { a, b }, _) => {
            let it = out[start..]
                .iter_mut()
                .zip(&done[*a][start..])
                .zip(&done[*b][start..]);
            for ((o, &x), &y) in it {
                *o = x - y;
            }
        }
        (Op::MaskBy { x, mask }, _) => {
            let it = out[start..]
                .iter_mut()
                .zip(&done[*x][start..])
                .zip(&done[*mask][start..]);
            for ((o, &x), &m) in it {
                *o = if m.is_nan() { NAN } else { x };
            }
        }
        (Op::Band { mid, sd, k, upper }, _) => {
            band(&done[*mid], &done[*sd], *k, *upper, start, out)
        }
        (Op::Std { sd, scale }, _) => scaled_std(&done[*sd], *scale, start, out),
        // Kernels are made from their ops (and decoding checks the tags), so a mismatch is a
        // bug; NaN makes it visible without panicking in a worker.
        _ => {
            debug_assert!(false, "kernel does not match its op");
            out[start..].fill(NAN);
        }
    }
}

/// Which kernels a fused group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Sma,
    Ema,
}

/// Run a fused group of close-price SMAs or EMAs (`members` ascending) over bars `start..`.
fn run_group(
    kind: GroupKind,
    members: &[usize],
    kernels: &mut [Kernel],
    close: &[f64],
    start: usize,
    cols: &mut [Vec<f64>],
) {
    let mut outs: Vec<&mut [f64]> = cols
        .iter_mut()
        .enumerate()
        .filter(|(j, _)| members.contains(j))
        .map(|(_, c)| c.as_mut_slice())
        .collect();
    let picked = kernels
        .iter_mut()
        .enumerate()
        .filter(|(j, _)| members.contains(j));
    match kind {
        GroupKind::Sma => {
            let mut ks: Vec<&mut Sma> = picked
                .filter_map(|(_, k)| match k {
                    Kernel::Sma(k) => Some(k),
                    _ => None,
                })
                .collect();
            debug_assert_eq!(ks.len(), outs.len());
            run_sma_group(&mut ks, close, start, &mut outs);
        }
        GroupKind::Ema => {
            let mut ks: Vec<&mut Ema> = picked
                .filter_map(|(_, k)| match k {
                    Kernel::Ema(k) => Some(k),
                    _ => None,
                })
                .collect();
            debug_assert_eq!(ks.len(), outs.len());
            run_ema_group(&mut ks, close, start, &mut outs);
        }
    }
}

/// One symbol's computed columns, addressed by output index. It has a slot per plan node;
/// intermediate nodes' slots stay empty when computed with a [`Scratch`].
///
/// Reuse a frame across symbols and calls: buffers keep their capacity, so a warm frame
/// computes without allocating.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    cols: Vec<Vec<f64>>,
    outputs: Vec<usize>,
    len: usize,
}

impl Frame {
    /// Bars in the frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the frame holds no bars.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Output `i` (in [`Plan::output_labels`] order), or `None` if out of range.
    pub fn output(&self, i: usize) -> Option<&[f64]> {
        let node = *self.outputs.get(i)?;
        self.cols.get(node).and_then(|c| c.get(..self.len))
    }

    /// Number of outputs.
    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    fn reset(&mut self, nodes: usize, len: usize) {
        self.cols.resize_with(nodes, Vec::new);
        for c in &mut self.cols {
            // Every kernel writes every bar from `start`, so stale contents never leak.
            c.resize(len, 0.0);
        }
        self.len = len;
    }
}

/// Per-symbol saved state: enough to continue a plan's computation when bars are appended.
/// Encode it with [`Plan::encode_state`] to store it next to the series.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolState {
    bars: u64,
    raw_tails: [Vec<f64>; 4],
    node_tails: Vec<Vec<f64>>,
    kernels: Vec<Kernel>,
}

impl SymbolState {
    /// Bars processed so far.
    pub fn bars(&self) -> u64 {
        self.bars
    }
}

/// A compiled set of features: the DAG, the outputs and the history each symbol keeps.
#[derive(Debug, Clone)]
pub struct Plan {
    specs: Vec<FeatureSpec>,
    ops: Vec<Op>,
    outputs: Vec<usize>,
    labels: Vec<String>,
    /// Longest lag any node reads: the tail length kept in a `SymbolState`.
    history: usize,
    /// Per node: is its column read with a lag by another node (so its tail is kept)?
    keep_tail: Vec<bool>,
    fingerprint: u64,
    /// SMAs (and EMAs) of the close, run together in one fused pass when there are two or
    /// more: they depend only on the raw close, so they run before the other nodes.
    groups: Vec<(GroupKind, Vec<usize>)>,
    /// Per node: computed by a group rather than on its own.
    grouped: Vec<bool>,
    /// Nodes that are not outputs (their columns can live in a [`Scratch`]).
    intermediates: Vec<usize>,
}

/// Reusable buffers for a plan's intermediate columns; see
/// [`Plan::compute_with_scratch`]. One per worker thread.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    cols: Vec<Vec<f64>>,
}

impl Plan {
    /// Build a plan; duplicate specs are computed (and output) once.
    pub fn new(specs: &[FeatureSpec]) -> Self {
        let mut b = Builder { ops: Vec::new() };
        let mut uniq: Vec<FeatureSpec> = Vec::new();
        let mut outputs = Vec::new();
        for s in specs {
            if uniq.contains(s) {
                continue;
            }
            uniq.push(*s);
            outputs.extend(b.spec(s));
        }
        let ops = b.ops;
        let history = ops.iter().map(Op::history).max().unwrap_or(0);
        let mut keep_tail = vec![false; ops.len()];
        for op in ops.iter().filter(|o| o.history() > 0) {
            for j in op.node_inputs() {
                keep_tail[j] = true;
            }
        }
        let labels: Vec<String> = uniq.iter().flat_map(FeatureSpec::output_labels).collect();
        let fingerprint = fnv1a(labels.join("\n").as_bytes());
        let mut groups = Vec::new();
        let mut grouped = vec![false; ops.len()];
        for kind in [GroupKind::Sma, GroupKind::Ema] {
            let members: Vec<usize> = ops
                .iter()
                .enumerate()
                .filter(|(_, op)| {
                    matches!(
                        (kind, op),
                        (
                            GroupKind::Sma,
                            Op::Sma {
                                src: Src::Close,
                                ..
                            }
                        ) | (
                            GroupKind::Ema,
                            Op::Ema {
                                src: Src::Close,
                                ..
                            }
                        )
                    )
                })
                .map(|(j, _)| j)
                .collect();
            if members.len() >= 2 {
                for &j in &members {
                    grouped[j] = true;
                }
                groups.push((kind, members));
            }
        }
        let intermediates = (0..ops.len()).filter(|j| !outputs.contains(j)).collect();
        Self {
            specs: uniq,
            ops,
            outputs,
            labels,
            history,
            keep_tail,
            fingerprint,
            intermediates,
            groups,
            grouped,
        }
    }

    /// Parse specs and build a plan.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, FeatureError> {
        let specs = specs
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<FeatureSpec>, _>>()?;
        Ok(Self::new(&specs))
    }

    /// The (deduplicated) specs, in request order.
    pub fn specs(&self) -> &[FeatureSpec] {
        &self.specs
    }

    /// Output labels (`sma(20)`, `macd(12,26,9).signal`, ...) in output order.
    pub fn output_labels(&self) -> &[String] {
        &self.labels
    }

    /// Number of distinct nodes (intermediates and outputs) computed per symbol.
    pub fn node_count(&self) -> usize {
        self.ops.len()
    }

    /// Bars of history a [`SymbolState`] keeps.
    pub fn history(&self) -> usize {
        self.history
    }

    /// The canonical spec list (`sma(20),macd(12,26,9)`): parsed back, it
    /// gives this plan.
    pub fn text(&self) -> String {
        self.specs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A stable fingerprint of the output labels; saved state records it.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// An empty frame for this plan.
    pub fn new_frame(&self) -> Frame {
        Frame {
            cols: Vec::new(),
            outputs: self.outputs.clone(),
            len: 0,
        }
    }

    /// Like [`compute`](Self::compute), but intermediate columns (nodes that are not
    /// outputs, such as MACD's fast EMA or the variance under `bbands`) live in `scratch`
    /// instead of `frame`. A batch reuses one scratch per worker, so per-symbol memory holds
    /// only outputs: less memory written per symbol, and smaller frames kept.
    pub fn compute_with_scratch(
        &self,
        bars: Bars<'_>,
        frame: &mut Frame,
        scratch: &mut Scratch,
    ) -> Result<(), FeatureError> {
        let nodes = self.ops.len();
        frame.cols.resize_with(nodes, Vec::new);
        scratch.cols.resize_with(nodes, Vec::new);
        // Lend the scratch buffers to the frame's intermediate slots (moves, not copies)...
        for &j in &self.intermediates {
            std::mem::swap(&mut frame.cols[j], &mut scratch.cols[j]);
        }
        let result = self.compute(bars, frame);
        // ...and take them back, whatever happened.
        for &j in &self.intermediates {
            std::mem::swap(&mut frame.cols[j], &mut scratch.cols[j]);
        }
        result
    }

    /// Compute every output for one symbol's full history into `frame`.
    pub fn compute(&self, bars: Bars<'_>, frame: &mut Frame) -> Result<(), FeatureError> {
        let len = bars.checked_len()?;
        let raw: Raw<'_> = [bars.high, bars.low, bars.close, bars.volume];
        frame.outputs.clone_from(&self.outputs);
        frame.reset(self.ops.len(), len);
        // Fresh kernels: one small allocation per symbol, none per bar.
        let mut kernels: Vec<Kernel> = self.ops.iter().map(Op::kernel).collect();
        for (kind, members) in &self.groups {
            run_group(*kind, members, &mut kernels, bars.close, 0, &mut frame.cols);
        }
        for (j, (op, k)) in self.ops.iter().zip(&mut kernels).enumerate() {
            if self.grouped[j] {
                continue;
            }
            let (done, rest) = frame.cols.split_at_mut(j);
            if let Some(out) = rest.first_mut() {
                run_node(op, k, &raw, done, 0, out);
            }
        }
        Ok(())
    }

    /// State before any bar: continuing from it with [`advance`](Self::advance) equals
    /// [`compute`](Self::compute) and leaves the state ready for the next bars.
    pub fn new_state(&self) -> SymbolState {
        SymbolState {
            bars: 0,
            raw_tails: Default::default(),
            node_tails: vec![Vec::new(); self.ops.len()],
            kernels: self.ops.iter().map(Op::kernel).collect(),
        }
    }

    /// Compute the outputs for `bars` appended after those `state` has seen, into `frame`
    /// (which then holds only the new bars), and update `state`.
    pub fn advance(
        &self,
        state: &mut SymbolState,
        bars: Bars<'_>,
        frame: &mut Frame,
    ) -> Result<(), FeatureError> {
        let new = bars.checked_len()?;
        if state.kernels.len() != self.ops.len() || state.node_tails.len() != self.ops.len() {
            return Err(StateError::Invalid("state has another node count than the plan").into());
        }
        let t = state.raw_tails[2].len();
        let total = t + new;
        let cols_new = [bars.high, bars.low, bars.close, bars.volume];
        let raw_bufs: Vec<Vec<f64>> = state
            .raw_tails
            .iter()
            .zip(cols_new)
            .map(|(tail, now)| {
                let mut b = Vec::with_capacity(total);
                b.extend_from_slice(tail);
                b.extend_from_slice(now);
                b
            })
            .collect();
        let raw: Raw<'_> = [&raw_bufs[0], &raw_bufs[1], &raw_bufs[2], &raw_bufs[3]];
        let mut cols: Vec<Vec<f64>> = state
            .node_tails
            .iter()
            .zip(&self.keep_tail)
            .map(|(tail, &keep)| {
                let mut b = Vec::with_capacity(total);
                if keep {
                    b.extend_from_slice(tail);
                } else {
                    b.resize(t, NAN);
                }
                b.resize(total, 0.0);
                b
            })
            .collect();
        for (kind, members) in &self.groups {
            run_group(*kind, members, &mut state.kernels, raw[2], t, &mut cols);
        }
        for (j, (op, k)) in self.ops.iter().zip(&mut state.kernels).enumerate() {
            if self.grouped[j] {
                continue;
            }
            let (done, rest) = cols.split_at_mut(j);
            if let Some(out) = rest.first_mut() {
                run_node(op, k, &raw, done, t, out);
            }
        }
        state.bars += new as u64;
        let keep = self
            .history
            .min(usize::try_from(state.bars).unwrap_or(usize::MAX));
        for (tail, buf) in state.raw_tails.iter_mut().zip(&raw_bufs) {
            tail.clear();
            tail.extend_from_slice(&buf[total - keep..]);
        }
        for ((tail, buf), &k) in state.node_tails.iter_mut().zip(&cols).zip(&self.keep_tail) {
            tail.clear();
            if k {
                tail.extend_from_slice(&buf[total - keep..]);
            }
        }
        frame.outputs.clone_from(&self.outputs);
        frame.reset(self.ops.len(), new);
        for (dst, src) in frame.cols.iter_mut().zip(&cols) {
            dst.copy_from_slice(&src[t..]);
        }
        Ok(())
    }

    /// Encode `state` in the versioned format described in [`super::state`].
    pub fn encode_state(&self, state: &SymbolState) -> Vec<u8> {
        let mut e = Encoder::default();
        e.bytes(MAGIC);
        e.u16(STATE_VERSION);
        e.u64(self.fingerprint);
        e.u64(state.bars);
        let t = state.raw_tails[2].len();
        e.u32(t as u32);
        for tail in &state.raw_tails {
            e.f64s(tail);
        }
        e.u32(state.kernels.len() as u32);
        for ((tail, k), &keep) in state
            .node_tails
            .iter()
            .zip(&state.kernels)
            .zip(&self.keep_tail)
        {
            let has = keep && t > 0;
            e.u8(u8::from(has));
            if has {
                e.f64s(tail);
            }
            k.encode(&mut e);
        }
        e.buf
    }

    /// Decode state written by [`encode_state`](Self::encode_state) of this same plan.
    pub fn decode_state(&self, bytes: &[u8]) -> Result<SymbolState, StateError> {
        let mut d = Decoder::new(bytes);
        d.magic()?;
        let version = d.u16()?;
        if version != STATE_VERSION {
            return Err(StateError::UnsupportedVersion { found: version });
        }
        let found = d.u64()?;
        if found != self.fingerprint {
            return Err(StateError::PlanMismatch {
                found,
                expected: self.fingerprint,
            });
        }
        let bars = d.u64()?;
        let t = d.u32()? as usize;
        let expected_t = self
            .history
            .min(usize::try_from(bars).unwrap_or(usize::MAX));
        if t != expected_t {
            return Err(StateError::Invalid("tail length is not min(history, bars)"));
        }
        let raw_tails = [d.f64s(t)?, d.f64s(t)?, d.f64s(t)?, d.f64s(t)?];
        if d.u32()? as usize != self.ops.len() {
            return Err(StateError::Invalid("node count differs from the plan"));
        }
        let mut node_tails = Vec::with_capacity(self.ops.len());
        let mut kernels = Vec::with_capacity(self.ops.len());
        for (op, &keep) in self.ops.iter().zip(&self.keep_tail) {
            let has = match d.u8()? {
                0 => false,
                1 => true,
                _ => return Err(StateError::Invalid("tail flag is neither 0 nor 1")),
            };
            if has != (keep && t > 0) {
                return Err(StateError::Invalid(
                    "node tail presence differs from the plan",
                ));
            }
            node_tails.push(if has { d.f64s(t)? } else { Vec::new() });
            kernels.push(Kernel::decode(op, &mut d, bars)?);
        }
        d.finish()?;
        Ok(SymbolState {
            bars,
            raw_tails,
            node_tails,
            kernels,
        })
    }
}

/// Interns ops while a plan is built.
struct Builder {
    ops: Vec<Op>,
}

impl Builder {
    fn node(&mut self, op: Op) -> usize {
        if let Some(i) = self.ops.iter().position(|o| *o == op) {
            return i;
        }
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Add the nodes of one spec; returns its output nodes in output order.
    fn spec(&mut self, s: &FeatureSpec) -> Vec<usize> {
        let c = Src::Close;
        let p = |n: u32| n as usize;
        match *s {
            FeatureSpec::Sma(n) => vec![self.node(Op::Sma { n: p(n), src: c })],
            FeatureSpec::Ema(n) => vec![self.node(Op::Ema {
                n: p(n),
                skip: 0,
                src: c,
            })],
            FeatureSpec::Wma(n) => vec![self.node(Op::Wma { n: p(n), src: c })],
            FeatureSpec::Macd { fast, slow, signal } => {
                let slow_ema = self.node(Op::Ema {
                    n: p(slow),
                    skip: 0,
                    src: c,
                });
                // TA-Lib seeds the fast EMA at the slow EMA's first bar.
                let fast_ema = self.node(Op::Ema {
                    n: p(fast),
                    skip: p(slow - fast),
                    src: c,
                });
                let line = self.node(Op::Sub {
                    a: fast_ema,
                    b: slow_ema,
                });
                let sig = self.node(Op::Ema {
                    n: p(signal),
                    skip: 0,
                    src: Src::Node(line),
                });
                let shown = self.node(Op::MaskBy { x: line, mask: sig });
                let hist = self.node(Op::Sub { a: line, b: sig });
                vec![shown, sig, hist]
            }
            FeatureSpec::Bbands { n, k } => {
                let mid = self.node(Op::Sma { n: p(n), src: c });
                let sd = self.node(Op::Sd { n: p(n), src: c });
                let upper = self.node(Op::Band {
                    mid,
                    sd,
                    k,
                    upper: true,
                });
                let lower = self.node(Op::Band {
                    mid,
                    sd,
                    k,
                    upper: false,
                });
                vec![upper, mid, lower]
            }
            FeatureSpec::Rsi(n) => vec![self.node(Op::Rsi { n: p(n), src: c })],
            FeatureSpec::Atr(n) => vec![self.node(Op::Atr { n: p(n) })],
            FeatureSpec::Natr(n) => {
                let atr = self.node(Op::Atr { n: p(n) });
                vec![self.node(Op::Natr { n: p(n), atr })]
            }
            FeatureSpec::Trange => vec![self.node(Op::Trange)],
            FeatureSpec::Roc(n) => vec![self.node(Op::Lagged {
                kind: LagKind::Roc,
                n: p(n),
                src: c,
            })],
            FeatureSpec::Mom(n) => vec![self.node(Op::Lagged {
                kind: LagKind::Mom,
                n: p(n),
                src: c,
            })],
            FeatureSpec::Stddev(n) => {
                // TA-Lib's STDDEV(n, 1) is σ·1.0, i.e. σ itself: the bands' σ column.
                vec![self.node(Op::Sd { n: p(n), src: c })]
            }
            FeatureSpec::Logret => vec![self.logret()],
            FeatureSpec::Volatility(n) => {
                let lr = self.logret();
                let sd = self.node(Op::Sd {
                    n: p(n),
                    src: Src::Node(lr),
                });
                vec![self.node(Op::Std {
                    sd,
                    scale: sample_scale(p(n)),
                })]
            }
            FeatureSpec::Vwap(n) => vec![self.node(Op::Vwap { n: p(n) })],
            FeatureSpec::Obv => vec![self.node(Op::Obv)],
        }
    }

    fn logret(&mut self) -> usize {
        self.node(Op::Lagged {
            kind: LagKind::LogRet,
            n: 1,
            src: Src::Close,
        })
    }
}
