//! The agent's command line: `--ns KIND=FD` per namespace to join (descriptors the daemon
//! lets it inherit), `--allow-faults` for tests.

use std::os::fd::RawFd;

use nsview_proto::ns::NsKind;

/// Why the agent's command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// `--ns` was the last argument.
    #[error("--ns needs KIND=FD")]
    NsWithoutSpec,
    /// `--ns` without a `=`.
    #[error("bad --ns {0:?}")]
    NsSpec(String),
    /// A kind not in [`NsKind::ALL`].
    #[error("unknown namespace kind {0:?}")]
    UnknownKind(String),
    /// A descriptor that is not a number.
    #[error("bad descriptor in {0:?}")]
    Descriptor(String),
    /// A descriptor of a standard stream.
    #[error("descriptor {0} is a standard stream")]
    StandardStream(RawFd),
    /// Anything else.
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

/// The command line: `--ns KIND=FD` per namespace to join, `--allow-faults` for tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// Namespace kind and the inherited descriptor of it.
    pub ns: Vec<(NsKind, RawFd)>,
    /// Whether `fault` requests are obeyed.
    pub allow_faults: bool,
}

/// Parses the agent's arguments (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ArgsError> {
    let mut out = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            #[cfg(feature = "test-faults")]
            "--allow-faults" => out.allow_faults = true,
            "--ns" => {
                let spec = args.next().ok_or(ArgsError::NsWithoutSpec)?;
                let (name, fd) = spec
                    .split_once('=')
                    .ok_or_else(|| ArgsError::NsSpec(spec.clone()))?;
                let kind =
                    NsKind::from_name(name).ok_or_else(|| ArgsError::UnknownKind(name.into()))?;
                let fd: RawFd = fd
                    .parse()
                    .map_err(|_| ArgsError::Descriptor(spec.clone()))?;
                if fd < 3 {
                    return Err(ArgsError::StandardStream(fd));
                }
                out.ns.push((kind, fd));
            }
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_kinds_and_descriptors() {
        let args = parse_args(["--ns", "user=3", "--ns", "net=4"].map(String::from)).unwrap();
        assert_eq!(args.ns, [(NsKind::User, 3), (NsKind::Net, 4)]);
        assert!(!args.allow_faults);
        if cfg!(feature = "test-faults") {
            assert!(
                parse_args(["--allow-faults".to_owned()])
                    .unwrap()
                    .allow_faults
            );
        } else {
            assert!(parse_args(["--allow-faults".to_owned()]).is_err());
        }
        let refused = |args: &[&str]| parse_args(args.iter().map(|a| a.to_string())).unwrap_err();
        assert_eq!(
            refused(&["--ns", "mnt=3"]),
            ArgsError::UnknownKind("mnt".into())
        );
        assert_eq!(refused(&["--ns", "net=1"]), ArgsError::StandardStream(1));
        assert_eq!(
            refused(&["--ns", "net=x"]),
            ArgsError::Descriptor("net=x".into())
        );
        assert_eq!(refused(&["--ns", "net"]), ArgsError::NsSpec("net".into()));
        assert_eq!(refused(&["--ns"]), ArgsError::NsWithoutSpec);
        assert_eq!(refused(&["--bogus"]), ArgsError::Unknown("--bogus".into()));
    }
}
