//! A client of the control socket: one connection, a request and its answer at a time.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{CtlRequest, CtlResponse, socket_path};
use crate::framing::{encode, read_line};

/// Longest answer read: a list of every registered container is one line.
const MAX_ANSWER: usize = 64 << 20;

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
