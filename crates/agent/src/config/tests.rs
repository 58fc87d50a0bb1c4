//! Tests of the configuration: precedence, validation and the errors' wording.

use super::*;

fn args() -> AgentArgs {
    AgentArgs::default()
}

#[test]
fn defaults_follow_serf_with_shoal_ports() {
    let cfg = resolve(&args(), FileConfig::default()).expect("valid");
    assert_eq!(cfg.node.bind, "0.0.0.0:7948".parse().expect("addr"));
    assert_eq!(
        cfg.control,
        ControlAddr::Tcp("127.0.0.1:7373".parse().expect("addr"))
    );
    assert!(cfg.control_token.is_none());
    assert_eq!(cfg.control_header_timeout, Duration::from_secs(10));
    assert_eq!(cfg.control_max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(cfg.coalesce, Duration::from_millis(100));
    assert_eq!(cfg.node.profile, Profile::Lan);
    assert!(!cfg.node.name.is_empty());
}

#[test]
fn flags_override_file_and_lists_append() {
    let file: FileConfig = toml::from_str(
        "node = \"from-file\"\njoin = [\"a:1\"]\n[tags]\nrole = \"db\"\nzone = \"x\"\n",
    )
    .expect("toml");
    let mut a = args();
    a.node = Some("from-flag".into());
    a.join = vec!["b:2".into()];
    a.tags = vec!["role=web".into()];
    let cfg = resolve(&a, file).expect("valid");
    assert_eq!(cfg.node.name, "from-flag");
    assert_eq!(cfg.node.join, vec!["a:1", "b:2"]);
    assert_eq!(cfg.node.tags["role"], "web");
    assert_eq!(cfg.node.tags["zone"], "x");
}

#[test]
fn malformed_values_name_the_setting() {
    let mut a = args();
    a.tags = vec!["novalue".into()];
    let err = resolve(&a, FileConfig::default())
        .expect_err("bad tag")
        .to_string();
    assert!(err.contains("--tag") && err.contains("KEY=VALUE"), "{err}");
    let mut a = args();
    a.coalesce = Some("soon".into());
    let err = resolve(&a, FileConfig::default())
        .expect_err("bad duration")
        .to_string();
    assert!(err.contains("--coalesce"), "{err}");
    let mut a = args();
    a.event_handlers = vec!["member-jion=./x.sh".into()];
    let err = resolve(&a, FileConfig::default())
        .expect_err("bad filter")
        .to_string();
    assert!(err.contains("member-jion"), "{err}");
}

#[test]
fn every_file_key_takes_effect() {
    let text = r#"
        node = "n"
        bind = "127.0.0.1:1000"
        iface = "lo"
        advertise = "127.0.0.1:1001"
        join = ["a:1"]
        event_handlers = ["member-join=x"]
        templates = ["a:b"]
        profile = "wan"
        control = "127.0.0.1:1002"
        control_header_timeout = "2s"
        control_max_connections = 7
        log_level = "debug"
        log_format = "json"
        handler_timeout = "5s"
        coalesce = "0"
        retry_max = 3
        retry_interval = "2s"
        reconnect_timeout = "1h"
        tombstone_timeout = "2h"
        snapshot = "/tmp/s.json"
        rejoin = true
        replay = true
        discover = "prod"
        stop_delay = "3s"
        stop_timeout = "4s"
        tags_file = "/nonexistent/tags.json"
        encrypt = "cg8StVXbQJ0gPvMd9pJItg=="
        encrypt_accept_plaintext = true
        encrypt_send_plaintext = true
        cluster = "prod-eu"
        leave_on_terminate = false
        skip_leave_on_interrupt = true
        [tags]
        role = "web"
    "#;
    let mut file = FileConfig::default();
    file.merge(toml::from_str(text).expect("toml"));
    let cfg = resolve(&args(), file).expect("valid");
    assert_eq!(cfg.node.name, "n");
    assert_eq!(cfg.node.bind.port(), 1000);
    assert_eq!(cfg.node.advertise.map(|a| a.port()), Some(1001));
    assert_eq!(cfg.node.join, vec!["a:1"]);
    assert_eq!(cfg.handlers.len(), 1);
    assert_eq!(cfg.templates.len(), 1);
    assert_eq!(cfg.node.profile, Profile::Wan);
    assert_eq!(
        cfg.control,
        ControlAddr::Tcp("127.0.0.1:1002".parse().expect("addr"))
    );
    assert_eq!(cfg.control_header_timeout, Duration::from_secs(2));
    assert_eq!(cfg.control_max_connections, 7);
    assert_eq!(cfg.log_level, "debug");
    assert_eq!(cfg.log_format, LogFormat::Json);
    assert_eq!(cfg.handler_timeout, Duration::from_secs(5));
    assert_eq!(cfg.coalesce, Duration::ZERO);
    assert_eq!(cfg.node.retry_max, 3);
    assert_eq!(cfg.node.retry_interval, Some(Duration::from_secs(2)));
    assert_eq!(cfg.node.reconnect_timeout, Duration::from_secs(3600));
    assert_eq!(cfg.node.tombstone_timeout, Duration::from_secs(7200));
    assert_eq!(cfg.node.snapshot, Some(PathBuf::from("/tmp/s.json")));
    assert!(cfg.node.rejoin);
    assert!(cfg.node.replay);
    assert_eq!(cfg.node.discover.as_deref(), Some("prod"));
    assert_eq!(cfg.stop_delay, Duration::from_secs(3));
    assert_eq!(cfg.stop_timeout, Duration::from_secs(4));
    assert_eq!(cfg.node.tags["role"], "web");
    assert_eq!(cfg.tags_file, Some(PathBuf::from("/nonexistent/tags.json")));
    assert_eq!(cfg.node.keyring.map(|r| r.keys().len()), Some(1));
    assert!(cfg.node.accept_plaintext);
    assert!(cfg.node.send_plaintext);
    assert_eq!(cfg.node.cluster, "prod-eu");
    assert!(!cfg.leave_on_terminate);
    assert!(!cfg.leave_on_interrupt);
}

#[test]
fn encryption_settings_are_checked_and_an_existing_keyring_file_wins() {
    let k1 = "HvY8ubRZMgafUOWvrOadwOckVa1wN3QWAo46FVKbVN8=";
    let k2 = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
    let mut a = args();
    a.encrypt = Some("bm90IGEga2V5".into());
    let err = resolve(&a, FileConfig::default())
        .expect_err("short key")
        .to_string();
    assert!(
        err.contains("--encrypt") && err.contains("16, 24 or 32"),
        "{err}"
    );
    assert!(
        !err.contains("bm90IGEga2V5"),
        "the key is not echoed: {err}"
    );
    let mut a = args();
    a.encrypt_accept_plaintext = true;
    let err = resolve(&a, FileConfig::default())
        .expect_err("no key")
        .to_string();
    assert!(err.contains("--encrypt-accept-plaintext"), "{err}");
    let mut a = args();
    a.cluster = Some("a b".into());
    let err = resolve(&a, FileConfig::default())
        .expect_err("label")
        .to_string();
    assert!(err.contains("--cluster"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keyring.json");
    let mut a = args();
    a.keyring_file = Some(path.clone());
    let err = resolve(&a, FileConfig::default())
        .expect_err("no key anywhere")
        .to_string();
    assert!(
        err.contains("--keyring-file") && err.contains("no key"),
        "{err}"
    );
    a.encrypt = Some(k1.into());
    let cfg = resolve(&a, FileConfig::default()).expect("creates from --encrypt");
    let ring = cfg.node.keyring.expect("ring");
    assert_eq!(ring.primary().to_base64(), k1);
    std::fs::write(&path, format!("[\"{k2}\", \"{k1}\"]")).expect("write");
    let cfg = resolve(&a, FileConfig::default()).expect("file wins");
    let ring = cfg.node.keyring.expect("ring");
    assert_eq!(ring.primary().to_base64(), k2);
    assert_eq!(ring.keys().len(), 2);
}

#[test]
fn a_tags_file_wins_over_tag_flags_and_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tags.json");
    let mut a = args();
    a.tags = vec!["role=flag".into()];
    a.tags_file = Some(path.clone());
    let cfg = resolve(&a, FileConfig::default()).expect("no file yet");
    assert_eq!(cfg.node.tags["role"], "flag");
    assert_eq!(cfg.tags_file.as_deref(), Some(path.as_path()));
    std::fs::write(&path, r#"{"role":"kept"}"#).expect("write");
    let cfg = resolve(&a, FileConfig::default()).expect("valid");
    assert_eq!(
        cfg.node.tags,
        BTreeMap::from([("role".into(), "kept".into())])
    );
    std::fs::write(&path, "not json").expect("write");
    let err = resolve(&a, FileConfig::default())
        .expect_err("corrupt")
        .to_string();
    assert!(
        err.contains("--tags-file") && err.contains("tags.json"),
        "{err}"
    );
}

#[test]
fn the_sample_config_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shoal.toml");
    let cfg = resolve(&args(), FileConfig::load(&path).expect("parses")).expect("valid");
    assert_eq!(cfg.node.name, "web-1");
    assert_eq!(cfg.handlers.len(), 2);
}

#[test]
fn a_unix_control_address_and_a_token_file_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("write");
    let file: FileConfig = toml::from_str(&format!(
        "control = \"unix:/run/shoal.sock\"\ncontrol_token_file = {:?}\n",
        token.display().to_string()
    ))
    .expect("toml");
    let cfg = resolve(&args(), file).expect("valid");
    assert_eq!(cfg.control, ControlAddr::Unix("/run/shoal.sock".into()));
    assert_eq!(cfg.control.to_string(), "unix:/run/shoal.sock");
    let kept = cfg.control_token.expect("token");
    assert_eq!(kept.token, "s3cret");
    assert!(!format!("{kept:?}").contains("s3cret"));
    let mut a = args();
    a.control = Some("unix:".into());
    let err = resolve(&a, FileConfig::default()).expect_err("no path");
    assert!(err.to_string().contains("--control"), "{err}");
    std::fs::write(&token, "\n").expect("write");
    let mut a = args();
    a.control_token_file = Some(token.clone());
    let err = resolve(&a, FileConfig::default()).expect_err("empty token");
    assert!(
        err.to_string().contains("--control-token-file") && err.to_string().contains("empty"),
        "{err}"
    );
}

/// Issue 10: names and tags with control characters are refused at the door.
#[test]
fn unsafe_names_and_tags_are_refused_naming_the_setting() {
    let mut a = args();
    a.node = Some("web-9\n    server evil 6.6.6.6:80 check\n#".into());
    let err = resolve(&a, FileConfig::default())
        .expect_err("newline")
        .to_string();
    assert!(err.contains("--node") && err.contains("'\\n'"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let mut a = args();
    a.tags = vec!["http_port=80\u{1b}[2J".into()];
    let err = resolve(&a, FileConfig::default())
        .expect_err("escape")
        .to_string();
    assert!(
        err.contains("--tag") && err.contains("control character"),
        "{err}"
    );
    let file: FileConfig = toml::from_str("[tags]\n\"bad key\" = \"v\"\n").expect("toml");
    let err = resolve(&args(), file)
        .expect_err("space in key")
        .to_string();
    assert!(err.contains("--tag") && err.contains("bad key"), "{err}");
    let file: FileConfig = toml::from_str("node = \"a/b\"\n").expect("toml");
    let err = resolve(&args(), file).expect_err("slash").to_string();
    assert!(err.contains("--node") && err.contains("'/'"), "{err}");
}

#[test]
fn unknown_file_keys_are_errors() {
    let err = toml::from_str::<FileConfig>("nodee = \"x\"\n").expect_err("typo");
    assert!(err.to_string().contains("nodee"), "{err}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn load_files(paths: Vec<PathBuf>) -> Result<AgentConfig, ConfigError> {
    let mut a = args();
    a.config = paths;
    load(&a)
}

/// Issue 11: the example config file of Serf's documentation ("Configuration Files").
#[test]
fn serf_documentation_example_file_gives_its_tags_and_handlers() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "serf.json",
        r#"{
  "tags": {
    "role": "load-balancer",
    "datacenter": "east"
  },
  "event_handlers": [
    "handle.sh",
    "user:deploy=deploy.sh"
  ]
}"#,
    );
    let cfg = load_files(vec![path]).expect("valid");
    assert_eq!(cfg.node.tags["role"], "load-balancer");
    assert_eq!(cfg.node.tags["datacenter"], "east");
    let scripts: Vec<_> = cfg.handlers.iter().map(|h| h.script.as_str()).collect();
    assert_eq!(scripts, ["handle.sh", "deploy.sh"]);
    assert!(cfg.leave_on_terminate && cfg.leave_on_interrupt);
}

#[test]
fn serf_keys_map_to_shoal_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "agent.json",
        r#"{"node_name": "web-1", "bind": "127.0.0.1:7946", "advertise": "127.0.0.2",
            "role": "web", "start_join": ["10.0.0.1:7946"], "retry_join": ["10.0.0.2"],
            "retry_max_attempts": 3, "retry_interval": "30s", "rejoin_after_leave": true,
            "replay_on_join": true, "reconnect_timeout": "1h30m", "tombstone_timeout": "48h",
            "snapshot_path": "snap", "rpc_addr": "127.0.0.1:7373", "rpc_auth": "secret",
            "log_level": "ERR", "profile": "wan", "leave_on_terminate": false,
            "skip_leave_on_interrupt": true, "disable_coordinates": true}"#,
    );
    let cfg = resolve(&args(), FileConfig::load(&path).expect("parse")).expect("valid");
    assert_eq!(cfg.node.name, "web-1");
    assert_eq!(cfg.node.bind, "127.0.0.1:7946".parse().expect("addr"));
    assert_eq!(
        cfg.node.advertise,
        Some("127.0.0.2:7946".parse().expect("addr"))
    );
    assert_eq!(cfg.node.tags["role"], "web");
    assert_eq!(cfg.node.join, ["10.0.0.1:7946", "10.0.0.2"]);
    assert_eq!(cfg.node.retry_max, 3);
    assert_eq!(cfg.node.retry_interval, Some(Duration::from_secs(30)));
    assert!(cfg.node.rejoin && cfg.node.replay);
    assert_eq!(cfg.node.reconnect_timeout, Duration::from_secs(5400));
    assert_eq!(cfg.node.tombstone_timeout, Duration::from_secs(48 * 3600));
    assert_eq!(cfg.node.snapshot, Some(PathBuf::from("snap")));
    assert_eq!(cfg.node.profile, Profile::Wan);
    assert_eq!(
        cfg.rpc_addr, None,
        "the control port already serves Serf's RPC there"
    );
    assert_eq!(cfg.rpc_auth.as_deref(), Some("secret"));
    assert_eq!(cfg.log_level, "ERR");
    assert!(!cfg.leave_on_terminate && !cfg.leave_on_interrupt);
}

/// Serf merges a config dir's files in lexical order: scalars replaced, tags merged by key,
/// handlers and join targets appended. Other files and subdirectories are skipped.
#[test]
fn a_config_dir_merges_json_and_toml_in_lexical_order() {
    let dir = tempfile::tempdir().expect("dir");
    write(
        dir.path(),
        "10-base.json",
        r#"{"node_name": "first", "tags": {"role": "web", "dc": "east"},
            "event_handlers": ["a.sh"], "start_join": ["10.0.0.1"]}"#,
    );
    write(
        dir.path(),
        "20-more.toml",
        "node = \"second\"\nevent_handlers = [\"b.sh\"]\njoin = [\"10.0.0.2\"]\n[tags]\nrole = \"db\"\n",
    );
    write(
        dir.path(),
        "30-last.json",
        r#"{"retry_join": ["10.0.0.3"]}"#,
    );
    write(dir.path(), "README", "not a config file");
    std::fs::create_dir(dir.path().join("sub.json")).expect("subdir");
    let cfg = load_files(vec![dir.path().to_path_buf()]).expect("valid");
    assert_eq!(cfg.node.name, "second");
    assert_eq!(cfg.node.tags["role"], "db");
    assert_eq!(cfg.node.tags["dc"], "east");
    let scripts: Vec<_> = cfg.handlers.iter().map(|h| h.script.as_str()).collect();
    assert_eq!(scripts, ["a.sh", "b.sh"]);
    assert_eq!(cfg.node.join, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
}

#[test]
fn an_unknown_or_unsupported_serf_key_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "bad.json",
        r#"{"node_name": "x", "retry_max": 3}"#,
    );
    let err = load_files(vec![path.clone()])
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("\"retry_max\""), "{err}");
    assert!(err.contains("retry_max_attempts"), "{err}");
    let path = write(dir.path(), "syslog.json", r#"{"enable_syslog": true}"#);
    let err = load_files(vec![path]).expect_err("refused").to_string();
    assert!(
        err.contains("syslog.json") && err.contains("\"enable_syslog\""),
        "{err}"
    );
    assert!(err.contains("not supported"), "{err}");
    let path = write(dir.path(), "types.json", r#"{"tags": ["role"]}"#);
    let err = load_files(vec![path]).expect_err("refused").to_string();
    assert!(err.contains("types.json"), "{err}");
    let path = write(dir.path(), "x.toml", "nod = \"x\"\n");
    let err = load_files(vec![path]).expect_err("refused").to_string();
    assert!(err.contains("x.toml") && err.contains("nod"), "{err}");
}

#[test]
fn json_is_recognised_by_content_without_an_extension() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(dir.path(), "serf.conf", "  {\"node_name\": \"by-content\"}");
    let cfg = load_files(vec![path]).expect("valid");
    assert_eq!(cfg.node.name, "by-content");
}

/// Serf's durations are Go strings: whole units, combined, and fractions.
#[test]
fn go_duration_strings_in_a_serf_file_are_read() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(
        dir.path(),
        "d.json",
        r#"{"reconnect_timeout": "1h30m", "tombstone_timeout": "1.5h", "retry_interval": "500ms"}"#,
    );
    let cfg = load_files(vec![path]).expect("valid");
    assert_eq!(cfg.node.reconnect_timeout, Duration::from_secs(5400));
    assert_eq!(cfg.node.tombstone_timeout, Duration::from_secs(5400));
    assert_eq!(cfg.node.retry_interval, Some(Duration::from_millis(500)));
}
