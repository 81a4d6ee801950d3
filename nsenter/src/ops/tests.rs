//! The request loop end to end, over fixture trees: what each request answers, and that
//! garbage, a wrong version and a truncated line get clean errors.

use super::*;
use nsview_proto::agent::{Creds, Fault, Request, decode, encode};

/// An agent over a fixture tree, as root with the process's own capabilities.
fn agent(dir: &std::path::Path) -> Server {
    let root = std::fs::File::open(dir).unwrap();
    Server::new(root.into(), Some(7), false)
}

fn converse(agent: &Server, requests: &[Request]) -> Vec<Response> {
    let mut input = Vec::new();
    for r in requests {
        input.extend(encode(r));
    }
    let mut out = Vec::new();
    agent.serve(&input[..], &mut out);
    parse_replies(&out)
}

/// The responses in an agent's output.
fn parse_replies(out: &[u8]) -> Vec<Response> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| decode(l).unwrap())
        .collect()
}

fn hello() -> Request {
    Request {
        id: 1,
        op: Op::Hello { version: VERSION },
    }
}

fn root_creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        caps: u64::MAX,
    }
}

#[test]
fn lookup_readdir_read_and_write_beneath_the_root() {
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("proc/sys/net")).unwrap();
    std::fs::write(dir.join("proc/sys/net/ip_forward"), "0\n").unwrap();
    let a = agent(&dir);
    let replies = converse(
        &a,
        &[
            hello(),
            Request {
                id: 2,
                op: Op::Readdir {
                    path: "proc/sys/net".into(),
                },
            },
            Request {
                id: 3,
                op: Op::Write {
                    path: "proc/sys/net/ip_forward".into(),
                    offset: 0,
                    data: b"1\n".to_vec(),
                    creds: root_creds(),
                },
            },
            Request {
                id: 4,
                op: Op::Read {
                    path: "proc/sys/net/ip_forward".into(),
                    creds: root_creds(),
                },
            },
            Request {
                id: 5,
                op: Op::Lookup {
                    path: "proc/sys/../../etc".into(),
                },
            },
            Request {
                id: 6,
                op: Op::Lookup {
                    path: "proc/sys/nope".into(),
                },
            },
        ],
    );
    assert!(matches!(
        replies[0],
        Response::Ok {
            payload: Payload::Hello { .. },
            ..
        }
    ));
    let Response::Ok {
        payload: Payload::Entries(items),
        ..
    } = &replies[1]
    else {
        panic!("{replies:?}")
    };
    assert_eq!(items[0].name, "ip_forward");
    assert_eq!(items[0].stat.kind, Kind::File);
    assert_eq!(
        replies[2],
        Response::Ok {
            id: 3,
            payload: Payload::Written { n: 2, pos: 2 }
        }
    );
    assert_eq!(
        replies[3],
        Response::Ok {
            id: 4,
            payload: Payload::Data(b"1\n".to_vec())
        }
    );
    assert!(matches!(
        replies[4],
        Response::Err {
            id: 5,
            errno: libc::EINVAL,
            ..
        }
    ));
    assert!(matches!(
        replies[5],
        Response::Err {
            id: 6,
            errno: libc::ENOENT,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_and_a_wrong_version_get_clean_errors() {
    let dir = tempfile_dir();
    let a = agent(&dir);
    let mut out = Vec::new();
    let mut input = b"not json at all\n".to_vec();
    input.extend(encode(&Request {
        id: 9,
        op: Op::Hello {
            version: VERSION + 1,
        },
    }));
    assert_eq!(a.serve(&input[..], &mut out), 1);
    let replies = parse_replies(&out);
    assert!(matches!(
        replies[0],
        Response::Err {
            id: 0,
            errno: libc::EINVAL,
            ..
        }
    ));
    assert!(matches!(
        replies[1],
        Response::Err {
            id: 9,
            errno: libc::EPROTO,
            ..
        }
    ));
    let mut long = vec![b'x'; MAX_LINE + 10];
    long.push(b'\n');
    let mut out = Vec::new();
    assert_eq!(a.serve(&long[..], &mut out), 1);
    assert!(matches!(
        decode::<Response>(out.trim_ascii_end()).unwrap(),
        Response::Err {
            errno: libc::EINVAL,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_last_line_gets_an_error_and_the_agent_ends() {
    let dir = tempfile_dir();
    let a = agent(&dir);
    let mut input = encode(&hello());
    input.extend_from_slice(br#"{"id":2,"op":{"lookup":{"pa"#);
    let mut out = Vec::new();
    assert_eq!(a.serve(&input[..], &mut out), 0);
    let replies = parse_replies(&out);
    assert!(matches!(
        replies[1],
        Response::Err {
            id: 0,
            errno: libc::EINVAL,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn faults_are_refused_unless_enabled() {
    let dir = tempfile_dir();
    let replies = converse(
        &agent(&dir),
        &[
            hello(),
            Request {
                id: 2,
                op: Op::Fault {
                    fault: Fault::Garbage,
                },
            },
        ],
    );
    assert!(matches!(
        replies[1],
        Response::Err {
            errno: libc::EPERM,
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn links_are_read_not_followed_and_lead_nowhere_outside_the_root() {
    let dir = tempfile_dir();
    let d = dir.join("proc/sys/d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a"), "1\n").unwrap();
    std::os::unix::fs::symlink("/etc", d.join("out")).unwrap();
    std::os::unix::fs::symlink("../../../..", d.join("up")).unwrap();
    // Neither a file, a directory nor a link: not served.
    let _socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let a = agent(&dir);
    let req = |id, op| Request { id, op };
    let path = |p: &str| format!("proc/sys/d/{p}");
    let replies = converse(
        &a,
        &[
            hello(),
            req(
                2,
                Op::Readdir {
                    path: "proc/sys/d".into(),
                },
            ),
            req(3, Op::Lookup { path: path("out") }),
            req(4, Op::Readlink { path: path("out") }),
            req(
                5,
                Op::Read {
                    path: path("out/passwd"),
                    creds: root_creds(),
                },
            ),
            req(
                6,
                Op::Read {
                    path: path("up/etc/passwd"),
                    creds: root_creds(),
                },
            ),
            req(7, Op::Lookup { path: path("sock") }),
            req(8, Op::Readlink { path: path("a") }),
        ],
    );
    let Response::Ok {
        payload: Payload::Entries(items),
        ..
    } = &replies[1]
    else {
        panic!("{replies:?}")
    };
    let kinds: Vec<_> = items
        .iter()
        .map(|i| (i.name.as_str(), i.stat.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", Kind::File),
            ("out", Kind::Symlink),
            ("up", Kind::Symlink)
        ]
    );
    let Response::Ok {
        payload: Payload::Entry(out),
        ..
    } = &replies[2]
    else {
        panic!("{replies:?}")
    };
    assert_eq!(out.kind, Kind::Symlink, "lookup does not follow the link");
    assert_eq!(
        replies[3],
        Response::Ok {
            id: 4,
            payload: Payload::Link("/etc".into())
        }
    );
    // RESOLVE_BENEATH: an absolute link, or one climbing above the root, is EXDEV.
    let errno = |r: &Response| match r {
        Response::Err { errno, .. } => *errno,
        other => panic!("not an error: {other:?}"),
    };
    assert_eq!(errno(&replies[4]), libc::EXDEV);
    assert_eq!(errno(&replies[5]), libc::EXDEV);
    assert_eq!(errno(&replies[6]), libc::ENOENT);
    assert_eq!(
        replies[7],
        Response::Err {
            id: 8,
            errno: libc::EINVAL,
            message: "readlink proc/sys/d/a: EINVAL: Invalid argument".into(),
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nsview-agent-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
