//! Markdown tables and number formatting for the bench's output.

use std::time::Duration;

/// A Markdown table.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.to_vec());
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.rows[0]);
        out += &line(&vec!["---".to_owned(); self.rows[0].len()]);
        for row in &self.rows[1..] {
            out += &line(row);
        }
        out
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn secs_f(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.2} s"))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn mib_delta(before_kib: u64, after_kib: u64) -> String {
    format!("{:+.1} MiB", (after_kib as f64 - before_kib as f64) / 1024.0)
}

/// How many times `a` is `b`, e.g. "12.5×".
pub fn times(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.1}×", a / b) } else { "n/a".to_owned() }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

pub fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::min)
}

/// The nearest-rank percentile `p` (0–100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// "≤ 40 MiB: met, 2.3 MiB to spare" or "≤ 40 MiB: **missed** by 2.3 MiB" for a peak in KiB.
pub fn mib_goal(peak_kib: u64, limit_mib: u64) -> String {
    let margin = limit_mib as f64 - peak_kib as f64 / 1024.0;
    goal(&format!("≤ {limit_mib} MiB"), margin, &format!("{:.1} MiB", margin.abs()))
}

/// "≤ 10 s: met, 2.31 s to spare" or "≤ 10 s: **missed** by 2.31 s".
pub fn secs_goal(took: Duration, limit: Duration) -> String {
    let margin = limit.as_secs_f64() - took.as_secs_f64();
    goal(&format!("≤ {}", secs(limit)), margin, &format!("{:.2} s", margin.abs()))
}

/// A goal of the form "value ≤ limit" with its margin (limit − value, in the value's unit).
pub fn goal(limit: &str, margin: f64, margin_text: &str) -> String {
    if margin >= 0.0 { format!("{limit}: met, {margin_text} to spare") } else { format!("{limit}: **missed** by {margin_text}") }
}
