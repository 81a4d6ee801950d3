//! `nsview ctl`: one request to the daemon's control socket, its answer printed.

use nsview_proto::control::{CtlData, CtlError, CtlRequest, send};

use crate::cli::{CtlArgs, CtlCommand};

/// Runs `nsview ctl`.
pub fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let request = match &args.command {
        CtlCommand::List => CtlRequest::List {},
        CtlCommand::Status => CtlRequest::Status {},
        CtlCommand::Register {
            id,
            pid,
            cpu_view,
            host_writes,
        } => CtlRequest::Register {
            id: id.clone(),
            pid: *pid,
            cpu_view: cpu_view.map(|v| v.name().to_owned()),
            host_writes: Some(*host_writes),
        },
        CtlCommand::Unregister { id } => CtlRequest::Unregister { id: id.clone() },
    };
    let response = send(&args.runtime_dir, &request)?;
    if !response.ok {
        return Err(CtlError::Refused(
            response.error.unwrap_or_else(|| "refused".into()),
        ));
    }
    let text = match (&response.data, args.json) {
        (Some(data), true) => format!("{}\n", serde_json::to_string(data).unwrap_or_default()),
        (None, true) => "null\n".to_owned(),
        (data, false) => table(&request, data.as_ref()),
    };
    nsview_proto::print_stdout(&text).map_err(CtlError::Output)
}

/// The answer as a readable table.
fn table(request: &CtlRequest, data: Option<&CtlData>) -> String {
    match (request, data) {
        (CtlRequest::List {}, Some(CtlData::Containers(list))) => {
            let mut out = format!(
                "{:<24} {:>8} {:>12} {:<8}\n",
                "ID", "PID", "PIDNS", "CPU-VIEW"
            );
            for r in list {
                out.push_str(&format!(
                    "{:<24} {:>8} {:>12} {:<8}\n",
                    r.id,
                    r.pid,
                    r.pidns,
                    r.cpu_view.as_deref().unwrap_or("default"),
                ));
            }
            out
        }
        (CtlRequest::Status {}, Some(CtlData::Status(status))) => {
            // One line per field, in the order of the JSON form.
            let json = serde_json::to_value(status).unwrap_or_default();
            json.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k:<22} {v}\n"))
                .collect()
        }
        (CtlRequest::Register { id, .. }, _) => format!("registered {id}\n"),
        (CtlRequest::Unregister { id }, _) => format!("unregistered {id}\n"),
        (CtlRequest::Bound { id, .. }, _) => format!("reported the binds of {id}\n"),
        (CtlRequest::Failed { id, .. }, _) => format!("reported the failed start of {id}\n"),
        (CtlRequest::Set { id, key, value }, _) => format!("{id}: {key} = {value}\n"),
        (_, other) => format!("unexpected answer: {other:?}\n"),
    }
}

/// Runs `nsview upgrade`: asks the daemon to exec the new binary, then waits until the new
/// image serves (its connection's generation counted up).
pub fn upgrade(args: &crate::cli::UpgradeArgs) -> Result<(), CtlError> {
    let generation = |runtime_dir: &std::path::Path| match send(runtime_dir, &CtlRequest::Status {})
    {
        Ok(r) => match r.data {
            Some(CtlData::Status(s)) => Some(s.connection.generation),
            _ => None,
        },
        Err(_) => None,
    };
    let before = generation(&args.runtime_dir);
    let response = send(
        &args.runtime_dir,
        &CtlRequest::Upgrade {
            exe: args.exe.clone(),
        },
    )?;
    if !response.ok {
        return Err(CtlError::Refused(
            response.error.unwrap_or_else(|| "refused".into()),
        ));
    }
    if let Some(CtlData::Upgrading(u)) = &response.data {
        nsview_proto::print_stdout(&format!(
            "daemon {} execs {} ({})\n",
            u.pid,
            u.exe.display(),
            u.version
        ))
        .map_err(CtlError::Output)?;
    }
    let wait = std::time::Duration::from_secs_f64(args.wait.clamp(0.1, 3600.0));
    let since = std::time::Instant::now();
    while since.elapsed() < wait {
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The new image took the connection over: one generation on (a daemon that mounted
        // anew would be back at 0, which is no upgrade).
        if let Some(now) = generation(&args.runtime_dir)
            && Some(now) == before.map(|g| g + 1)
        {
            return nsview_proto::print_stdout(&format!(
                "upgraded: the new image serves (generation {now})\n"
            ))
            .map_err(CtlError::Output);
        }
    }
    Err(CtlError::Refused(format!(
        "the daemon did not come back within {} s: see its log",
        wait.as_secs_f64()
    )))
}
