//! Serf's output from shoal's own commands: `members --detailed` (protocol versions),
//! `--role`, the JSON shape with `protocol`, `version`'s protocol line, and `reachability`.
//! Where Debian's serf is installed, its output against the same agent is the reference.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Agent, cli, wait_until};

fn pair() -> (Agent, Agent) {
    let a = Agent::start("p1", &["--tag", "role=web"]);
    let b = Agent::start("p2", &["--tag", "role=db", "--join", &a.join_arg()]);
    assert!(wait_until(Duration::from_secs(10), || a.count_alive() == 2));
    (a, b)
}

/// Each line's words (the columns, whatever their alignment).
fn words(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn serf(args: &[&str]) -> Option<String> {
    let serf = Path::new("/usr/bin/serf");
    if !serf.is_file() {
        eprintln!("(no /usr/bin/serf: the comparison with serf's own output is skipped)");
        return None;
    }
    let out = std::process::Command::new(serf)
        .args(args)
        .output()
        .expect("run serf");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn members_detailed_role_and_json_print_what_serf_prints() {
    let (a, _b) = pair();
    let control = a.control.to_string();
    let (code, out, err) = cli(&["members", "--control", &control, "--detailed"]);
    assert_eq!(code, Some(0), "{err}");
    let rows = words(&out);
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        out.lines()
            .all(|l| l.ends_with("Protocol Version: 1  Available Protocol Range: [1, 1]")),
        "{out}"
    );
    let rpc = format!("-rpc-addr={control}");
    if let Some(reference) = serf(&["members", &rpc, "-detailed"]) {
        assert_eq!(words(&reference), rows, "serf: {reference}\nshoal: {out}");
    }

    let (code, out, _) = cli(&["members", "--control", &control, "--role", "w.b"]);
    assert_eq!(code, Some(0));
    assert_eq!(words(&out).len(), 1, "{out}");
    assert!(out.starts_with("p1 "), "{out}");
    if let Some(reference) = serf(&["members", &rpc, "-role=w.b"]) {
        // serf also says `-role` is deprecated; shoal keeps it without the warning.
        let reference: Vec<Vec<String>> = words(&reference)
            .into_iter()
            .filter(|w| w.first().map(String::as_str) != Some("Deprecation"))
            .collect();
        assert_eq!(reference, words(&out));
    }

    let (code, out, _) = cli(&["members", "--control", &control, "--format", "json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    for m in json["members"].as_array().expect("members") {
        assert_eq!(
            m["protocol"],
            serde_json::json!({"max": 1, "min": 1, "version": 1})
        );
    }
    if let Some(reference) = serf(&["members", &rpc, "-format=json"]) {
        let reference: serde_json::Value = serde_json::from_str(&reference).expect("json");
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v["members"][0]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        // Serf's keys, all of them, plus shoal's member health (`null` and `{}` without
        // checks): a consumer of Serf's JSON finds every field it expects.
        let mut serf_keys = keys(&reference);
        serf_keys.extend(["checks".to_string(), "health".to_string()]);
        serf_keys.sort();
        assert_eq!(serf_keys, keys(&json));
        assert_eq!(
            reference["members"][0]["protocol"],
            json["members"][0]["protocol"]
        );
    }
}

#[test]
fn version_prints_the_protocol_line() {
    let (code, out, _) = cli(&["version"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("shoal "), "{out}");
    assert_eq!(
        lines.get(1),
        Some(&"Agent Protocol: 1 (Understands back to: 1)")
    );
}

#[test]
fn reachability_hears_every_live_member_and_reports_as_serf_does() {
    let (a, _b) = pair();
    let control = a.control.to_string();
    let (code, out, err) = cli(&["reachability", "--control", &control, "--verbose"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Total members: 2, live members: 2");
    assert_eq!(lines[1], "Starting reachability test...");
    let mut acks: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("\tAck"))
        .collect();
    acks.sort();
    assert_eq!(acks, vec!["\tAck from 'p1'", "\tAck from 'p2'"]);
    assert!(lines.iter().any(|l| l.starts_with("Query time: ")), "{out}");
    assert_eq!(lines.last(), Some(&"Successfully contacted all live nodes"));
    if let Some(reference) = serf(&["reachability", &format!("-rpc-addr={control}")]) {
        let (_, plain, _) = cli(&["reachability", "--control", &control]);
        assert_eq!(reference, plain);
    }
}

/// The `KEY = VALUE` lines of one `SECTION:` of `serf info`-style output, in order.
fn section(out: &str, name: &str) -> Vec<(String, String)> {
    out.split(&format!("{name}:\n"))
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| l.starts_with('\t'))
        .filter_map(|l| l.trim().split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Section headers, in order.
fn headers(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with('\t') && l.ends_with(':'))
        .map(|l| l.trim_end_matches(':').to_string())
        .collect()
}

#[test]
fn info_prints_serfs_sections_first_with_serfs_keys() {
    let (a, _b) = pair();
    let ctl = a.control.to_string();
    let (code, out, err) = cli(&["info", "--control", &ctl]);
    assert_eq!(code, Some(0), "{err}");
    let h = headers(&out);
    assert_eq!(&h[..4], ["agent", "runtime", "serf", "tags"], "{out}");
    assert_eq!(section(&out, "agent")[0], ("name".into(), "p1".into()));
    assert_eq!(section(&out, "tags"), [("role".into(), "web".into())]);
    let serf_keys: Vec<String> = section(&out, "serf").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        serf_keys,
        [
            "encrypted",
            "event_time",
            "failed",
            "health_score",
            "left",
            "members",
            "query_time"
        ]
    );
    let members = section(&out, "serf")
        .into_iter()
        .find(|(k, _)| k == "members")
        .map(|(_, v)| v);
    assert_eq!(members.as_deref(), Some("2"), "{out}");
    let runtime: Vec<String> = section(&out, "runtime")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(runtime, ["arch", "cpu_count", "os", "version"]);
    // Serf's own client against the same agent (its RPC `stats`) shows the same numbers, and
    // every key of shoal's serf section is one `serf info` prints.
    if let Some(theirs) = serf(&["info", &format!("-rpc-addr={ctl}")]) {
        for (k, v) in section(&out, "serf") {
            let got = section(&theirs, "serf")
                .into_iter()
                .find(|(tk, _)| *tk == k);
            assert_eq!(
                got,
                Some((k.clone(), v)),
                "serf info:\n{theirs}\nshoal info:\n{out}"
            );
        }
        assert_eq!(section(&theirs, "tags"), section(&out, "tags"));
    }
}
