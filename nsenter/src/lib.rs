//! nsview's agent: the protocol it speaks with the daemon ([`protocol`]), its command line
//! ([`args`]), how it joins a caller's namespaces and hides the host from them ([`join`]),
//! and how it executes requests there ([`ops`]). The binary `nsview-nsenter` puts these
//! together.
#![warn(missing_docs)]

pub mod args;
pub mod join;
pub mod ops;
pub mod protocol;

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
