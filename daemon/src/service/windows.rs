//! Running under the Windows Service Control Manager: the SCM starts the
//! program and expects it to register a control handler and report its
//! state at once, or kills it. `run` first offers itself to the SCM
//! dispatcher; from a console that fails at once and `run` continues as a
//! foreground process. Stop and Shutdown controls start the same graceful
//! shutdown as SIGTERM elsewhere.

use crate::exit::Exit;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

/// The SCM service name `install` registers.
pub const SERVICE_NAME: &str = "steep-repl";

/// What `run` was asked to do, for the service entry point (which the SCM
/// calls on another thread with its own arguments).
static RUN_ARGS: OnceLock<(Option<PathBuf>, bool)> = OnceLock::new();
static EXIT: Mutex<Option<Exit>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Runs as a service when the SCM started us: `Some(exit)` once the service
/// stopped; `None` when there is no SCM to talk to (a console).
pub fn try_run_as_service(config: Option<PathBuf>, debug: bool) -> Option<Exit> {
    let _ = RUN_ARGS.set((config, debug));
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => Some(EXIT.lock().ok().and_then(|e| *e).unwrap_or(Exit::Ok)),
        Err(_) => None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let (stop_tx, stop_rx) = mpsc::channel();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            let _ = stop_tx.send(());
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
        return;
    };
    let report = |state: ServiceState, code: u32| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        });
    };
    report(ServiceState::Running, 0);
    let (config, debug) = RUN_ARGS.get().cloned().unwrap_or((None, false));
    let exit = crate::run::run_until(config.as_deref(), debug, Some(stop_rx));
    if let Ok(mut slot) = EXIT.lock() {
        *slot = Some(exit);
    }
    report(ServiceState::Stopped, exit as u32);
}
