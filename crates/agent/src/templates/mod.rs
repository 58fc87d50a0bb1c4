//! `--template SRC:DEST[:COMMAND]`: files rendered from the member view whenever it changes.
//!
//! Rendering happens in the `shoal-template` helper binary (see [`render`]), run once per
//! change with the view as JSON on stdin: the template engine then costs an agent nothing
//! when it has no templates (its idle memory is mostly the pages of its own binary), and a
//! template can never take the agent down.
//!
//! Templates use Jinja2 syntax (minijinja). The context holds `members` (every member: `name`,
//! `addr` ("ip:port"), `ip`, `port`, `status`, `tags`) and `local` (this agent, same fields).
//! DEST is written atomically (temporary file + rename) and only when its content changed,
//! through a symbolic link to the file it names, keeping that file's mode and owner (see
//! [`write`]); then COMMAND runs through `sh -c` (say, a hitless HAProxy reload). A template that does not
//! compile or render is reported with its file and line, and the last good DEST stays.
//! Block tags trim their own line (`trim_blocks`, `lstrip_blocks`), as config files want.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_core::{NodeHandle, View};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{error, info};

use crate::shell::{self, Job, Outcome};

/// A malformed `--template` value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not `SRC:DEST[:COMMAND]`.
    #[error("expected SRC:DEST[:COMMAND]")]
    Shape,
}

/// Why one template was not applied. The last good DEST stays and COMMAND does not run.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// The view could not be encoded as the helper's JSON context.
    #[error(transparent)]
    Context(serde_json::Error),
    /// The `shoal-template` helper could not be started.
    #[error("cannot run the template renderer {}: {source}", .helper.display())]
    Spawn {
        /// The helper tried.
        helper: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Feeding the helper its context or collecting its output failed.
    #[error(transparent)]
    Helper(std::io::Error),
    /// The helper took longer than `RENDER_TIMEOUT` (10 s); it was killed.
    #[error("rendering {} took over {} s", .src.display(), RENDER_TIMEOUT.as_secs())]
    TimedOut {
        /// The template.
        src: PathBuf,
    },
    /// The rendering is not UTF-8.
    #[error("{} rendered invalid UTF-8", .src.display())]
    NotUtf8 {
        /// The template.
        src: PathBuf,
    },
    /// The template does not compile or render: the helper's stderr, with file and line.
    #[error("{0}")]
    Render(String),
    /// The task writing DEST did not finish (it panicked or the runtime is stopping).
    #[error(transparent)]
    Writer(tokio::task::JoinError),
    /// DEST could not be written.
    #[error("cannot write {}: {source}", .dest.display())]
    Write {
        /// The rendered file.
        dest: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Longest a `shoal-template` run may take.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

/// One `--template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The template file.
    pub src: PathBuf,
    /// The rendered file.
    pub dest: PathBuf,
    /// Run after DEST changed.
    pub command: Option<String>,
}

impl TemplateSpec {
    /// Parses `SRC:DEST[:COMMAND]`; the command is everything after the second colon, so it may
    /// contain colons itself.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let mut parts = spec.splitn(3, ':');
        let src = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(SpecError::Shape)?;
        let dest = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(SpecError::Shape)?;
        let command = parts
            .next()
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string);
        Ok(Self {
            src: src.into(),
            dest: dest.into(),
            command,
        })
    }
}

/// Renders one template; writes DEST if it changed. Returns whether it was written.
async fn apply(spec: &TemplateSpec, view: &View) -> Result<bool, TemplateError> {
    let text = render_with_helper(&spec.src, view).await?;
    if tokio::fs::read_to_string(&spec.dest)
        .await
        .is_ok_and(|old| old == text)
    {
        return Ok(false);
    }
    let dest = spec.dest.clone();
    tokio::task::spawn_blocking(move || write::write_dest(&dest, text.as_bytes()))
        .await
        .map_err(TemplateError::Writer)?
        .map_err(|source| TemplateError::Write {
            dest: spec.dest.clone(),
            source,
        })?;
    Ok(true)
}

/// The `shoal-template` binary: beside the running `shoal`, else on `PATH`.
fn helper() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("shoal-template")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "shoal-template".into())
}

/// Runs `shoal-template SRC` with the view on stdin; its stdout is the rendering, its stderr
/// the error (with file and line).
async fn render_with_helper(src: &Path, view: &View) -> Result<String, TemplateError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let context = serde_json::to_vec(&render::Context::of(view)).map_err(TemplateError::Context)?;
    let helper = helper();
    let mut child = tokio::process::Command::new(&helper)
        .arg(src)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TemplateError::Spawn {
            helper: helper.clone(),
            source,
        })?;
    let pid = child.id();
    crate::reaper::register(pid);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&context)
            .await
            .map_err(TemplateError::Helper)?;
    }
    let out = tokio::time::timeout(RENDER_TIMEOUT, child.wait_with_output()).await;
    crate::reaper::unregister(pid);
    let out = out
        .map_err(|_| TemplateError::TimedOut { src: src.into() })?
        .map_err(TemplateError::Helper)?;
    if out.status.success() {
        String::from_utf8(out.stdout).map_err(|_| TemplateError::NotUtf8 { src: src.into() })
    } else {
        Err(TemplateError::Render(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

async fn render_all(specs: &[TemplateSpec], view: &View, timeout: Duration) {
    for spec in specs {
        match apply(spec, view).await {
            Ok(false) => {}
            Ok(true) => {
                info!(template = %spec.src.display(), dest = %spec.dest.display(), "template rendered");
                if let Some(command) = &spec.command {
                    let job = Job {
                        event: "template".into(),
                        env: vec![(
                            "SHOAL_TEMPLATE_DEST".into(),
                            spec.dest.display().to_string(),
                        )],
                        ..Job::default()
                    };
                    if shell::run(command, job, timeout).await != Outcome::Exited(Some(0)) {
                        error!(command, "template command failed");
                    }
                }
            }
            Err(e) => error!(error = %e, "template error; the last good file stays"),
        }
    }
}

/// Renders every template now and whenever the view (after a quiet `coalesce` window) or the
/// template list changes. Runs until the node stops.
pub async fn run(
    node: NodeHandle,
    mut specs: watch::Receiver<Arc<Vec<TemplateSpec>>>,
    coalesce: Duration,
    timeout: Duration,
) {
    let mut view = node.watch();
    loop {
        let list = specs.borrow_and_update().clone();
        let current = view.borrow_and_update().clone();
        render_all(&list, &current, timeout).await;
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                // Quiet window: render once for a burst of changes.
                loop {
                    tokio::select! {
                        more = view.changed() => if more.is_err() { return },
                        _ = tokio::time::sleep(coalesce) => break,
                    }
                }
            }
            changed = specs.changed() => if changed.is_err() { return },
        }
    }
}

pub mod render;
pub mod write;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_at_the_first_two_colons() {
        let s = TemplateSpec::parse("a.tmpl:/etc/b.cfg:kill -USR2 $(cat /run/x:y)").expect("ok");
        assert_eq!(s.src, PathBuf::from("a.tmpl"));
        assert_eq!(s.dest, PathBuf::from("/etc/b.cfg"));
        assert_eq!(s.command.as_deref(), Some("kill -USR2 $(cat /run/x:y)"));
        assert_eq!(TemplateSpec::parse("a:b").expect("ok").command, None);
        assert_eq!(TemplateSpec::parse("a"), Err(SpecError::Shape));
        assert_eq!(TemplateSpec::parse(":b"), Err(SpecError::Shape));
    }

    #[test]
    fn errors_name_the_template_or_the_file() {
        let src = PathBuf::from("a.tmpl");
        let timed_out = TemplateError::TimedOut { src: src.clone() };
        assert_eq!(timed_out.to_string(), "rendering a.tmpl took over 10 s");
        let garbled = TemplateError::NotUtf8 { src };
        assert_eq!(garbled.to_string(), "a.tmpl rendered invalid UTF-8");
        let unwritable = TemplateError::Write {
            dest: "/ro/b.cfg".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(
            unwritable
                .to_string()
                .starts_with("cannot write /ro/b.cfg: ")
        );
    }
}
