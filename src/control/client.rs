//! `nsview ctl`: one request to the daemon's control socket, its answer printed.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{CtlRequest, CtlResponse, socket_path};
use nsview_nsenter::protocol::{encode, read_line};

/// Longest answer read: a list of every registered container is one line.
const MAX_ANSWER: usize = 64 << 20;
use crate::cli::{CtlArgs, CtlCommand};

/// Errors of `nsview ctl`, each one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No daemon listens.
    #[error("nsview is not running (no control socket at {0}): start it with nsview serve")]
    NotRunning(String),
    /// The socket failed.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon said no.
    #[error("{0}")]
    Refused(String),
    /// The answer could not be printed.
    #[error("stdout: {0}")]
    Output(#[source] std::io::Error),
}

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
    crate::cli::print_stdout(&text).map_err(CtlError::Output)
}

/// Sends one request and reads its answer.
pub fn send(runtime_dir: &std::path::Path, request: &CtlRequest) -> Result<CtlResponse, CtlError> {
    Connection::open(runtime_dir)?.request(request)
}

/// A connection to the control socket, for several requests.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    shown: String,
}

impl Connection {
    /// Connects to the daemon whose runtime directory is `runtime_dir`.
    pub fn open(runtime_dir: &std::path::Path) -> Result<Connection, CtlError> {
        let path = socket_path(runtime_dir);
        let shown = path.display().to_string();
        let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                CtlError::NotRunning(shown.clone())
            }
            _ => CtlError::Socket {
                path: shown.clone(),
                source: e,
            },
        })?;
        let connection = Connection { stream, shown };
        connection
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| connection.error(e))?;
        Ok(connection)
    }

    /// Sends `request` and reads its answer.
    pub fn request(&mut self, request: &CtlRequest) -> Result<CtlResponse, CtlError> {
        self.stream
            .write_all(&encode(request))
            .map_err(|e| self.error(e))?;
        // One answer per request: nothing beyond its line is buffered away.
        let answer = read_line(&mut BufReader::new(&self.stream), MAX_ANSWER)
            .map_err(|e| self.error(e))?
            .ok_or_else(|| CtlError::Refused("the daemon closed the connection".into()))?;
        serde_json::from_slice(&answer)
            .map_err(|e| CtlError::Refused(format!("unreadable answer: {e}")))
    }

    fn error(&self, source: std::io::Error) -> CtlError {
        CtlError::Socket {
            path: self.shown.clone(),
            source,
        }
    }
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
