//! What nsview's processes say to each other: the daemon and its agents ([`agent`]), runtimes
//! and `nsview ctl` and the daemon ([`control`]), all in one newline-JSON [`framing`], and the
//! namespace kinds they name ([`ns`]). Closed and typed: unknown fields are refused.
#![warn(missing_docs)]

pub mod agent;
pub mod bytes;
pub mod control;
pub mod framing;
pub mod keeper;
pub mod ns;

use std::io::Write;

/// An error and its sources on one line, `outer: inner: innermost`: the text every edge of
/// nsview prints or sends for a typed error (the agent's replies and its stderr, the CLI, the
/// hooks, reattach's report). A source whose text the line already ends with is not repeated
/// (some messages include their source).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Writes `text` to stdout. A reader that went away (`nsview ctl status | head -1`) is no
/// error: it has what it wanted.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("setns {kind}")]
    struct Outer {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn the_chain_names_each_source_once() {
        let e = Outer {
            kind: "net",
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            super::chain(&e),
            "setns net: Operation not permitted (os error 1)"
        );
    }
}
