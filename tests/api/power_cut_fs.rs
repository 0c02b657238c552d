//! A file system that loses, on command, everything not fsynced: what a power cut does to a
//! disk with a volatile write cache. It is an in-memory FUSE file system (the `fuser` crate,
//! no libfuse) that keeps two copies of everything:
//!
//! - **live**: what processes see, changed by every write, create, rename and unlink;
//! - **durable**: what survives a power cut. `fsync`/`fdatasync` of a file copies its live
//!   contents there; `fsync` of a directory copies its live entries there (a file whose entry
//!   is durable but whose data never was comes back empty, as on a real disk).
//!
//! [`PowerCutFs::power_cut`] replaces live with durable. Files are opened with direct IO and
//! every attribute and entry is given a zero cache time, so the kernel keeps no copy that
//! could outlive a power cut.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// No caching in the kernel: a power cut changes what is true underneath it.
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

#[derive(Debug, Default)]
struct Disk {
    live: HashMap<u64, Node>,
    durable: HashMap<u64, Node>,
    next_inode: u64,
    /// Calls of fsync and fsyncdir, for the test's report.
    syncs: u64,
}

impl Disk {
    fn new() -> Self {
        let root = Node::Dir(BTreeMap::new());
        let mut disk = Disk {
            next_inode: 2,
            ..Disk::default()
        };
        disk.live.insert(INodeNo::ROOT.0, root.clone());
        disk.durable.insert(INodeNo::ROOT.0, root);
        disk
    }

    fn attr(&self, inode: u64) -> Option<FileAttr> {
        let node = self.live.get(&inode)?;
        let (kind, size, perm, nlink) = match node {
            Node::File(data) => (FileType::RegularFile, data.len() as u64, 0o644, 1),
            Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
        };
        Some(FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&mut self, inode: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.live.get_mut(&inode) {
            Some(Node::Dir(entries)) => Ok(entries),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, inode: u64) -> Result<&mut Vec<u8>, Errno> {
        match self.live.get_mut(&inode) {
            Some(Node::File(data)) => Ok(data),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        let inode = self.next_inode;
        let entries = self.dir(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_owned(), inode);
        self.next_inode += 1;
        self.live.insert(inode, node);
        Ok(inode)
    }
}

/// The file system; clones share one disk.
#[derive(Clone)]
pub struct PowerCutFs {
    disk: Arc<Mutex<Disk>>,
}

/// A mounted [`PowerCutFs`]; unmounted when dropped.
pub struct Mounted {
    /// The file system, to cut its power.
    pub fs: PowerCutFs,
    session: Option<BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

impl PowerCutFs {
    /// Mounts a new, empty file system on `mountpoint` (an empty directory).
    pub fn mount(mountpoint: &Path) -> std::io::Result<Mounted> {
        let fs = PowerCutFs {
            disk: Arc::new(Mutex::new(Disk::new())),
        };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("powercut".to_owned())];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs.clone(), mountpoint, &config)?;
        Ok(Mounted {
            fs,
            session: Some(session),
        })
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every change not fsynced: files and directories are as their last fsync left
    /// them. Call it only while no process has files open here (the server was killed).
    pub fn power_cut(&self) {
        let mut disk = self.disk();
        disk.live = disk.durable.clone();
    }

    /// fsync and fsyncdir calls so far.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        let found = disk
            .dir(parent.0)
            .and_then(|entries| entries.get(name).copied().ok_or(Errno::ENOENT));
        match found.map(|inode| disk.attr(inode)) {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let Some(size) = size {
            match disk.file(ino.0) {
                Ok(data) => data.resize(usize::try_from(size).unwrap_or(usize::MAX), 0),
                Err(errno) => return reply.error(errno),
            }
        }
        match disk.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let mut disk = self.disk();
        match disk.add(parent.0, name, Node::Dir(BTreeMap::new())) {
            Ok(inode) => reply.entry(&TTL, &disk.attr(inode).expect("just made"), Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        match disk.add(parent.0, name, Node::File(Vec::new())) {
            Ok(inode) => reply.created(
                &TTL,
                &disk.attr(inode).expect("just made"),
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        match disk
            .dir(parent.0)
            .and_then(|entries| entries.remove(name).ok_or(Errno::ENOENT))
        {
            Ok(_) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        let inode = match disk
            .dir(parent.0)
            .and_then(|entries| entries.get(name).copied().ok_or(Errno::ENOENT))
        {
            Ok(inode) => inode,
            Err(errno) => return reply.error(errno),
        };
        match disk.dir(inode) {
            Ok(entries) if entries.is_empty() => {}
            Ok(_) => return reply.error(Errno::ENOTEMPTY),
            Err(errno) => return reply.error(errno),
        }
        if let Ok(entries) = disk.dir(parent.0) {
            entries.remove(name);
        }
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let inode = match disk
            .dir(parent.0)
            .and_then(|entries| entries.remove(name).ok_or(Errno::ENOENT))
        {
            Ok(inode) => inode,
            Err(errno) => return reply.error(errno),
        };
        match disk.dir(newparent.0) {
            Ok(entries) => {
                entries.insert(newname.to_owned(), inode);
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().live.get(&ino.0) {
            Some(Node::File(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Some(Node::Dir(_)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(data) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(file) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start + data.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[start..end].copy_from_slice(data);
                reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut disk = self.disk();
        disk.syncs += 1;
        match disk.live.get(&ino.0).cloned() {
            Some(Node::File(data)) => {
                disk.durable.insert(ino.0, Node::File(data));
                reply.ok();
            }
            Some(dir @ Node::Dir(_)) => {
                sync_dir(&mut disk, ino.0, dir);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut disk = self.disk();
        let entries: Vec<(OsString, u64)> = match disk.dir(ino.0) {
            Ok(entries) => entries.iter().map(|(name, inode)| (name.clone(), *inode)).collect(),
            Err(errno) => return reply.error(errno),
        };
        let listing = [(OsString::from("."), ino.0), (OsString::from(".."), ino.0)]
            .into_iter()
            .chain(entries);
        for (index, (name, inode)) in listing.enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
            let kind = match disk.live.get(&inode) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(INodeNo(inode), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut disk = self.disk();
        disk.syncs += 1;
        match disk.live.get(&ino.0).cloned() {
            Some(dir @ Node::Dir(_)) => {
                sync_dir(&mut disk, ino.0, dir);
                reply.ok();
            }
            Some(Node::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// Makes a directory's entries durable. A child that was never durable comes into being
/// empty: its entry survives, its contents only once it is fsynced itself.
fn sync_dir(disk: &mut Disk, inode: u64, dir: Node) {
    if let Node::Dir(entries) = &dir {
        for child in entries.values() {
            if !disk.durable.contains_key(child) {
                let empty = match disk.live.get(child) {
                    Some(Node::Dir(_)) => Node::Dir(BTreeMap::new()),
                    _ => Node::File(Vec::new()),
                };
                disk.durable.insert(*child, empty);
            }
        }
    }
    disk.durable.insert(inode, dir);
}
