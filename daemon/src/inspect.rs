//! `status`, `health`, `nodes`, `audit`: read-only views of a running
//! daemon over IPC. Each is one IPC method, shown as a short aligned table
//! (`render`) or, with `--json`, as the method's result, one document.
//! `--watch [SECS]` redraws in place until Ctrl-C (with `--json`, one
//! compact document per refresh, for scripts).
//!
//! Exit codes: 3 when the daemon is not running (and, for `status`, what
//! the service manager says), 4 when `health` finds the node unhealthy, 2
//! when the daemon refuses the request as invalid, 1 for other failures.

pub mod render;
pub(crate) mod table;

use crate::exit::Exit;
use crate::ipc_client::{self, decode, ClientError, IpcClient, Target};
use crate::terminal::printable;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use steep_repl_actors::ipc::protocol::{
    AuditQueryParams, HealthReport, Method, NoParams, NodeStatus, NodesListParams,
};

/// Turns a result into its human view (reading it as its type first).
type Render = Box<dyn Fn(&Method, &Value, &Target) -> Result<String, ClientError>>;

/// How a view is fetched and shown.
struct View {
    method: Method,
    render: Render,
    /// The exit code a successful answer means.
    verdict: fn(&Value) -> Exit,
    /// Ask the service manager when the daemon is not running.
    service_state: bool,
}

fn ok(_: &Value) -> Exit {
    Exit::Ok
}

pub fn status(config: Option<&Path>, json: bool, watch: Option<u64>) -> Exit {
    let view = View {
        method: Method::StatusGet(NoParams {}),
        render: Box::new(|m, v, target| {
            Ok(render::status(
                &decode(m, v)?,
                &target.path.display().to_string(),
            ))
        }),
        verdict: ok,
        service_state: true,
    };
    show(config, view, json, watch)
}

pub fn health(config: Option<&Path>, remote: Option<&str>, json: bool, watch: Option<u64>) -> Exit {
    if let Some(remote) = remote {
        return crate::remote_health::health(config, remote, json);
    }
    let view = View {
        method: Method::HealthCheck(NoParams {}),
        render: Box::new(|m, v, _| Ok(render::health(&decode(m, v)?))),
        verdict: |v| {
            if HealthReport::deserialize(v).is_ok_and(|h| h.healthy()) {
                Exit::Ok
            } else {
                Exit::Unhealthy
            }
        },
        service_state: false,
    };
    show(config, view, json, watch)
}

pub fn nodes(
    config: Option<&Path>,
    statuses: &[NodeStatus],
    json: bool,
    watch: Option<u64>,
) -> Exit {
    let view = View {
        method: Method::NodesList(NodesListParams {
            status_filter: statuses.to_vec(),
        }),
        render: Box::new(|m, v, _| Ok(render::nodes(&decode(m, v)?, Utc::now()))),
        verdict: ok,
        service_state: false,
    };
    show(config, view, json, watch)
}

pub fn audit(
    config: Option<&Path>,
    limit: u64,
    offset: u64,
    since: Option<DateTime<Utc>>,
    actions: &[String],
    json: bool,
) -> Exit {
    let view = View {
        method: Method::AuditQuery(AuditQueryParams {
            limit: Some(limit),
            offset: Some(offset),
            action_filter: actions.to_vec(),
            since,
        }),
        render: Box::new(move |m, v, _| Ok(render::audit(&decode(m, v)?, offset))),
        verdict: ok,
        service_state: false,
    };
    show(config, view, json, None)
}

/// `--since`: an RFC 3339 timestamp, or a span back from now (`90m`, `2d`).
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let span = humantime::parse_duration(text).map_err(|_| {
        format!("\"{text}\" is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a span back from now (90m, 2d)")
    })?;
    let span = chrono::Duration::from_std(span).map_err(|e| format!("\"{text}\": {e}"))?;
    Utc::now()
        .checked_sub_signed(span)
        .ok_or_else(|| format!("\"{text}\" reaches too far back"))
}

fn show(config: Option<&Path>, view: View, json: bool, watch: Option<u64>) -> Exit {
    let target = match ipc_client::locate(config) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    };
    if let Some(note) = &target.fallback {
        eprintln!("steep-repl: note: {note}");
    }
    match watch {
        None => once(&target, &view, json),
        Some(seconds) => watch_loop(&target, &view, json, Duration::from_secs(seconds.max(1))),
    }
}

fn fetch(
    client: &mut Option<IpcClient>,
    target: &Target,
    view: &View,
) -> Result<Value, ClientError> {
    if client.is_none() {
        *client = Some(IpcClient::connect(&target.path)?);
    }
    let Some(connected) = client.as_mut() else {
        return Err(ClientError::Protocol("no connection".into()));
    };
    let result = connected.call(&view.method);
    // A failed connection is not reused; a refused request leaves it usable.
    if matches!(result, Err(ref e) if !matches!(e, ClientError::Remote { .. })) {
        *client = None;
    }
    result
}

fn once(target: &Target, view: &View, json: bool) -> Exit {
    match fetch(&mut None, target, view) {
        Ok(value) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                match (view.render)(&view.method, &value, target) {
                    Ok(text) => print!("{}", printable(&text)),
                    Err(e) => return fail(&e, target, view, json),
                }
            }
            (view.verdict)(&value)
        }
        Err(e) => fail(&e, target, view, json),
    }
}

/// Reports a failure on stderr (and, for `status --json`, as a document
/// on stdout) and picks the exit code.
fn fail(e: &ClientError, target: &Target, view: &View, json: bool) -> Exit {
    let exit = exit_for(e);
    let service = (exit == Exit::NotRunning && view.service_state).then(service_manager_view);
    eprintln!("steep-repl: {}", printable(&e.to_string()));
    if let Some(config) = &target.config {
        if exit == Exit::NotRunning {
            eprintln!(
                "  socket {} (ipc.path in {})",
                target.path.display(),
                config.display()
            );
        }
    }
    if let Some(service) = &service {
        eprintln!("  service manager: {service}");
    }
    if json && view.service_state && exit == Exit::NotRunning {
        let document = json!({
            "state": "not_running",
            "reason": e.to_string(),
            "socket": target.path.display().to_string(),
            "service_manager": service,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    }
    exit
}

fn exit_for(e: &ClientError) -> Exit {
    match e {
        ClientError::NotRunning { .. } => Exit::NotRunning,
        ClientError::Remote { code, .. } if code == "INVALID_REQUEST" => Exit::Usage,
        _ => Exit::Error,
    }
}

/// What the service manager says about the system and the user service.
fn service_manager_view() -> String {
    use crate::service::{status, ServiceState};
    // The manager's own words, without the wrapper's "Command failed ...:".
    let shown = |state: ServiceState| match state {
        ServiceState::Unknown(why) => {
            let own = why
                .rsplit_once("exit code")
                .and_then(|(_, rest)| rest.split_once(": "));
            format!(
                "unknown ({})",
                own.map(|(_, text)| text.trim()).unwrap_or(why.as_str())
            )
        }
        other => other.to_string(),
    };
    match (status(false), status(true)) {
        (ServiceState::NotInstalled, ServiceState::NotInstalled) => {
            "the steep-repl service is not installed (steep-repl install sets it up)".to_string()
        }
        (system, ServiceState::NotInstalled) => format!("system service {}", shown(system)),
        (ServiceState::NotInstalled, user) => format!("user service {}", shown(user)),
        (system, user) => format!(
            "system service {}; user service {}",
            shown(system),
            shown(user)
        ),
    }
}

fn watch_loop(target: &Target, view: &View, json: bool, every: Duration) -> Exit {
    let mut client = None;
    loop {
        let fetched = fetch(&mut client, target, view);
        let mut out = std::io::stdout().lock();
        let written = if json {
            let document = match &fetched {
                Ok(value) => value.clone(),
                Err(e) => json!({ "error": e.to_string() }),
            };
            writeln!(out, "{document}")
        } else {
            let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            let body = printable(&match fetched
                .and_then(|value| (view.render)(&view.method, &value, target))
            {
                Ok(text) => text,
                Err(e) => format!("steep-repl: {e}\n"),
            });
            // Clear the screen, cursor home, then the frame.
            write!(
                out,
                "\x1b[2J\x1b[H{} every {}s, Ctrl-C to quit   {now}\n\n{body}",
                view.method.kind().as_str(),
                every.as_secs()
            )
        };
        // stdout closed (e.g. piped into `head`): nothing left to watch for.
        if written.and_then(|_| out.flush()).is_err() {
            return Exit::Ok;
        }
        drop(out);
        std::thread::sleep(every);
    }
}
