//! The report: Markdown lines (a table per scenario, notes), kept and
//! printed as each scenario finishes.

use crate::load::Run;

pub(crate) struct Report {
    pub(crate) lines: Vec<String>,
}

impl Report {
    pub(crate) fn row(&mut self, name: &str, m: &Run) {
        self.lines.push(format!(
            "| {name:<28} | {:>10.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>6} |",
            m.rps(),
            m.us(0.50),
            m.us(0.99),
            m.us(0.999),
            m.errors
        ));
    }
    pub(crate) fn header(&mut self, title: &str) {
        self.lines.push(String::new());
        self.lines.push(format!("### {title}"));
        self.lines.push(String::new());
        self.lines
            .push("| target | req/s | p50 µs | p99 µs | p99.9 µs | errors |".into());
        self.lines.push("|---|---:|---:|---:|---:|---:|".into());
    }
    pub(crate) fn note(&mut self, text: String) {
        self.lines.push(String::new());
        self.lines.push(text);
    }
    pub(crate) fn print_last(&self, n: usize) {
        for l in &self.lines[self.lines.len().saturating_sub(n)..] {
            println!("{l}");
        }
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Where a fixed-rate run's slowest 1 % of answers fall in time: bunched
/// into bursts (answers sent within 1 ms of each other: a stall that
/// delayed everything behind it) or scattered, and whether the bursts
/// come at one phase of the second (a periodic job). Empty without a
/// timeline.
pub(crate) fn tail_timeline(run: &Run) -> String {
    if run.timeline.is_empty() {
        return String::new();
    }
    let threshold = run.hist.value_at_quantile(0.99);
    let mut slow: Vec<u64> = run
        .timeline
        .iter()
        .filter(|&&(_, ns)| ns >= threshold)
        .map(|&(at, _)| at)
        .collect();
    slow.sort_unstable();
    // Bursts: runs of slow answers each sent within 1 ms of the last.
    let mut bursts: Vec<(u64, usize)> = Vec::new();
    for &at in &slow {
        match bursts.last_mut() {
            Some((last, n)) if at - *last < 1_000_000 => {
                *last = at;
                *n += 1;
            }
            _ => bursts.push((at, 1)),
        }
    }
    let big: Vec<u64> = bursts
        .iter()
        .filter(|&&(_, n)| n >= 10)
        .map(|&(at, _)| at)
        .collect();
    let in_big: usize = bursts.iter().filter(|b| b.1 >= 10).map(|b| b.1).sum();
    let mut sizes: Vec<usize> = bursts.iter().map(|b| b.1).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.truncate(5);
    let mut gaps: Vec<u64> = big.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    gaps.sort_unstable();
    let median_gap = gaps
        .get(gaps.len() / 2)
        .map_or("-".to_string(), |g| format!("{g} ms"));
    let mut phase = [0usize; 10];
    for &at in &big {
        phase[((at % 1_000_000_000) / 100_000_000) as usize] += 1;
    }
    format!(
        "slowest 1 % (≥ {:.0} µs): {} answers in {} bursts (sent within 1 ms of each other), largest {:?}; \
         {:.0} % of them in {} bursts of ≥ 10, median {} apart; those bursts by 100 ms phase of the second: {:?}",
        threshold as f64 / 1000.0,
        slow.len(),
        bursts.len(),
        sizes,
        100.0 * in_big as f64 / slow.len().max(1) as f64,
        big.len(),
        median_gap,
        phase
    )
}
