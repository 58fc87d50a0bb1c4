//! `shoal agent`: start the node, the control API and the handlers; print the readiness line;
//! leave gracefully on SIGTERM/SIGINT (a second signal exits at once); reload on SIGHUP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_core::NodeHandle;
use shoal_proto::{Ready, ReadyLine};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{error, info, warn};

use crate::cli::AgentArgs;
use crate::config::{self, AgentConfig};
use crate::control::server::{ControlAddr, Limits, Listener};
use crate::control::{self, ControlState};
use crate::handlers::dispatch::{self, Counters, Settings};
use crate::handlers::filter::HandlerSpec;
use crate::logging::LogHandle;
use crate::role::RoleCell;
use crate::stream::events::EventStreams;
use crate::supervise::{self, App};
use crate::templates::{self, TemplateSpec};
use nix::sys::signal::Signal;

/// Longest a graceful leave may take before the agent exits anyway.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the agent until it has left; returns the exit status (the app's, when supervising).
pub async fn run(args: AgentArgs, cfg: AgentConfig, log: LogHandle) -> anyhow::Result<u8> {
    let mut running = start(&cfg, &log).await?;
    let stop = running.wait_for_stop(&args, &cfg, &log).await?;
    Ok(running.shut_down(stop, &cfg).await)
}

/// A started agent: the node and the tasks around it run; this is what is left to watch
/// and to stop.
struct Running {
    node: NodeHandle,
    /// SIGHUP sends the reloaded handler list to the dispatcher through this.
    handlers: watch::Sender<Arc<Vec<HandlerSpec>>>,
    /// SIGHUP sends the reloaded template list to the template task through this.
    templates: watch::Sender<Arc<Vec<TemplateSpec>>>,
    /// The control API says here that `/v1/leave` completed.
    left: mpsc::Receiver<()>,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// The supervised app, if any.
    app: Option<App>,
    /// The tags the configuration gave when last (re)loaded: SIGHUP applies only what
    /// changed since, so tags set at runtime with `shoal tags` survive a reload.
    config_tags: BTreeMap<String, String>,
    /// Whether SIGTERM and SIGINT leave before exiting (`leave_on_terminate`,
    /// `skip_leave_on_interrupt`), as last read: SIGHUP re-reads them, as in Serf.
    leave_on: LeaveOn,
    /// The control API's Unix socket file (`--control unix:PATH`), removed at exit.
    control_socket: Option<std::path::PathBuf>,
    /// The primary-group driver: a primary runs on-backup before the agent leaves.
    primary: Option<crate::primary::Handle>,
    /// The health checks; SIGHUP applies the reloaded ones.
    checks: crate::checks::Checks,
}

/// Binds the control address, starts the node, prints the readiness line, then starts the
/// handlers, the templates, the control API, the signal handlers and the app.
async fn start(cfg: &AgentConfig, log: &LogHandle) -> anyhow::Result<Running> {
    let node_cfg = cfg.node.clone();
    let control = Listener::bind(&cfg.control)
        .await
        .with_context(|| format!("cannot bind control address {}", cfg.control))?;
    let control_addr = control.address().context("control address")?;
    let control_socket = control.socket_path();
    let rpc_listener = match cfg.rpc_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind RPC address {addr}"))?,
        ),
        None => None,
    };
    let rpc_addr = match &rpc_listener {
        Some(l) => Some(l.local_addr().context("RPC address")?),
        None => None,
    };
    warn_if_exposed(cfg);
    let (node, events) = shoal_core::start(node_cfg).await?;
    let ready = ReadyLine {
        ready: Ready {
            advertise: node.advertise_addr(),
            control: control_addr.clone(),
            gossip: node.local_addr(),
            name: cfg.node.name.clone(),
        },
    };
    println!(
        "{}",
        serde_json::to_string(&ready).context("serialize the readiness line")?
    );
    info!(name = %cfg.node.name, gossip = %node.local_addr(), advertise = %node.advertise_addr(),
          control = %control_addr, profile = %cfg.node.profile, "agent ready");
    if let Some(addr) = rpc_addr {
        info!(rpc = %addr, "Serf RPC listening");
    }

    // The check runner and the primary-group settings change the announced role through it.
    let role = RoleCell::new(node.clone(), cfg.node.role.clone());
    let primary = cfg.primary.clone().map(|settings| {
        crate::primary::driver::spawn(node.clone(), role.clone(), settings, cfg.handler_timeout)
    });
    let checks = crate::checks::Checks::start(&cfg.checks, &role);
    let (handlers_tx, handlers_rx) = watch::channel(Arc::new(cfg.handlers.clone()));
    let counters = Arc::new(Counters::default());
    let streams = Arc::new(EventStreams::default());
    let settings = Settings {
        coalesce: cfg.coalesce,
        timeout: cfg.handler_timeout,
    };
    tokio::spawn(dispatch::run(
        events,
        node.clone(),
        handlers_rx.clone(),
        settings,
        counters.clone(),
        streams.clone(),
    ));
    let (templates_tx, templates_rx) = watch::channel(Arc::new(cfg.templates.clone()));
    tokio::spawn(templates::run(
        node.clone(),
        templates_rx,
        cfg.coalesce,
        cfg.handler_timeout,
    ));
    let (stopped_tx, stopped_rx) = mpsc::channel(1);
    let state = Arc::new(ControlState {
        node: node.clone(),
        name: cfg.node.name.clone(),
        profile: cfg.node.profile.to_string(),
        control: control_addr,
        counters,
        stopped: stopped_tx,
        tags_file: cfg.tags_file.clone(),
        handlers: handlers_rx,
        events: streams,
        monitors: log.monitors(),
        stream_slots: Arc::new(Semaphore::new(control::MAX_STREAMS)),
        token: cfg.control_token.as_ref().map(|t| t.token.clone()),
        warnings: Default::default(),
        role: role.clone(),
        primary: primary.clone(),
        checks: checks.board(),
    });
    let limits = Limits {
        header_timeout: cfg.control_header_timeout,
        max_connections: cfg.control_max_connections,
    };
    let rpc = Arc::new(crate::rpc::Rpc {
        control: state.clone(),
        auth: cfg
            .rpc_auth
            .clone()
            .or_else(|| cfg.control_token.as_ref().map(|t| t.token.clone())),
        handshake_timeout: cfg.control_header_timeout,
    });
    if let Some(listener) = rpc_listener {
        tokio::spawn(crate::rpc::serve(
            listener,
            rpc.clone(),
            cfg.control_max_connections,
        ));
    }
    let handoff: control::server::RpcHandoff =
        Arc::new(move |stream, peer| Box::pin(crate::rpc::serve_conn(stream, peer, rpc.clone())));
    tokio::spawn(control::server::serve(control, state, limits, handoff));

    let term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    crate::reaper::spawn_if_pid1();
    let app = match cfg.app.is_empty() {
        true => None,
        false => {
            Some(App::start(&cfg.app).with_context(|| format!("cannot start {:?}", cfg.app[0]))?)
        }
    };
    Ok(Running {
        node,
        handlers: handlers_tx,
        templates: templates_tx,
        left: stopped_rx,
        term,
        int,
        hup,
        app,
        config_tags: cfg.node.tags.clone(),
        leave_on: LeaveOn::from(cfg),
        control_socket,
        primary,
        checks,
    })
}

/// The loud warning for a control API anyone on the network may use: bound off loopback
/// with no token. And a quieter one for a token file other users can read.
fn warn_if_exposed(cfg: &AgentConfig) {
    if let ControlAddr::Tcp(addr) = &cfg.control
        && !addr.ip().is_loopback()
        && cfg.control_token.is_none()
    {
        warn!(control = %addr,
            "THE CONTROL API IS OPEN TO THE NETWORK WITHOUT A TOKEN: anyone who can reach it can \
             make this agent leave, force members out, change its tags, send events and queries \
             and have it dial any address. Set --control-token-file, or bind 127.0.0.1 or a \
             unix: socket");
    }
    if let Some(addr) = &cfg.rpc_addr
        && !addr.ip().is_loopback()
        && cfg.rpc_auth.is_none()
        && cfg.control_token.is_none()
    {
        warn!(rpc = %addr,
            "THE SERF RPC PORT IS OPEN TO THE NETWORK WITHOUT A KEY: anyone who can reach it can \
             make this agent leave, change its tags and send events and queries. Set --rpc-auth \
             or --control-token-file, or bind 127.0.0.1");
    }
    if let Some(token) = &cfg.control_token {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&token.file)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn!(file = %token.file.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the control token file is readable by other users: chmod 600 it");
        }
    }
}

impl Running {
    /// Serves until a signal, the app's exit or `/v1/leave` says to stop (SIGHUP reloads and
    /// carries on). A name conflict or a stopped node ends the agent here, with an error.
    async fn wait_for_stop(
        &mut self,
        args: &AgentArgs,
        cfg: &AgentConfig,
        log: &LogHandle,
    ) -> anyhow::Result<Stop> {
        let Running {
            node,
            handlers,
            templates,
            left,
            term,
            int,
            hup,
            app,
            config_tags,
            leave_on,
            checks,
            ..
        } = self;
        let mut view = node.watch();
        let stop = loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: stopping"); break Stop::Signal(Signal::SIGTERM); }
                _ = int.recv() => { info!("SIGINT: stopping"); break Stop::Signal(Signal::SIGINT); }
                _ = hup.recv() => {
                    if let Some(new) = reload(args, node, handlers, templates, log, config_tags).await {
                        *leave_on = LeaveOn::from(&new);
                        checks.reload(new.checks);
                    }
                    if let Some(app) = app.as_ref() {
                        app.signal(Signal::SIGHUP);
                    }
                }
                status = wait_app(app) => {
                    match &status {
                        Ok(status) => info!(%status, "the app exited: leaving the cluster"),
                        Err(error) => warn!(%error, "waiting for the app failed: leaving the cluster"),
                    }
                    break Stop::AppExited(supervise::exit_code(status.ok()));
                }
                _ = left.recv() => {
                    info!("left on request; exiting");
                    break Stop::Left;
                }
                changed = view.changed() => {
                    let (conflict, gave_up) = {
                        let v = view.borrow_and_update();
                        (v.conflict.clone(), v.gave_up_joining)
                    };
                    if changed.is_err() {
                        anyhow::bail!("the gossip node stopped unexpectedly");
                    }
                    if gave_up {
                        // Serf's behaviour: exit 1, so a supervisor restarts or alerts.
                        error!(retry_max = cfg.node.retry_max,
                            "no join target answered or resolved within --retry-max attempts; exiting");
                        break Stop::GaveUp;
                    }
                    if let Some(message) = conflict {
                        // The node is already leaving; let it finish, then exit non-zero.
                        let _ = tokio::time::timeout(LEAVE_DEADLINE, view.wait_for(|v| v.left)).await;
                        stop_app(app, Signal::SIGTERM, cfg).await;
                        node.shutdown().await;
                        anyhow::bail!("name conflict: {message}");
                    }
                }
            }
        };
        Ok(stop)
    }

    /// Leaves the cluster (unless `/v1/leave` already did), stops the app and the node;
    /// returns the exit status. A second SIGTERM or SIGINT during the leave exits at once.
    async fn shut_down(mut self, stop: Stop, cfg: &AgentConfig) -> u8 {
        let Running {
            node,
            term,
            int,
            app,
            control_socket,
            leave_on,
            primary,
            ..
        } = &mut self;
        // Keepalived runs notify_backup on shutdown: the address is released before the
        // others see this member leave and elect (~0.3 s), not after.
        if let Some(primary) = primary.as_ref() {
            tokio::select! {
                stepped = tokio::time::timeout(LEAVE_DEADLINE, primary.step_down()) => {
                    if stepped.is_err() {
                        warn!("the primary's on-backup did not finish in time; leaving anyway");
                    }
                }
                _ = term.recv() => return second_signal(app),
                _ = int.recv() => return second_signal(app),
            }
        }
        // `leave_on_terminate = false` / `skip_leave_on_interrupt = true` (Serf's keys): exit
        // without the leave, so the others see this member fail and keep expecting it back.
        let leave = match stop {
            Stop::Left | Stop::GaveUp => false,
            Stop::Signal(Signal::SIGTERM) => leave_on.terminate,
            Stop::Signal(Signal::SIGINT) => leave_on.interrupt,
            _ => true,
        };
        if !leave && matches!(stop, Stop::Signal(_)) {
            info!(
                "exiting without leaving the cluster (leave_on_terminate / skip_leave_on_interrupt)"
            );
        }
        if leave {
            tokio::select! {
                result = tokio::time::timeout(LEAVE_DEADLINE, node.leave()) => match result {
                    Ok(Ok(())) => info!("graceful leave complete"),
                    Ok(Err(e)) => warn!(error = %e, "leave failed"),
                    Err(_) => warn!("leave did not finish in time; exiting anyway"),
                },
                _ = term.recv() => return second_signal(app),
                _ = int.recv() => return second_signal(app),
            }
        }
        let code = match stop {
            Stop::AppExited(code) => code,
            Stop::Signal(sig) => {
                let code = stop_app(app, sig, cfg).await;
                if app.is_some() { code } else { 0 }
            }
            Stop::Left => {
                stop_app(app, Signal::SIGTERM, cfg).await;
                0
            }
            Stop::GaveUp => {
                stop_app(app, Signal::SIGTERM, cfg).await;
                1
            }
        };
        node.shutdown().await;
        if let Some(path) = control_socket.take() {
            let _ = std::fs::remove_file(path);
        }
        code
    }
}

/// Which stop signals leave the cluster first.
#[derive(Debug, Clone, Copy)]
struct LeaveOn {
    terminate: bool,
    interrupt: bool,
}

impl From<&AgentConfig> for LeaveOn {
    fn from(cfg: &AgentConfig) -> Self {
        Self {
            terminate: cfg.leave_on_terminate,
            interrupt: cfg.leave_on_interrupt,
        }
    }
}

/// Why the agent stops.
enum Stop {
    Signal(Signal),
    AppExited(u8),
    Left,
    /// Alone after `--retry-max` join attempts: exit 1 (nothing to leave).
    GaveUp,
}

async fn wait_app(app: &mut Option<App>) -> std::io::Result<std::process::ExitStatus> {
    match app {
        Some(app) => app.wait().await,
        None => std::future::pending().await,
    }
}

/// After the leave: wait `--stop-delay` (load balancers drop us first), then stop the app.
async fn stop_app(app: &mut Option<App>, sig: Signal, cfg: &AgentConfig) -> u8 {
    let Some(app) = app else {
        return 0;
    };
    tokio::time::sleep(cfg.stop_delay).await;
    info!(signal = sig.as_str(), "stopping the app");
    supervise::exit_code(app.stop(sig, cfg.stop_timeout).await)
}

/// A second signal: stop now, the app included.
fn second_signal(app: &Option<App>) -> u8 {
    warn!("second signal: exiting now");
    if let Some(app) = app {
        app.kill_all();
    }
    1
}

/// SIGHUP: re-reads the config files; applies handlers, templates, tags and log level. On
/// error the old configuration stays. Tags: what changed in the configuration since it was last
/// read is set or deleted (and kept in the tags file); tags set at runtime are left alone.
async fn reload(
    args: &AgentArgs,
    node: &NodeHandle,
    handlers: &watch::Sender<Arc<Vec<HandlerSpec>>>,
    templates: &watch::Sender<Arc<Vec<TemplateSpec>>>,
    log: &LogHandle,
    config_tags: &mut BTreeMap<String, String>,
) -> Option<AgentConfig> {
    if args.config.is_empty() {
        info!("SIGHUP: no --config file to reload");
        return None;
    }
    let cfg = match config::load(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            error!(error = %e, "SIGHUP: reload failed; keeping the current configuration");
            return None;
        }
    };
    if let Err(e) = log.set_level(&cfg.log_level) {
        error!(error = %e, "SIGHUP: log level not changed");
    }
    handlers.send_replace(Arc::new(cfg.handlers.clone()));
    templates.send_replace(Arc::new(cfg.templates.clone()));
    let (set, delete) = tag_changes(config_tags, &cfg.node.tags);
    if !set.is_empty() || !delete.is_empty() {
        match node.update_tags(set, delete).await {
            Ok(tags) => {
                *config_tags = cfg.node.tags.clone();
                if let Some(path) = &cfg.tags_file
                    && let Err(e) = crate::tags_file::save(path, &tags).await
                {
                    error!(error = %e, "SIGHUP: tags changed but not persisted");
                }
            }
            Err(e) => error!(error = %e, "SIGHUP: tags not changed"),
        }
    }
    info!(
        handlers = cfg.handlers.len(),
        tags = cfg.node.tags.len(),
        "SIGHUP: configuration reloaded"
    );
    Some(cfg)
}

/// What turns the tags `before` into `after`: the entries to set and the keys to delete.
fn tag_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let set = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    (set, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_changes_only_the_tags_the_configuration_changed() {
        let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let before = tags(&[("role", "old"), ("dc", "east"), ("gone", "x")]);
        let after = tags(&[("role", "new"), ("dc", "east"), ("zone", "a")]);
        let (set, delete) = tag_changes(&before, &after);
        assert_eq!(set, tags(&[("role", "new"), ("zone", "a")]));
        assert_eq!(delete, vec!["gone".to_string()]);
        assert_eq!(tag_changes(&after, &after), (BTreeMap::new(), Vec::new()));
    }
}
