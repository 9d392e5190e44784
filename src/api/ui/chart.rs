//! A price chart as SVG, drawn by the server: candles and volume, the
//! price-scale features over the candles, and each other feature in a pane
//! of its own (a MACD's histogram as bars). Hovering a bar shows its date,
//! its prices and every value drawn at it (an SVG `<title>`: no script).
//! Colours come from the stylesheet's classes, so the page needs no inline
//! style.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};

use super::layout::date;

/// Width of the drawing, in SVG units.
const WIDTH: f64 = 960.0;
/// Room at the right for the value axis.
const AXIS: f64 = 64.0;
/// Room above each pane for its title.
const TITLE: f64 = 18.0;
const PRICE_HEIGHT: f64 = 300.0;
const VOLUME_HEIGHT: f64 = 60.0;
const PANE_HEIGHT: f64 = 100.0;
/// Room at the bottom for the dates.
const DATES: f64 = 20.0;

/// The bars drawn.
pub struct Candles<'a> {
    pub ts: &'a [i64],
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub volume: &'a [f64],
}

/// One series, a value per bar drawn (NaN where there is none).
pub struct Line {
    pub label: String,
    pub values: Vec<f64>,
}

/// A pane under the candles: its lines, an optional histogram, and
/// reference levels (RSI's 30 and 70).
pub struct Pane {
    pub title: String,
    pub lines: Vec<Line>,
    pub histogram: Option<Line>,
    pub levels: Vec<f64>,
}

/// The vertical scale of a pane: `lo..hi` onto `top..top + height`.
struct Scale {
    lo: f64,
    hi: f64,
    top: f64,
    height: f64,
}

impl Scale {
    fn of<'a>(values: impl Iterator<Item = &'a f64>, top: f64, height: f64) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let pad = (hi - lo) * 0.04;
        Scale {
            lo: lo - pad,
            hi: hi + pad,
            top,
            height,
        }
    }

    fn y(&self, v: f64) -> f64 {
        self.top + (self.hi - v) / (self.hi - self.lo) * self.height
    }
}

/// A number for an axis or a hover text: a few significant digits.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}", v)
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The chart: candles with `overlays`, volume, then `panes`.
pub fn draw(c: &Candles<'_>, overlays: &[Line], panes: &[Pane]) -> Markup {
    let n = c.ts.len();
    let plot = WIDTH - AXIS;
    let step = plot / n.max(1) as f64;
    let x = |i: usize| (i as f64 + 0.5) * step;
    let height = TITLE
        + PRICE_HEIGHT
        + TITLE
        + VOLUME_HEIGHT
        + panes.len() as f64 * (TITLE + PANE_HEIGHT)
        + DATES;
    let price = Scale::of(
        c.high
            .iter()
            .chain(c.low)
            .chain(overlays.iter().flat_map(|l| &l.values)),
        TITLE,
        PRICE_HEIGHT,
    );
    let volume_top = TITLE + PRICE_HEIGHT + TITLE;
    let volume = Scale::of(c.volume.iter().chain([&0.0]), volume_top, VOLUME_HEIGHT);
    let mut svg = String::with_capacity(64 * 1024);
    // Candles.
    for i in 0..n {
        let (o, h, l, cl) = (c.open[i], c.high[i], c.low[i], c.close[i]);
        if ![o, h, l, cl].iter().all(|v| v.is_finite()) {
            continue;
        }
        let dir = if cl >= o { "up" } else { "down" };
        let _ = write!(
            svg,
            r#"<line class="wick {dir}" x1="{x:.2}" x2="{x:.2}" y1="{:.2}" y2="{:.2}"/>"#,
            price.y(h),
            price.y(l),
            x = x(i)
        );
        let (top, bottom) = (price.y(o.max(cl)), price.y(o.min(cl)));
        let w = (step * 0.7).max(1.0);
        let _ = write!(
            svg,
            r#"<rect class="candle {dir}" x="{:.2}" y="{top:.2}" width="{w:.2}" height="{:.2}"/>"#,
            x(i) - w / 2.0,
            (bottom - top).max(0.8)
        );
        if c.volume[i].is_finite() {
            let y = volume.y(c.volume[i]);
            let _ = write!(
                svg,
                r#"<rect class="vol" x="{:.2}" y="{y:.2}" width="{w:.2}" height="{:.2}"/>"#,
                x(i) - w / 2.0,
                (volume.y(0.0) - y).max(0.0)
            );
        }
    }
    for (k, line) in overlays.iter().enumerate() {
        path(&mut svg, &line.values, &price, &x, k);
    }
    axis(&mut svg, &price, plot);
    let mut panes_svg = String::new();
    let mut top = volume_top + VOLUME_HEIGHT + TITLE;
    let mut scales = Vec::with_capacity(panes.len());
    for pane in panes {
        let scale = Scale::of(
            pane.lines
                .iter()
                .chain(&pane.histogram)
                .flat_map(|l| &l.values)
                .chain(&pane.levels),
            top,
            PANE_HEIGHT,
        );
        for level in &pane.levels {
            let y = scale.y(*level);
            let _ = write!(
                panes_svg,
                r#"<line class="level" x1="0" x2="{plot}" y1="{y:.2}" y2="{y:.2}"/>"#
            );
        }
        if let Some(hist) = &pane.histogram {
            let zero = scale.y(0.0);
            for (i, v) in hist.values.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let y = scale.y(*v);
                let dir = if *v >= 0.0 { "up" } else { "down" };
                let w = (step * 0.7).max(1.0);
                let _ = write!(
                    panes_svg,
                    r#"<rect class="hist {dir}" x="{:.2}" y="{:.2}" width="{w:.2}" height="{:.2}"/>"#,
                    x(i) - w / 2.0,
                    y.min(zero),
                    (y - zero).abs()
                );
            }
        }
        for (k, line) in pane.lines.iter().enumerate() {
            path(&mut panes_svg, &line.values, &scale, &x, k);
        }
        axis(&mut panes_svg, &scale, plot);
        scales.push(scale);
        top += PANE_HEIGHT + TITLE;
    }
    let dates_y = height - 6.0;
    let ticks = 6.min(n);
    html! {
        svg #chart viewBox={ "0 0 " (WIDTH) " " (height) } role="img"
            aria-label={ "price chart, " (n) " bars" } data-bars=(n) {
            text.pane-title x="4" y="13" { "Price" }
            text.pane-title x="4" y=(volume_top - 5.0) { "Volume" }
            @for (pane, scale) in panes.iter().zip(&scales) {
                text.pane-title x="4" y=(scale.top - 5.0) data-pane=(pane.title) { (pane.title) }
            }
            (PreEscaped(&svg))
            (PreEscaped(&panes_svg))
            @for t in 0..ticks {
                @let i = if ticks > 1 { t * (n - 1) / (ticks - 1) } else { 0 };
                @let anchor = if t == 0 { "start" } else if t + 1 == ticks { "end" } else { "middle" };
                text.axis x=(format!("{:.1}", x(i))) y=(dates_y) text-anchor=(anchor) { (date(c.ts[i])) }
            }
            @for i in 0..n {
                rect.hover x=(format!("{:.2}", x(i) - step / 2.0)) y="0" width=(format!("{step:.2}"))
                    height=(format!("{:.1}", height - DATES)) {
                    title { (hover_text(c, i, overlays, panes)) }
                }
            }
        }
    }
}

/// Which colour each drawn line has: the overlays', then each pane's.
pub fn legend(overlays: &[Line], panes: &[Pane]) -> Markup {
    html! {
        div.legend {
            @for (k, line) in overlays.iter().enumerate() {
                span { span class={ "swatch sw" (k % 8) } {} (line.label) }
            }
            @for pane in panes {
                @if pane.lines.len() > 1 {
                    @for (k, line) in pane.lines.iter().enumerate() {
                        span { span class={ "swatch sw" (k % 8) } {} (line.label) }
                    }
                }
            }
        }
    }
}

/// What hovering bar `i` shows.
fn hover_text(c: &Candles<'_>, i: usize, overlays: &[Line], panes: &[Pane]) -> String {
    let mut s = format!(
        "{}\nopen {}  high {}  low {}  close {}\nvolume {}",
        date(c.ts[i]),
        short(c.open[i]),
        short(c.high[i]),
        short(c.low[i]),
        short(c.close[i]),
        short(c.volume[i])
    );
    let lines = overlays.iter().chain(
        panes
            .iter()
            .flat_map(|p| p.lines.iter().chain(&p.histogram)),
    );
    for line in lines {
        if let Some(v) = line.values.get(i) {
            let _ = write!(s, "\n{} {}", line.label, short(*v));
        }
    }
    s
}

/// A line through `values` (broken where a value is missing), in colour `k`.
fn path(out: &mut String, values: &[f64], scale: &Scale, x: &impl Fn(usize) -> f64, k: usize) {
    let mut d = String::new();
    let mut pen_down = false;
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            pen_down = false;
            continue;
        }
        let _ = write!(
            d,
            "{}{:.2} {:.2}",
            if pen_down { "L" } else { "M" },
            x(i),
            scale.y(*v)
        );
        pen_down = true;
    }
    if !d.is_empty() {
        let _ = write!(out, r#"<path class="line c{}" d="{d}"/>"#, k % 8);
    }
}

/// Grid lines and values at the right of a pane.
fn axis(out: &mut String, scale: &Scale, plot: f64) {
    for t in 0..4 {
        let v = scale.lo + (scale.hi - scale.lo) * (0.1 + 0.8 * t as f64 / 3.0);
        let y = scale.y(v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="0" x2="{plot}" y1="{y:.2}" y2="{y:.2}"/><text class="axis" x="{:.1}" y="{:.2}">{}</text>"#,
            plot + 4.0,
            y + 4.0,
            short(v)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_maps_its_range_onto_its_box_with_a_margin() {
        let s = Scale::of([10.0, 20.0, f64::NAN].iter(), 100.0, 50.0);
        // 4 % of the range above and below.
        assert!((s.y(20.4) - 100.0).abs() < 1e-9);
        assert!((s.y(9.6) - 150.0).abs() < 1e-9);
        let flat = Scale::of([5.0, 5.0].iter(), 0.0, 10.0);
        assert!(flat.y(5.0) > 0.0 && flat.y(5.0) < 10.0);
        let empty = Scale::of([f64::NAN].iter(), 0.0, 10.0);
        assert!(empty.y(0.5).is_finite());
    }

    #[test]
    fn lines_break_where_values_are_missing() {
        let s = Scale::of([0.0, 1.0].iter(), 0.0, 100.0);
        let mut out = String::new();
        path(
            &mut out,
            &[0.0, 1.0, f64::NAN, 1.0],
            &s,
            &|i| i as f64 * 10.0,
            9,
        );
        assert_eq!(out.matches('M').count(), 2, "{out}");
        assert_eq!(out.matches('L').count(), 1, "{out}");
        assert!(out.contains("class=\"line c1\""), "{out}");
    }

    #[test]
    fn every_bar_gets_a_candle_a_volume_bar_and_a_hover_text() {
        let ts = [0, 86_400_000_000_000, 2 * 86_400_000_000_000];
        let c = Candles {
            ts: &ts,
            open: &[1.0, 2.0, 3.0],
            high: &[2.0, 3.0, 4.0],
            low: &[0.5, 1.5, 2.5],
            close: &[1.5, 1.8, 3.5],
            volume: &[10.0, 20.0, 30.0],
        };
        let rsi = Pane {
            title: "rsi(14)".into(),
            lines: vec![Line {
                label: "rsi(14)".into(),
                values: vec![f64::NAN, 40.0, 60.0],
            }],
            histogram: None,
            levels: vec![30.0, 70.0],
        };
        let svg = draw(&c, &[], &[rsi]).into_string();
        assert_eq!(svg.matches("class=\"candle up\"").count(), 2);
        assert_eq!(svg.matches("class=\"candle down\"").count(), 1);
        assert_eq!(svg.matches("class=\"vol\"").count(), 3);
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("1970-01-02\nopen 2.00  high 3.00  low 1.50  close 1.80\nvolume 20.00\nrsi(14) 40.00"), "{svg}");
        assert!(svg.contains("data-pane=\"rsi(14)\""));
        assert_eq!(svg.matches("class=\"level\"").count(), 2);
    }
}
