//! `nsview ctl`: one request to the daemon's control socket, its answer printed.

use nsview_proto::control::{CtlError, CtlRequest, send};

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
    let data = response.data.unwrap_or(serde_json::Value::Null);
    let text = if args.json {
        format!("{data}\n")
    } else {
        table(&request, &data)
    };
    nsview_proto::print_stdout(&text).map_err(CtlError::Output)
}

/// The answer as a readable table.
fn table(request: &CtlRequest, data: &serde_json::Value) -> String {
    match request {
        CtlRequest::List {} => {
            let mut out = format!(
                "{:<24} {:>8} {:>12} {:<8}\n",
                "ID", "PID", "PIDNS", "CPU-VIEW"
            );
            for r in data.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<24} {:>8} {:>12} {:<8}\n",
                    r["id"].as_str().unwrap_or("?"),
                    r["pid"],
                    r["pidns"],
                    r["cpu_view"].as_str().unwrap_or("default"),
                ));
            }
            out
        }
        CtlRequest::Status {} => data
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k:<22} {v}\n"))
            .collect(),
        CtlRequest::Register { id, .. } => format!("registered {id}\n"),
        CtlRequest::Unregister { id } => format!("unregistered {id}\n"),
        CtlRequest::Bound { id, .. } => format!("reported the binds of {id}\n"),
        CtlRequest::Failed { id, .. } => format!("reported the failed start of {id}\n"),
        CtlRequest::Set { id, key, value } => format!("{id}: {key} = {value}\n"),
    }
}
