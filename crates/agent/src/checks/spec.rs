//! What a health check is: `--check NAME=SPEC` (and a `[[check]]` table) parsed into a
//! [`CheckSpec`], every problem said in words that name it (an unknown kind, a URL that is not
//! `http://`, a missing port).

use std::time::Duration;

use shoal_core::role::safe_name;

/// The shortest timeout a check may have (`--check-timeout`).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The shortest interval between runs.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The largest `rise` / `fall` count.
pub const MAX_COUNT: u32 = 1000;

/// One health check, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Its name: the key of its state in the member's role.
    pub name: String,
    /// What it runs.
    pub kind: Kind,
    /// How often and how patiently it runs, and how many results change its state.
    pub timing: Timing,
}

/// How often a check runs, how long one run may take, and Keepalived's rise/fall counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From one run's start to the next's (a run that takes longer delays the next).
    pub interval: Duration,
    /// A run still going past this counts critical (a script's process group is killed).
    pub timeout: Duration,
    /// Consecutive better results needed before the state gets better.
    pub rise: u32,
    /// Consecutive worse results needed before the state gets worse.
    pub fall: u32,
}

impl Default for Timing {
    /// `--check-interval 1s --check-timeout 1s --check-rise 1 --check-fall 1`.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }
}

impl Timing {
    /// Checks the limits; a problem names the setting (`interval`, `timeout`, `rise` or
    /// `fall`) and says what it must be.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval < MIN_INTERVAL {
            return Err((
                "interval",
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ),
            ));
        }
        if self.timeout < MIN_TIMEOUT {
            return Err((
                "timeout",
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_TIMEOUT)
                ),
            ));
        }
        for (what, n) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_COUNT).contains(&n) {
                return Err((what, format!("must be 1 to {MAX_COUNT}")));
            }
        }
        Ok(())
    }
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `sh -c CMD`: exit 0 passing, 1 warning, anything else (a signal, the timeout) critical.
    Script(String),
    /// `GET URL`: 2xx passing, 429 warning, anything else or no answer critical.
    Http(HttpTarget),
    /// A TCP connection made within the timeout: passing, else critical.
    Tcp(Endpoint),
}

/// Where an HTTP check asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as given.
    pub url: String,
    /// The host and port to connect to.
    pub endpoint: Endpoint,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    /// The path and query asked for (`/` if the URL has none).
    pub path: String,
}

/// A host (name or IP, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Name or address.
    pub host: String,
    /// Port, not 0.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

const KINDS: &str = "expected script:CMD, http:URL or tcp:HOST:PORT";

impl Kind {
    /// `script:CMD`, `http:URL` or `tcp:HOST:PORT`.
    pub fn parse(spec: &str) -> Result<Kind, String> {
        let Some((kind, rest)) = spec.split_once(':') else {
            return Err(format!("no check kind: {KINDS}"));
        };
        match kind {
            "script" => Kind::script(rest),
            "http" => Kind::http(rest),
            "tcp" => Kind::tcp(rest),
            "https" => Err(format!(
                "https is not supported: {KINDS} with an http:// URL (for TLS, a script \
                 check such as script:curl -fsS https://...)"
            )),
            other => Err(format!("unknown check kind {other:?}: {KINDS}")),
        }
    }

    /// A script check of `cmd`, not blank.
    pub fn script(cmd: &str) -> Result<Kind, String> {
        match cmd.trim().is_empty() {
            true => Err("script: needs a command (script:CMD, run with sh -c)".into()),
            false => Ok(Kind::Script(cmd.to_string())),
        }
    }

    /// An HTTP check of `url`: `http://HOST[:PORT][/PATH]`.
    pub fn http(url: &str) -> Result<Kind, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("http: needs a URL (http:http://HOST[:PORT]/PATH)".into());
        }
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("bad URL {url:?}: {e} (expected http://HOST[:PORT]/PATH)"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https is not supported (the check speaks plain HTTP; for TLS use \
                     a script check such as script:curl -fsS https://...)"
                ));
            }
            Some(other) => return Err(format!("{url:?}: scheme {other:?} is not http")),
            None => {
                return Err(format!(
                    "{url:?} has no scheme: expected http://HOST[:PORT]/PATH"
                ));
            }
        }
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(format!("{url:?} has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: user information in the URL is not supported"
            ));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match uri.port_u16() {
            Some(0) => return Err(format!("{url:?}: port 0 cannot be asked")),
            Some(port) => port,
            None => 80,
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Kind::Http(HttpTarget {
            url: url.to_string(),
            endpoint: Endpoint {
                host: host.to_string(),
                port,
            },
            authority: authority.as_str().to_string(),
            path: if path.is_empty() { "/".into() } else { path },
        }))
    }

    /// A TCP check of `HOST:PORT` (`[V6]:PORT` for an IPv6 address).
    pub fn tcp(text: &str) -> Result<Kind, String> {
        let text = text.trim();
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => (host, port),
            _ => return Err(format!("tcp:{text}: missing port: expected tcp:HOST:PORT")),
        };
        let host = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .ok_or_else(|| format!("tcp:{text}: unclosed '[' in the address"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "tcp:{text}: write an IPv6 address in brackets: tcp:[::1]:PORT"
                ));
            }
            None => host,
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("tcp:{text}: port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 || host.is_empty() {
            return Err(format!(
                "tcp:{text}: expected a host and a port from 1 to 65535"
            ));
        }
        Ok(Kind::Tcp(Endpoint {
            host: host.to_string(),
            port,
        }))
    }

    /// `script`, `http` or `tcp`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Script(_) => "script",
            Kind::Http(_) => "http",
            Kind::Tcp(_) => "tcp",
        }
    }

    /// What it runs or asks: the command, the URL, `HOST:PORT`.
    pub fn target(&self) -> String {
        match self {
            Kind::Script(cmd) => cmd.clone(),
            Kind::Http(t) => t.url.clone(),
            Kind::Tcp(e) => e.to_string(),
        }
    }
}

/// A check's name: the node-name character set, 1 to 128 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    match safe_name(name) {
        true => Ok(()),
        false => Err(format!(
            "check name {name:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.'"
        )),
    }
}

/// `NAME=SPEC` (the `--check` flag) with the flags' timing.
pub fn parse_flag(text: &str, timing: Timing) -> Result<CheckSpec, String> {
    let Some((name, spec)) = text.split_once('=') else {
        return Err("expected NAME=SPEC, e.g. web=http:http://127.0.0.1:8080/health".into());
    };
    check_name(name)?;
    Ok(CheckSpec {
        name: name.to_string(),
        kind: Kind::parse(spec)?,
        timing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(spec: &str) -> Result<Kind, String> {
        Kind::parse(spec)
    }

    #[test]
    fn the_three_kinds_parse() {
        assert_eq!(kind("script:exit 1"), Ok(Kind::Script("exit 1".into())));
        let Ok(Kind::Http(t)) = kind("http:http://127.0.0.1:8080/health?full=1") else {
            panic!("http");
        };
        assert_eq!(t.endpoint.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/health?full=1")
        );
        let Ok(Kind::Http(t)) = kind("http:http://localhost") else {
            panic!("http");
        };
        assert_eq!((t.endpoint.port, t.path.as_str()), (80, "/"));
        let Ok(Kind::Http(t)) = kind("http:http://[::1]:9/x") else {
            panic!("http");
        };
        assert_eq!(t.endpoint.host, "::1");
        assert_eq!(
            kind("tcp:127.0.0.1:5432"),
            Ok(Kind::Tcp(Endpoint {
                host: "127.0.0.1".into(),
                port: 5432
            }))
        );
        assert_eq!(
            kind("tcp:[::1]:22").map(|k| k.target()),
            Ok("[::1]:22".into())
        );
        assert_eq!(kind("tcp:db.internal:5432").map(|k| k.name()), Ok("tcp"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |spec: &str| kind(spec).expect_err(spec);
        assert!(
            err("ftp:x").starts_with("unknown check kind \"ftp\""),
            "{}",
            err("ftp:x")
        );
        assert!(err("exit 0").starts_with("no check kind"));
        assert!(err("script:  ").contains("needs a command"));
        assert!(err("http:https://example.com/").contains("https is not supported"));
        assert!(err("https://example.com/").contains("https is not supported"));
        assert!(err("http:127.0.0.1:80/x").contains("expected http://"));
        assert!(
            err("http:localhost").contains("no scheme"),
            "{}",
            err("http:localhost")
        );
        assert!(err("http:ftp://h/").contains("is not http"));
        assert!(err("http:http://u:p@h/").contains("user information"));
        assert!(err("http:").contains("needs a URL"));
        assert!(err("tcp:127.0.0.1").contains("missing port"));
        assert!(err("tcp::80").contains("missing port"));
        assert!(err("tcp:h:http").contains("not a number"));
        assert!(err("tcp:h:0").contains("from 1 to 65535"));
        assert!(err("tcp:h:70000").contains("not a number"));
        assert!(err("tcp:::1:22").contains("brackets"));
        assert!(err("tcp:[::1:22").contains("unclosed"));
    }

    #[test]
    fn a_flag_is_name_equals_spec_with_a_safe_name() {
        let spec = parse_flag("db=tcp:127.0.0.1:5432", Timing::default()).expect("ok");
        assert_eq!(spec.name, "db");
        assert!(
            parse_flag("tcp:127.0.0.1:5432", Timing::default())
                .expect_err("no name")
                .contains("NAME=SPEC")
        );
        assert!(
            parse_flag("bad name=script:true", Timing::default())
                .expect_err("bad name")
                .contains("check name \"bad name\"")
        );
        assert!(parse_flag("=script:true", Timing::default()).is_err());
    }

    #[test]
    fn timing_limits_are_named() {
        let ok = Timing::default();
        assert_eq!(ok.validate(), Ok(()));
        let short = Timing {
            timeout: Duration::from_millis(5),
            ..ok
        };
        assert_eq!(
            short.validate(),
            Err(("timeout", "must be at least 10ms".into()))
        );
        let zero = Timing { fall: 0, ..ok };
        assert_eq!(zero.validate(), Err(("fall", "must be 1 to 1000".into())));
        let never = Timing {
            interval: Duration::ZERO,
            ..ok
        };
        assert_eq!(never.validate().map_err(|e| e.0), Err("interval"));
    }
}
