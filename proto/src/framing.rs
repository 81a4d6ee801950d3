//! The one framing of every newline-JSON stream of nsview (daemon and agent, the control
//! socket, reattach's workers): a message is one line of JSON and its newline.

use serde::{Deserialize, Serialize};

/// The longest line any stream takes (the agent's answers are the longest).
pub const MAX_LINE: usize = 1 << 20;

/// A line that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Longer than the limit (bytes).
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// Not valid JSON for the expected type.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
}

/// One message as a line of JSON (with its newline).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain types cannot fail.
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Parses one line (without or with its newline).
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::TooLong(MAX_LINE));
    }
    serde_json::from_slice(line).map_err(ProtoError::Malformed)
}

/// Reads one line of at most `max` bytes (its newline not counted) from `input`, without
/// reading past it: `None` at the end of input. The framing of every newline-JSON stream of
/// nsview (daemon and agent, the control socket, reattach's workers), written once.
pub fn read_line(
    input: &mut impl std::io::BufRead,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{BufRead, Read};
    let mut line = Vec::new();
    let n = input.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            ProtoError::TooLong(max),
        ));
    }
    Ok(Some(line))
}
