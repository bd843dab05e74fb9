//! Monitoring out of the box: the alerting rules and the Grafana dashboard
//! in deploy/monitoring/, checked with promtool (Debian's `prometheus`
//! package) and against a real Prometheus scraping a real three-node
//! `deploy/cluster.sh` cluster, where a killed daemon must page.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use steep_repl_tests::cluster_script::{ClusterScript, Ports};
use steep_repl_tests::http::{get, parse_prometheus};
use steep_repl_tests::paths::repo_root;
use steep_repl_tests::prometheus::{prometheus_bin, promtool, promtool_bin, Prometheus};

/// The cluster's ports: node i on base + i. Fixed (cluster.sh takes
/// bases, not free ports), so chosen away from what else runs: cluster.sh's
/// defaults 15432/15500/18080 (CI's main job), the tests' free ports
/// (20000-32699, tests/src/ports.rs) and the kernel's ephemeral range
/// (32768 and up).
const PORTS: Ports = Ports {
    postgresql: 16430,
    grpc: 16530,
    http: 19130,
};

/// The alerts the test waits for; only their `for:` is shortened.
const PAGED: [&str; 2] = ["SteepReplNodeDown", "SteepReplNodeUnreachable"];

/// Generous: no timing is asserted, only that it happens.
const PATIENCE: Duration = Duration::from_secs(120);

fn monitoring_dir() -> PathBuf {
    repo_root().join("deploy/monitoring")
}

fn read(file: &str) -> String {
    let path = monitoring_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `steep_repl_*` metric name `text` mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("steep_repl_") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The rules file split per alert: (name, its block of YAML).
fn alert_blocks(rules: &str) -> Vec<(String, String)> {
    rules
        .split("- alert: ")
        .skip(1)
        .map(|block| {
            let name = block.lines().next().unwrap_or("").trim().to_string();
            (name, block.to_string())
        })
        .collect()
}

/// The rules with the `for:` of the alerts in `PAGED` set to `to`, and
/// how many were changed. Only durations change, never an expression: the
/// test must exercise what production runs, without waiting minutes.
fn shorten_for(rules: &str, to: &str) -> (String, usize) {
    let mut out = String::new();
    let (mut current, mut changed) = (String::new(), 0);
    for line in rules.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert: ") {
            current = name.trim().to_string();
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        if PAGED.contains(&current.as_str()) && line.trim_start().starts_with("for: ") {
            out.push_str(&format!("{indent}for: {to}\n"));
            changed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, changed)
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = monitoring_dir();
    let checked = promtool(&dir, &["check", "rules", "steep-repl.rules.yml"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(&dir, &["test", "rules", "steep-repl.rules.test.yml"])
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn every_alert_is_labelled_explained_debounced_and_shown_firing_in_a_unit_test() {
    let rules = read("steep-repl.rules.yml");
    let tests = read("steep-repl.rules.test.yml");
    let blocks = alert_blocks(&rules);
    assert!(blocks.len() >= 10, "only {} alerts found", blocks.len());
    for (name, block) in &blocks {
        for needle in [
            "\n        for: ",
            "\n          summary: ",
            "\n          description: ",
        ] {
            assert!(block.contains(needle), "{name} has no {needle:?}");
        }
        assert!(
            block.contains("severity: critical") || block.contains("severity: warning"),
            "{name} has no severity critical or warning"
        );
        // A unit test where the alert fires (a non-empty expectation).
        let fires = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
        assert!(tests.contains(&fires), "no unit test shows {name} firing");
    }
    for name in PAGED {
        assert!(blocks.iter().any(|(n, _)| n == name), "{name} is gone");
    }
}

#[test]
fn the_dashboard_is_grafana_json_with_a_prometheus_data_source_input() {
    let dashboard: Value =
        serde_json::from_str(&read("grafana-dashboard.json")).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "panel id of {title} repeated"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
            queries += 1;
        }
    }
    assert!(queries >= 40, "only {queries} queries");
}

/// Each dashboard query with Grafana's variables filled in as Grafana
/// would for "every node".
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read("grafana-dashboard.json")).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$job", "steep-repl")
                    .replace("$instance", ".+")
                    .replace("$__rate_interval", "1m");
                out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
            }
        }
    }
    out
}

/// (labels, value) of each series of an instant vector.
fn samples(result: &[Value]) -> Vec<(BTreeMap<String, String>, String)> {
    result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (labels, s["value"][1].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// The firing alerts as (alertname, node_id, instance), sorted.
fn firing(prometheus: &Prometheus) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    Ok(prometheus
        .alerts()?
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
            (label("alertname"), label("node_id"), label("instance"))
        })
        .collect())
}

#[test]
fn a_real_prometheus_reads_a_cluster_sh_cluster_and_pages_for_a_killed_daemon() {
    let started = Instant::now();
    // Before the cluster: a missing package fails at once, with the fix.
    for bin in [prometheus_bin(), promtool_bin()] {
        bin.unwrap_or_else(|e| panic!("{e:#}"));
    }
    let mut cluster =
        ClusterScript::up(3, PORTS).unwrap_or_else(|e| panic!("deploy/cluster.sh up 3: {e:#}"));
    let up_took = started.elapsed();
    let targets: Vec<String> = (1..=3)
        .map(|i| format!("\"{}\"", cluster.http_addr(i)))
        .collect();
    let node_of = |instance: &str| -> u16 {
        (1..=3)
            .find(|&i| cluster.http_addr(i).to_string() == instance)
            .unwrap_or_else(|| panic!("{instance} is no node of the cluster"))
    };

    let (rules, shortened) = shorten_for(&read("steep-repl.rules.yml"), "2s");
    assert_eq!(shortened, PAGED.len(), "each paged alert has one for:");
    // The job name is the one the rules select (deploy/monitoring/README.md).
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - steep-repl.rules.yml\n\
         scrape_configs:\n  - job_name: steep-repl\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let prometheus = Prometheus::start(&config, &[("steep-repl.rules.yml", &rules)])
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Every node scraped, every component up, through Prometheus's API.
    let up = prometheus
        .wait_for(
            "steep_repl_up 1 for 4 components of 3 nodes",
            PATIENCE,
            |p| {
                let up = samples(&p.query(r#"steep_repl_up{job="steep-repl"}"#)?);
                Ok((up.len() == 12 && up.iter().all(|(_, v)| v == "1")).then_some(up))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let seen: BTreeSet<(u16, String)> = up
        .iter()
        .map(|(l, _)| (node_of(&l["instance"]), l["component"].clone()))
        .collect();
    let expected: BTreeSet<(u16, String)> = (1..=3)
        .flat_map(|i| ["postgresql", "grpc", "ipc", "http"].map(|c| (i, c.to_string())))
        .collect();
    assert_eq!(seen, expected);

    // Exactly one coordinator across the three nodes.
    let coordinator = samples(
        &prometheus
            .query(r#"steep_repl_is_coordinator{job="steep-repl"}"#)
            .expect("querying steep_repl_is_coordinator"),
    );
    assert_eq!(coordinator.len(), 3, "{coordinator:?}");
    let coordinators: Vec<u16> = coordinator
        .iter()
        .filter(|(_, v)| v == "1")
        .map(|(l, _)| node_of(&l["instance"]))
        .collect();
    assert_eq!(coordinators.len(), 1, "coordinators: {coordinator:?}");
    assert!(coordinator.iter().all(|(_, v)| v == "1" || v == "0"));

    // The node_id the alerts name comes from build_info: node<i> here.
    let builds = samples(
        &prometheus
            .query("steep_repl_build_info")
            .expect("querying steep_repl_build_info"),
    );
    assert_eq!(builds.len(), 3, "{builds:?}");
    for (labels, _) in builds {
        let i = node_of(&labels["instance"]);
        assert_eq!(labels["node_id"], format!("node{i}"), "{labels:?}");
    }

    // Every name the rules and the dashboard use is on a real page, and
    // every family on the page has a panel.
    let page = get(cluster.http_addr(1), "/metrics").expect("GET /metrics");
    let families = parse_prometheus(&page.text()).expect("a valid /metrics page");
    let mut exported: BTreeSet<String> = families.keys().cloned().collect();
    for family in families.values() {
        exported.extend(family.samples.iter().map(|s| s.name.clone()));
    }
    exported.retain(|n| n.starts_with("steep_repl_"));
    let dashboard = read("grafana-dashboard.json");
    for (file, text) in [
        ("steep-repl.rules.yml", &rules),
        ("grafana-dashboard.json", &dashboard),
    ] {
        let unknown: Vec<String> = metric_names(text).difference(&exported).cloned().collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics no node exports: {unknown:?}"
        );
    }
    let shown = metric_names(&dashboard);
    let missing: Vec<&String> = families
        .keys()
        .filter(|f| f.starts_with("steep_repl_"))
        .filter(|f| !shown.contains(*f) && !shown.contains(&format!("{f}_bucket")))
        .collect();
    assert!(
        missing.is_empty(),
        "no panel of grafana-dashboard.json shows {missing:?}"
    );

    // Prometheus evaluates every rule and every dashboard query cleanly.
    let rules_loaded = prometheus
        .wait_for("every rule evaluated", PATIENCE, |p| {
            let rules = p.rules()?;
            let fresh = rules.is_empty() || rules.iter().any(|r| r["health"] == "unknown");
            Ok((!fresh).then_some(rules))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(rules_loaded.len(), alert_blocks(&rules).len());
    for rule in &rules_loaded {
        assert_eq!(
            rule["health"], "ok",
            "{} failed: {}",
            rule["name"], rule["lastError"]
        );
    }
    for (title, expr) in dashboard_queries() {
        if let Err(e) = prometheus.query(&expr) {
            panic!("dashboard panel {title:?}: {expr}: {e:#}");
        }
    }

    // A healthy cluster pages nobody: nothing fires, and the two alerts
    // the test waits for are not even pending (the others, with their
    // production `for:`, could not fire this early anyway).
    let active = prometheus.alerts().expect("reading alerts");
    assert!(
        !active
            .iter()
            .any(|a| a["state"] == "firing" || PAGED.iter().any(|n| a["labels"]["alertname"] == *n)),
        "alerts on a healthy cluster: {active:?}"
    );

    // Kill a daemon that is neither the coordinator nor the Raft leader:
    // the two survivors keep both, so the only pages are for the dead node
    // (killing the coordinator would page for a failover too, a different
    // story with its own timing).
    let leaders: Vec<u16> = samples(
        &prometheus
            .query(r#"steep_repl_raft_is_leader{job="steep-repl"} == 1"#)
            .expect("querying the Raft leader"),
    )
    .iter()
    .map(|(l, _)| node_of(&l["instance"]))
    .collect();
    let victim = (1..=3)
        .find(|i| !coordinators.contains(i) && !leaders.contains(i))
        .expect("three nodes, one coordinator, one leader: one node is neither");
    let (victim_id, victim_addr) = (
        format!("node{victim}"),
        cluster.http_addr(victim).to_string(),
    );
    cluster.kill_daemon(victim).expect("kill -9 the daemon");
    let killed_at = Instant::now();

    let expected: BTreeSet<(String, String, String)> = [
        ("SteepReplNodeDown", victim_addr.as_str()),
        ("SteepReplNodeUnreachable", ""),
    ]
    .iter()
    .map(|(alert, instance)| (alert.to_string(), victim_id.clone(), instance.to_string()))
    .collect();
    let paged = prometheus.wait_for(
        &format!("{PAGED:?} firing for {victim_id}"),
        PATIENCE,
        |p| {
            let now = firing(p)?;
            Ok(expected.is_subset(&now).then_some(now))
        },
    );
    let paged = paged.unwrap_or_else(|e| {
        panic!(
            "{e:#}\nnode{victim}'s log:\n{}",
            steep_repl_tests::tail(&cluster.daemon_log(victim), 20)
        )
    });
    assert_eq!(paged, expected, "only the killed node pages");
    let summaries: Vec<String> = prometheus
        .alerts()
        .expect("reading alerts")
        .iter()
        .filter(|a| PAGED.iter().any(|n| a["labels"]["alertname"] == *n))
        .map(|a| {
            a["annotations"]["summary"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        summaries.len() == 2 && summaries.iter().all(|s| s.contains(&victim_id)),
        "the summaries name {victim_id}: {summaries:?}"
    );
    eprintln!(
        "cluster.sh up: {up_took:?}; {PAGED:?} firing {:?} after the kill; whole test {:?}",
        killed_at.elapsed(),
        started.elapsed()
    );
    cluster.down().expect("deploy/cluster.sh down");
}
