//! What an inode names: a node of the table, or an entry of a subtree looked up earlier; and
//! the attributes, children and lookups of both, in terms the FUSE replies take.

use std::sync::Arc;
use std::time::Duration;

use fuser::{FileAttr, FileType, INodeNo};

use super::{Core, STATIC_TTL, Source};
use crate::error::{Error, Result};
use crate::vfs::{DynNode, EntryKind, Node, NodeKind, SubtreeId, child_rel};
use crate::views;
use crate::views::{Requester, Subject, ViewId};

/// What an inode names: resolved once per request, when it comes, and carried to wherever
/// it is served (the FUSE worker, or an agent's worker).
#[derive(Debug, Clone)]
pub enum Target {
    /// A node of the table.
    Table(Arc<Node>),
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
    /// Hard links, as the kernel's filesystem counts them (see [`links`]).
    pub nlink: u32,
    /// Preferred I/O size: procfs says 1024, sysfs (and nsview's own directories) 4096.
    pub blksize: u32,
    /// How long the kernel may cache these attributes.
    pub ttl: Duration,
    /// How long the kernel may cache the entry (the name's existence and inode): longer than
    /// the attributes for a view file every caller has but each sizes differently.
    pub entry_ttl: Duration,
}

/// Whether `path` (relative to the mountpoint) stands for a procfs file, not a sysfs one.
fn in_proc(path: &str) -> bool {
    path == "proc" || path.starts_with("proc/")
}

fn blksize(path: &str) -> u32 {
    if in_proc(path) { 1024 } else { 4096 }
}

/// Links as the kernel counts them: 1 for a file and for a `proc/sys` directory (procfs's
/// sysctl directories), 2 plus its subdirectories for any other directory (`subdirs`, when
/// they are not known, as in a subtree served from elsewhere: 0).
fn links(kind: FileType, path: &str, subdirs: usize) -> u32 {
    if kind != FileType::Directory || path == "proc/sys" || path.starts_with("proc/sys/") {
        1
    } else {
        2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2)
    }
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
pub fn needs_agent(target: &Target) -> bool {
    match target {
        Target::Table(node) => matches!(node.kind, NodeKind::Subtree(id) if agent_subtree(id)),
        Target::Dynamic(d) => agent_subtree(d.subtree),
    }
}

/// Whether requests about `target` need to know whose container the caller is in (views by
/// container do; `proc/sys` goes by the caller's own namespaces, not its container).
pub fn needs_subject(target: &Target) -> bool {
    match target {
        // Emulated files keep values (and a boot id) per container; the rest of `proc/sys`
        // needs none, which keeps its hot path free of the container lookup.
        Target::Dynamic(d) if d.subtree == SubtreeId::ProcSys => {
            crate::views::sysctl::emulation::find(&d.rel).is_some()
        }
        _ => !needs_agent(target),
    }
}

/// The size a view file reports before its length for the caller is known, and where it
/// cannot be: a bound, never 0. Reads never depend on the size (direct I/O), but `sendfile`
/// and `splice` on Linux 6.5+ go through the page cache, which stops at the inode's size:
/// procfs's 0 would make them see an empty file (busybox `cat` prints nothing), where a bound
/// makes them ask for the content, which nsview refuses for the page cache (see `read_file`),
/// so that they fall back to `read(2)`.
///
/// Where it can, nsview reports the caller's true length instead (LXCFS's answer; procfs
/// says 0), so that `tail`, `wc -c` and `SEEK_END` work as on any file: a `proc` view's as
/// rendered for the caller, a `proc/sys` file's as its agent read it on lookup, and through an
/// open descriptor (`fstat`, `SEEK_END`) the length of the very snapshot its reads return.
pub const VIEW_SIZE: u64 = 1 << 20;

/// Whether table node `node` is a view whose size is its length for the caller: a `proc`
/// file (sysfs says 4096 for every attribute) rendered without an agent.
pub fn sized_per_caller(node: &Node) -> bool {
    matches!(node.kind, NodeKind::File(view) if in_proc(&node.path) && !view.needs_agent())
}

/// Directories of the agents' subtrees that every caller has (the kernel registers them for
/// every namespace): the kernel may keep their names for [`STATIC_TTL`], so a path walk to
/// `proc/sys/net/ipv4/ip_forward` asks for its last name only. Their attributes (the owner
/// differs in a container's user namespace) are never cached; entries that exist in some
/// namespaces only (`net/ipv4/conf/<interface>`) are looked up every time.
const EVERYWHERE: &[&str] = &[
    "proc/sys/abi",
    "proc/sys/debug",
    "proc/sys/dev",
    "proc/sys/fs",
    "proc/sys/kernel",
    "proc/sys/net",
    "proc/sys/net/core",
    "proc/sys/net/ipv4",
    "proc/sys/net/ipv4/conf",
    "proc/sys/net/ipv4/neigh",
    "proc/sys/net/ipv6",
    "proc/sys/net/ipv6/conf",
    "proc/sys/net/ipv6/neigh",
    "proc/sys/net/unix",
    "proc/sys/user",
    "proc/sys/vm",
];

/// Whether a table node's existence depends on who asks (see [`Core::present`]).
fn present_varies(node: &Node) -> bool {
    node.per_caller
        || matches!(
            node.kind,
            NodeKind::File(ViewId::ProductUuid | ViewId::ConntrackHashsize)
        )
}

/// A table node's attributes, before a `proc` view's size is the caller's (see
/// [`Core::sized`]).
fn table_attrs(node: &Node, subdirs: usize) -> Attrs {
    let kind = if node.kind.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    };
    let proc_file = !node.kind.is_dir() && in_proc(&node.path);
    // Zero TTL when existence or attributes depend on the caller: one mount is shared by many
    // containers and the kernel's dentry and attribute caches are not per caller. A `proc`
    // view's size is the caller's, so its attributes are never cached; its name is.
    let entry_ttl = if present_varies(node) {
        Duration::ZERO
    } else {
        STATIC_TTL
    };
    let ttl = if proc_file { Duration::ZERO } else { entry_ttl };
    // sysfs reports a page for every attribute (its content never exceeds one).
    let size = match node.kind {
        _ if node.kind.is_dir() => 0,
        _ if proc_file => VIEW_SIZE,
        _ => 4096,
    };
    Attrs {
        ino: node.ino,
        kind,
        mode: node.mode,
        size,
        uid: 0,
        gid: 0,
        nlink: links(kind, &node.path, subdirs),
        blksize: blksize(&node.path),
        ttl,
        entry_ttl,
    }
}

impl Core {
    pub(super) fn attr(&self, a: &Attrs) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: a.kind,
            perm: a.mode,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: a.blksize,
            flags: 0,
        }
    }

    /// Who asks: whose view the caller gets, and its task and ids.
    pub(super) fn ctx(&self, who: Requester) -> Ctx {
        Ctx {
            subject: self.service.subject(who.pid),
            who,
        }
    }

    /// [`Core::ctx`] for a request about `target`, skipping the container resolution where
    /// nothing about it depends on it.
    pub(super) fn ctx_for(&self, who: Requester, target: &Target) -> Ctx {
        if needs_subject(target) {
            self.ctx(who)
        } else {
            Ctx {
                subject: Subject::Host,
                who,
            }
        }
    }
}

impl Core {
    /// A table node's attributes, its subdirectories counted for its links.
    fn table_attrs(&self, node: &Node) -> Attrs {
        let subdirs = match node.kind {
            NodeKind::Dir => self
                .service
                .vfs
                .children(node.ino)
                .map_or(0, |c| c.filter(|c| c.kind.is_dir()).count()),
            _ => 0,
        };
        table_attrs(node, subdirs)
    }

    /// Whether table node `node` exists for caller `who`, so that whatever is listed also
    /// opens: a container's product UUID is derived (from the host's, else its machine-id),
    /// but the host's own is there only where the host has DMI; hashsize only where the host
    /// has nf_conntrack.
    fn present(&self, node: &Node, who: Requester) -> bool {
        match node.kind {
            NodeKind::File(ViewId::ProductUuid) => {
                self.service
                    .env
                    .sys
                    .join(views::sys::dmi::PRODUCT_UUID)
                    .exists()
                    || matches!(self.ctx(who).subject, Subject::Container(c) if !c.is_host_scope())
            }
            NodeKind::File(ViewId::ConntrackHashsize) => {
                self.service.env.sys.join(views::HASHSIZE).exists()
            }
            _ => true,
        }
    }

    /// What `ino` names.
    pub(super) fn target(&self, ino: u64) -> Result<Target> {
        if let Some(node) = self.service.vfs.get(ino) {
            return Ok(Target::Table(node.clone()));
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
    /// `len`, when given, is the size: the length of an open descriptor's snapshot.
    pub(super) fn attrs(&self, target: &Target, ctx: &Ctx, len: Option<u64>) -> Result<Attrs> {
        let attrs = match target {
            Target::Table(node) if len.is_none() => self.sized(node, self.table_attrs(node), ctx),
            Target::Table(node) => self.table_attrs(node),
            Target::Dynamic(d) => self.subtree_attrs(d.subtree, &d.rel, d.ino, ctx)?,
        };
        Ok(Attrs {
            size: len.unwrap_or(attrs.size),
            ..attrs
        })
    }

    /// `attrs` of table node `node`, a `proc` view's size its length as `ctx` reads it now.
    fn sized(&self, node: &Node, attrs: Attrs, ctx: &Ctx) -> Attrs {
        let NodeKind::File(view) = node.kind else {
            return attrs;
        };
        if !sized_per_caller(node) {
            return attrs;
        }
        match self.render(&Source::View(view), &ctx.subject, &ctx.who) {
            Ok(data) => Attrs {
                size: data.len() as u64,
                ..attrs
            },
            Err(_) => attrs,
        }
    }

    fn subtree_attrs(&self, id: SubtreeId, rel: &str, ino: u64, ctx: &Ctx) -> Result<Attrs> {
        let entry = views::sys::lookup(&self.service.env, id, &ctx.subject, &ctx.who, rel)?;
        let root = self
            .service
            .vfs
            .subtree_root(id)
            .map_or("", |r| r.path.as_str());
        let path = if rel.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{rel}")
        };
        let kind = file_type(entry.kind);
        Ok(Attrs {
            ino,
            kind,
            mode: entry.mode,
            // The length the lookup learnt, else a bound (see VIEW_SIZE).
            size: if entry.kind == EntryKind::File && entry.size == 0 {
                VIEW_SIZE
            } else {
                entry.size
            },
            uid: entry.uid,
            gid: entry.gid,
            nlink: links(kind, &path, 0),
            blksize: blksize(&path),
            ttl: Duration::ZERO,
            entry_ttl: if kind == FileType::Directory && EVERYWHERE.contains(&path.as_str()) {
                STATIC_TTL
            } else {
                Duration::ZERO
            },
        })
    }

    /// The subtree and path below its root that directory `target` stands for, if it is one.
    fn subtree_dir(target: &Target) -> Option<(SubtreeId, String)> {
        match target {
            Target::Table(node) => match node.kind {
                NodeKind::Subtree(id) => Some((id, String::new())),
                _ => None,
            },
            Target::Dynamic(d) => Some((d.subtree, d.rel.clone())),
        }
    }

    /// Looks up `name` in directory `parent` (which `dir` names) for `subject`; a subtree
    /// entry found is remembered (one lookup counted) until the kernel forgets it.
    pub(super) fn lookup_child(
        &self,
        parent: u64,
        dir: &Target,
        name: &str,
        ctx: &Ctx,
    ) -> Result<Attrs> {
        if let Target::Table(node) = dir
            && node.kind == NodeKind::Dir
        {
            let child = self
                .service
                .vfs
                .child(parent, name)
                .filter(|c| self.present(c, ctx.who))
                .ok_or(Error::NotFound)?;
            return Ok(self.sized(child, self.table_attrs(child), ctx));
        }
        let (id, dir_rel) = Self::subtree_dir(dir).ok_or(Error::Os(libc::ENOTDIR))?;
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

    /// The listing of directory `ino` (which `dir` names) for `subject`: `.` and `..` once,
    /// then its children.
    pub(super) fn listing(&self, ino: u64, dir: &Target, ctx: &Ctx) -> Result<Vec<Listed>> {
        let parent = match dir {
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
            out.extend(children.filter(|c| self.present(c, ctx.who)).map(|c| {
                let a = self.table_attrs(c);
                (a.ino, a.kind, c.name.clone())
            }));
            return Ok(out);
        }
        let (id, dir_rel) = Self::subtree_dir(dir).ok_or(Error::Os(libc::ENOTDIR))?;
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
