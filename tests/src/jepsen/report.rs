//! The report of a run, written to a folder a person can read: the whole
//! history (`history.jsonl`), every coordinator answer (`claims.jsonl`),
//! the faults (`faults.json`), the numbers and verdicts (`summary.json`,
//! `report.md`) and a timeline (`timeline.svg`): operations per node,
//! faults as shaded spans, the coordinator over time.

use super::nemesis::{FaultKind, FaultSpan};
use crate::history::{End, Record};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One coordinator answer, in milliseconds since the history began.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimPoint {
    pub node: String,
    pub invoked_ms: u128,
    pub completed_ms: u128,
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    pub is_self: bool,
}

/// One checker's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub checker: String,
    pub passed: bool,
    pub detail: String,
}

/// What a fault kind cost, over every span of that kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultCost {
    pub count: usize,
    pub seconds: f64,
    /// Operations invoked during the spans, and how many were answered.
    pub ops: usize,
    pub ok: usize,
    /// The longest time, from a span's start to 10 s after its end, with
    /// no write acknowledged anywhere.
    pub longest_write_gap_s: f64,
}

/// The numbers of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub seed: u64,
    pub nodes: Vec<String>,
    pub seconds: f64,
    pub operations: usize,
    /// kind -> [done, unknown, not done].
    pub by_kind: BTreeMap<String, [usize; 3]>,
    pub faults: usize,
    pub by_fault: BTreeMap<String, FaultCost>,
    /// Epochs claimed during the run, and so coordinator changes + 1.
    pub epochs_claimed: usize,
    pub claims_answers: usize,
    pub verdicts: Vec<Verdict>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }
}

/// The time of each acknowledged write, in ms.
fn write_acks(records: &[Record]) -> Vec<u128> {
    let mut acks: Vec<u128> = records
        .iter()
        .filter(|r| r.op.kind() != "get" && matches!(r.end, Some(End::Done(_))))
        .map(|r| r.at_ms + r.took_ms)
        .collect();
    acks.sort();
    acks
}

/// The longest stretch of [from, to] without an acknowledged write.
fn longest_gap(acks: &[u128], from: u128, to: u128) -> u128 {
    let mut last = from;
    let mut longest = 0;
    for &t in acks.iter().filter(|&&t| t > from && t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to.saturating_sub(last))
}

pub fn fault_costs(records: &[Record], faults: &[FaultSpan]) -> BTreeMap<String, FaultCost> {
    let acks = write_acks(records);
    let mut costs: BTreeMap<String, FaultCost> = BTreeMap::new();
    for f in faults {
        let c = costs.entry(f.kind.as_str().to_string()).or_default();
        c.count += 1;
        c.seconds += (f.end_ms - f.start_ms) as f64 / 1000.0;
        for r in records
            .iter()
            .filter(|r| r.at_ms >= f.start_ms && r.at_ms <= f.end_ms)
        {
            c.ops += 1;
            if matches!(r.end, Some(End::Done(_))) {
                c.ok += 1;
            }
        }
        let gap = longest_gap(&acks, f.start_ms, f.end_ms + 10_000) as f64 / 1000.0;
        c.longest_write_gap_s = c.longest_write_gap_s.max(gap);
    }
    costs
}

/// Writes the report into `dir` (created).
pub fn write(
    dir: &Path,
    summary: &Summary,
    records: &[Record],
    claims: &[ClaimPoint],
    faults: &[FaultSpan],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines)?;
    let mut lines = String::new();
    for c in claims {
        lines.push_str(&serde_json::to_string(c)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("claims.jsonl"), lines)?;
    std::fs::write(
        dir.join("faults.json"),
        serde_json::to_string_pretty(faults)?,
    )?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    std::fs::write(dir.join("report.md"), markdown(summary, faults))?;
    std::fs::write(
        dir.join("timeline.svg"),
        svg(summary, records, claims, faults),
    )?;
    Ok(())
}

fn markdown(s: &Summary, faults: &[FaultSpan]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}: {}\n",
        s.name,
        if s.passed() { "PASSED" } else { "FAILED" }
    );
    let _ = writeln!(
        out,
        "Seed {} (replay with STEEP_JEPSEN_SEED={}), {} nodes ({}), {:.0} s of workload, {} operations, {} faults, {} epochs claimed ({} coordinator answers checked).\n",
        s.seed,
        s.seed,
        s.nodes.len(),
        s.nodes.join(", "),
        s.seconds,
        s.operations,
        s.faults,
        s.epochs_claimed,
        s.claims_answers
    );
    out.push_str("![timeline](timeline.svg)\n\n## Checkers\n\n| checker | verdict | detail |\n|---|---|---|\n");
    for v in &s.verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.checker,
            if v.passed { "pass" } else { "**FAIL**" },
            v.detail.replace('\n', " ").replace('|', "/")
        );
    }
    out.push_str(
        "\n## Operations\n\n| kind | answered | unknown | not done |\n|---|---:|---:|---:|\n",
    );
    for (kind, [ok, unknown, not_done]) in &s.by_kind {
        let _ = writeln!(out, "| {kind} | {ok} | {unknown} | {not_done} |");
    }
    out.push_str("\n## Faults\n\n| kind | count | seconds | ops during | answered | longest time without an acknowledged write (s) |\n|---|---:|---:|---:|---:|---:|\n");
    for (kind, c) in &s.by_fault {
        let _ = writeln!(
            out,
            "| {kind} | {} | {:.1} | {} | {} | {:.1} |",
            c.count, c.seconds, c.ops, c.ok, c.longest_write_gap_s
        );
    }
    out.push_str("\n## Timeline of faults\n\n| from (s) | to (s) | fault |\n|---:|---:|---|\n");
    for f in faults {
        let _ = writeln!(
            out,
            "| {:.1} | {:.1} | {} |",
            f.start_ms as f64 / 1000.0,
            f.end_ms as f64 / 1000.0,
            f.what
        );
    }
    out
}

/// A colour per node, for the coordinator track.
/// (None of them is a colour of the operations' ends.)
const PALETTE: [&str; 7] = [
    "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
];

fn fault_colour(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Partition | FaultKind::IsolateCoordinator => "#d62728",
        FaultKind::AsymmetricCut => "#ff9896",
        FaultKind::PauseCoordinator => "#9edae5",
        FaultKind::KillDaemon | FaultKind::RestartContainer => "#7f7f7f",
        FaultKind::PacketLoss => "#dbdb8d",
        FaultKind::LoseDataNode => "#c49c94",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A node's claims of one epoch, merged while they follow each other
/// within 200 ms: (node, epoch, from, to).
fn claim_segments(claims: &[ClaimPoint]) -> Vec<(String, u64, u128, u128)> {
    let mut own: Vec<&ClaimPoint> = claims.iter().filter(|c| c.is_self).collect();
    own.sort_by(|a, b| (&a.node, a.invoked_ms).cmp(&(&b.node, b.invoked_ms)));
    let mut segments: Vec<(String, u64, u128, u128)> = Vec::new();
    for c in own {
        let epoch = c.epoch.unwrap_or(0);
        match segments.last_mut() {
            Some((node, e, _, to))
                if *node == c.node && *e == epoch && c.invoked_ms <= *to + 200 =>
            {
                *to = c.completed_ms.max(*to)
            }
            _ => segments.push((c.node.clone(), epoch, c.invoked_ms, c.completed_ms)),
        }
    }
    segments
}

fn svg(s: &Summary, records: &[Record], claims: &[ClaimPoint], faults: &[FaultSpan]) -> String {
    let end_ms = records
        .iter()
        .map(|r| r.at_ms + r.took_ms)
        .chain(faults.iter().map(|f| f.end_ms))
        .max()
        .unwrap_or(1)
        .max(1);
    let (left, width, row) = (90.0, 1400.0, 26.0);
    let x = |ms: u128| left + width * ms as f64 / end_ms as f64;
    let nodes = &s.nodes;
    let rows = nodes.len() + 1;
    let height = 60.0 + row * rows as f64 + 90.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 20.0
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14">{} (seed {}): {} operations, {} faults, {}</text>"#,
        escape(&s.name),
        s.seed,
        s.operations,
        s.faults,
        if s.passed() {
            "every checker passed"
        } else {
            "A CHECKER FAILED"
        }
    );
    let top = 40.0;
    for f in faults {
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.35"><title>{}</title></rect>"#,
            x(f.start_ms),
            (x(f.end_ms) - x(f.start_ms)).max(1.0),
            row * rows as f64,
            fault_colour(f.kind),
            escape(&f.what)
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            out,
            r#"<text x="10" y="{:.1}">{}</text>"#,
            y + row * 0.65,
            escape(node)
        );
        for r in records.iter().filter(|r| &r.node == node) {
            let colour = match &r.end {
                Some(End::Done(_)) => "#2ca02c",
                Some(End::Unknown(_)) | None => "#ff7f0e",
                Some(End::NotDone(_)) => "#bbbbbb",
            };
            let _ = writeln!(
                out,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="1"/>"#,
                x(r.at_ms),
                y + 4.0,
                x(r.at_ms),
                y + row - 4.0
            );
        }
    }
    // The coordinator: each node's own claims, as segments in its colour.
    let y = top + row * nodes.len() as f64;
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.1}">coordinator</text>"#,
        y + row * 0.65
    );
    let mut epochs_drawn: BTreeMap<u64, u128> = BTreeMap::new();
    for (node, epoch, from, to) in claim_segments(claims) {
        let colour = nodes
            .iter()
            .position(|n| *n == node)
            .map_or("#000000", |i| PALETTE[i % PALETTE.len()]);
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} claims epoch {epoch}</title></rect>"#,
            x(from),
            y + 5.0,
            (x(to) - x(from)).max(1.5),
            row - 10.0,
            escape(&node)
        );
        epochs_drawn.entry(epoch).or_insert(from);
    }
    for (epoch, at) in &epochs_drawn {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="9">{epoch}</text>"#,
            x(*at),
            y + row + 10.0
        );
    }
    // Time axis and legend.
    let axis = top + row * rows as f64 + 24.0;
    let step_s = ((end_ms as f64 / 1000.0) / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t * 1000.0 <= end_ms as f64 {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{axis:.1}" font-size="10">{t:.0} s</text>"#,
            x((t * 1000.0) as u128)
        );
        t += step_s;
    }
    let mut lx = left;
    let legend = axis + 22.0;
    for (label, colour) in [
        ("answered", "#2ca02c"),
        ("unknown", "#ff7f0e"),
        ("not done", "#bbbbbb"),
        ("partition", "#d62728"),
        ("asymmetric cut", "#ff9896"),
        ("pause", "#9edae5"),
        ("kill / restart", "#7f7f7f"),
        ("packet loss", "#dbdb8d"),
        ("data node lost", "#c49c94"),
    ] {
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{legend:.1}">{label}</text>"#,
            legend - 10.0,
            lx + 16.0
        );
        lx += 20.0 + 8.0 * label.len() as f64;
    }
    // Whose colour is whose on the coordinator track.
    let mut lx = left;
    let legend = legend + 20.0;
    let _ = writeln!(out, r#"<text x="10" y="{legend:.1}">claims by</text>"#);
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{legend:.1}">{}</text>"#,
            legend - 10.0,
            PALETTE[i % PALETTE.len()],
            lx + 16.0,
            escape(node)
        );
        lx += 28.0 + 8.0 * node.len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges_of_the_window() {
        assert_eq!(longest_gap(&[], 100, 600), 500);
        assert_eq!(longest_gap(&[150, 200, 550], 100, 600), 350);
        assert_eq!(longest_gap(&[50, 700], 100, 600), 500);
    }
}
