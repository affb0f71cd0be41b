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
