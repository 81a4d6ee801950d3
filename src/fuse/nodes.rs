//! What an inode names: a node of the table, or an entry of a subtree looked up earlier; and
//! the attributes, children and lookups of both, in terms the FUSE replies take.

use std::sync::Arc;
use std::time::Duration;

use fuser::FileType;

use super::{Core, STATIC_TTL};
use crate::error::{Error, Result};
use crate::vfs::{DynNode, EntryKind, Node, NodeKind, SubtreeId, child_rel};
use crate::views;
use crate::views::{Requester, Subject};

/// What an inode names.
#[derive(Debug)]
pub enum Target<'a> {
    /// A node of the table.
    Table(&'a Node),
    /// A looked-up subtree entry.
    Dynamic(Arc<DynNode>),
}

/// Who asks, in the two forms views take: whose view (by container) and the requester.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Whose view.
    pub subject: Subject,
    /// The requesting task and its ids.
    pub who: Requester,
}

/// The attributes a reply carries.
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    /// Inode.
    pub ino: u64,
    /// File type.
    pub kind: FileType,
    /// Permission bits.
    pub mode: u16,
    /// Size.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// How long the kernel may cache the entry and these attributes.
    pub ttl: Duration,
}

/// One name of a directory listing: inode, type, name.
pub type Listed = (u64, FileType, String);

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
    }
}

fn kind_of(kind: FileType) -> EntryKind {
    match kind {
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::File,
    }
}

/// Whether subtree `id` is served by agents in the caller's namespaces.
pub fn agent_subtree(id: SubtreeId) -> bool {
    matches!(id, SubtreeId::ProcSys | SubtreeId::SysNet)
}

/// Whether requests about `target` (or, for a directory, its children) go to an agent.
pub fn needs_agent(target: &Target<'_>) -> bool {
    match target {
        Target::Table(node) => matches!(node.kind, NodeKind::Subtree(id) if agent_subtree(id)),
        Target::Dynamic(d) => agent_subtree(d.subtree),
    }
}

/// Whether requests about `target` need to know whose container the caller is in (views by
/// container do; `proc/sys` goes by the caller's own namespaces, not its container).
pub fn needs_subject(target: &Target<'_>) -> bool {
    match target {
        // Emulated files keep values (and a boot id) per container; the rest of `proc/sys`
        // needs none, which keeps its hot path free of the container lookup.
        Target::Dynamic(d) if d.subtree == SubtreeId::ProcSys => {
            crate::views::sysctl::emulation::find(&d.rel).is_some()
        }
        _ => !needs_agent(target),
    }
}

/// The size a view file reports. Reads never depend on it (direct I/O), but `sendfile` and
/// `splice` go through the page cache, which stops at the inode's size: procfs's 0 makes
/// busybox `cat` (which uses sendfile) print nothing. So views report an upper bound on
/// their content, and with TTL 0 every open's lookup resets it (a short page-cache read
/// shrinks the kernel's idea of the size to that one caller's content).
pub const VIEW_SIZE: u64 = 1 << 20;

fn table_attrs(node: &Node) -> Attrs {
    let kind = if node.kind.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    };
    // Zero TTL when existence or attributes depend on the caller: one mount is shared by many
    // containers and the kernel's dentry and attribute caches are not per caller. Files are
    // such nodes too, for their size (below).
    let ttl = if node.per_caller || !node.kind.is_dir() {
        Duration::ZERO
    } else {
        STATIC_TTL
    };
    Attrs {
        ino: node.ino,
        kind,
        mode: node.mode,
        size: if node.kind.is_dir() { 0 } else { VIEW_SIZE },
        uid: 0,
        gid: 0,
        ttl,
    }
}

impl Core {
    /// What `ino` names.
    pub(super) fn target(&self, ino: u64) -> Result<Target<'_>> {
        if let Some(node) = self.service.vfs.get(ino) {
            return Ok(Target::Table(node));
        }
        self.service
            .vfs
            .dynamic
            .get(ino)
            .map(Target::Dynamic)
            .ok_or(Error::NotFound)
    }

    /// The attributes of `target` as the asker sees them (a subtree entry may not exist for
    /// every caller).
    pub(super) fn attrs(&self, target: &Target<'_>, ctx: &Ctx) -> Result<Attrs> {
        match target {
            Target::Table(node) => Ok(table_attrs(node)),
            Target::Dynamic(d) => self.subtree_attrs(d.subtree, &d.rel, d.ino, ctx),
        }
    }

    fn subtree_attrs(&self, id: SubtreeId, rel: &str, ino: u64, ctx: &Ctx) -> Result<Attrs> {
        let entry = views::sys::lookup(&self.service.env, id, &ctx.subject, &ctx.who, rel)?;
        Ok(Attrs {
            ino,
            kind: file_type(entry.kind),
            mode: entry.mode,
            // procfs reports 0 for its files; sendfile readers need a bound (see VIEW_SIZE).
            size: if entry.kind == EntryKind::File && entry.size == 0 {
                VIEW_SIZE
            } else {
                entry.size
            },
            uid: entry.uid,
            gid: entry.gid,
            ttl: Duration::ZERO,
        })
    }

    /// The subtree and path below its root that directory `target` stands for, if it is one.
    fn subtree_dir(target: &Target<'_>) -> Option<(SubtreeId, String)> {
        match target {
            Target::Table(node) => match node.kind {
                NodeKind::Subtree(id) => Some((id, String::new())),
                _ => None,
            },
            Target::Dynamic(d) => Some((d.subtree, d.rel.clone())),
        }
    }

    /// Looks up `name` in directory `parent` for `subject`; a subtree entry found is
    /// remembered (one lookup counted) until the kernel forgets it.
    pub(super) fn lookup_child(&self, parent: u64, name: &str, ctx: &Ctx) -> Result<Attrs> {
        let dir = self.target(parent)?;
        if let Target::Table(node) = dir
            && node.kind == NodeKind::Dir
        {
            let child = self
                .service
                .vfs
                .child(parent, name)
                .ok_or(Error::NotFound)?;
            return Ok(table_attrs(child));
        }
        let (id, dir_rel) = Self::subtree_dir(&dir).ok_or(Error::Os(libc::ENOTDIR))?;
        let rel = child_rel(&dir_rel, name);
        let root = self.service.vfs.subtree_root(id).ok_or(Error::NotFound)?;
        let probe = self.subtree_attrs(id, &rel, 0, ctx)?;
        let node = self
            .service
            .vfs
            .dynamic
            .remember(id, &root.path, parent, &rel, kind_of(probe.kind))
            .ok_or(Error::Os(libc::ENFILE))?;
        Ok(Attrs {
            ino: node.ino,
            ..probe
        })
    }

    /// The listing of directory `ino` for `subject`: `.` and `..` once, then its children.
    pub(super) fn listing(&self, ino: u64, ctx: &Ctx) -> Result<Vec<Listed>> {
        let dir = self.target(ino)?;
        let parent = match &dir {
            Target::Table(node) => node.parent,
            Target::Dynamic(d) => d.parent,
        };
        let mut out: Vec<Listed> = vec![
            (ino, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        if let Target::Table(node) = dir
            && node.kind == NodeKind::Dir
        {
            let children = self
                .service
                .vfs
                .children(ino)
                .ok_or(Error::Os(libc::ENOTDIR))?;
            out.extend(children.map(|c| {
                let a = table_attrs(c);
                (a.ino, a.kind, c.name.clone())
            }));
            return Ok(out);
        }
        let (id, dir_rel) = Self::subtree_dir(&dir).ok_or(Error::Os(libc::ENOTDIR))?;
        let root = self.service.vfs.subtree_root(id).ok_or(Error::NotFound)?;
        for entry in views::sys::list(&self.service.env, id, &ctx.subject, &ctx.who, &dir_rel)? {
            let path = format!("{}/{}", root.path, child_rel(&dir_rel, &entry.name));
            out.push((
                crate::vfs::inode_of(&path),
                file_type(entry.kind),
                entry.name,
            ));
        }
        Ok(out)
    }
}
