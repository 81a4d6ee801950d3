//! The file operations beneath the agent's root: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS`, so no path a request names (checked first by
//! [`check_path`](nsview_proto::agent::check_path)) can leave the private root.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, openat2, readlinkat, statat};

use super::Server;
use super::error::{OpError, errno};
use nsview_proto::agent::{DirItem, Kind, Stat};

impl Server {
    pub(super) fn open(&self, path: &str, flags: OFlags) -> Result<OwnedFd, OpError> {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        openat2(
            self.root.as_fd(),
            dot(path),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
        .map_err(|e| OpError::Open {
            path: path.into(),
            source: errno(e),
        })
    }

    pub(super) fn stat(&self, path: &str) -> Result<Stat, OpError> {
        let st = statat(self.root.as_fd(), dot(path), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            OpError::Stat {
                path: path.into(),
                source: errno(e),
            }
        })?;
        stat_of(&st).ok_or_else(|| OpError::NotAnEntry { path: path.into() })
    }

    /// The length of file `path`'s content if everyone may read it (its mode says so), else
    /// 0: a length is all a lookup tells, and only of what any caller could read anyway.
    pub(super) fn len(&self, path: &str, mode: u32) -> u64 {
        if mode & 0o004 == 0 {
            return 0;
        }
        self.read(path).map_or(0, |data| data.len() as u64)
    }

    pub(super) fn readlink(&self, path: &str) -> Result<String, OpError> {
        let target = readlinkat(self.root.as_fd(), dot(path), Vec::new()).map_err(|e| {
            OpError::Readlink {
                path: path.into(),
                source: errno(e),
            }
        })?;
        Ok(target.to_string_lossy().into_owned())
    }

    pub(super) fn readdir(&self, path: &str) -> Result<Vec<DirItem>, OpError> {
        let listing = |e| OpError::Readdir {
            path: path.into(),
            source: errno(e),
        };
        let fd = self.open(path, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut dir = Dir::new(fd).map_err(listing)?;
        let mut items = Vec::new();
        // `read`, not the iterator: each entry is owned, so the stream's own descriptor can
        // be lent to `statat` between reads (it does not move the directory position).
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(listing)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            // An entry that vanishes meanwhile (an interface removed) is left out. By its
            // lossy name, as it is listed: a name that is not UTF-8 could not be looked up.
            let dir_fd = dir.fd().map_err(listing)?;
            let Ok(st) = statat(dir_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if let Some(stat) = stat_of(&st) {
                items.push(DirItem { name, stat });
            }
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    /// The whole file, at most [`MAX_READ`](nsview_proto::agent::MAX_READ) bytes. The first
    /// read(2) asks for all of them: some handlers give their text only to a read at
    /// position 0 and end-of-file after (`dev/cdrom/info`), so a small first read
    /// (`read_to_end` probes with 32 bytes) would cut them short.
    pub(super) fn read(&self, path: &str) -> Result<Vec<u8>, OpError> {
        let mut file = std::fs::File::from(self.open(path, OFlags::RDONLY)?);
        let mut data = self.buffer.borrow_mut();
        let mut len = 0;
        while len < data.len() {
            match file.read(&mut data[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(OpError::Read {
                        path: path.into(),
                        source,
                    });
                }
            }
        }
        Ok(data[..len].to_vec())
    }

    /// One write(2) at file position `offset`; the bytes taken and the position after (a
    /// sysctl takes a whole value per write, and its handler decides how the position moves).
    pub(super) fn write(
        &self,
        path: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<(usize, u64), OpError> {
        use std::io::{Seek, SeekFrom};
        let seek = |source| OpError::Seek {
            path: path.into(),
            source,
        };
        let mut file = std::fs::File::from(self.open(path, OFlags::WRONLY)?);
        file.seek(SeekFrom::Start(offset)).map_err(seek)?;
        let n = file.write(data).map_err(|source| OpError::Write {
            path: path.into(),
            source,
        })?;
        let pos = file.stream_position().map_err(seek)?;
        Ok((n, pos))
    }
}

/// "" (the root itself) as a path the *at calls take.
fn dot(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn stat_of(st: &rustix::fs::Stat) -> Option<Stat> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink,
        _ => return None,
    };
    Some(Stat {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        len: None,
    })
}
