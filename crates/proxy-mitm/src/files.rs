//! The file rules of the CA directory (docs/mitm.md, "Where the CA lives"): the key read only
//! through a descriptor that was opened without following a symlink and then checked; new files
//! written whole under a temporary name and hard-linked to their final name, so an existing file
//! is never replaced.

use std::fmt;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags};

use crate::CaError;

/// The largest CA file read (a PEM certificate or key is a few hundred bytes).
const MAX_FILE: u64 = 64 * 1024;

/// PEM text of a private key: never shown by `Debug`, overwritten when dropped.
pub(crate) struct SecretPem(String);

impl SecretPem {
    pub(crate) fn new(text: String) -> Self {
        Self(text)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem([redacted])")
    }
}

impl Drop for SecretPem {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CaError + 'a {
    move |source| CaError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Whether anything (a file, a symlink, ...) is at `path`.
pub(crate) fn exists(path: &Path) -> Result<bool, CaError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("inspect", path)(e)),
    }
}

/// Creates `dir` (and its missing parents) with mode 0700; an existing directory is kept.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create directory", dir))
}

fn read_bounded(mut file: File, path: &Path) -> Result<String, CaError> {
    let mut text = String::new();
    (&mut file)
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io("read", path))?;
    if text.len() as u64 > MAX_FILE {
        return Err(CaError::Invalid {
            path: path.to_owned(),
            why: format!("larger than {MAX_FILE} bytes"),
        });
    }
    Ok(text)
}

fn unsafe_path(path: &Path, why: impl Into<String>) -> CaError {
    CaError::Unsafe {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Opens `path` without following a symlink (and without blocking on a FIFO), with `extra`
/// flags; a symlink is refused.
fn open_nofollow(path: &Path, extra: OFlags) -> Result<File, CaError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | extra;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::LOOP) => Err(unsafe_path(path, "it is a symbolic link")),
        // With O_DIRECTORY, a symlink (even to a directory) fails as "not a directory".
        Err(rustix::io::Errno::NOTDIR) if extra.contains(OFlags::DIRECTORY) => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            Err(unsafe_path(
                path,
                if link {
                    "it is a symbolic link"
                } else {
                    "it is not a directory"
                },
            ))
        }
        Err(e) => Err(io("open", path)(e.into())),
    }
}

/// Refuses what netproxy's user does not own alone: another owner, or write permission for
/// the group or others (`meta` is the opened file's own).
fn owned_and_private_writes(path: &Path, meta: &std::fs::Metadata) -> Result<(), CaError> {
    let expected = rustix::process::geteuid().as_raw();
    if meta.uid() != expected {
        return Err(unsafe_path(
            path,
            format!(
                "it is owned by uid {}, not by netproxy's user (uid {expected})",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_path(
            path,
            format!("its group or others may write it (mode={mode:04o})"),
        ));
    }
    Ok(())
}

/// The CA directory must be a real directory (not a symlink), owned by netproxy's user, that
/// no one else may write: whoever can write it can swap the certificate clients trust.
pub(crate) fn check_dir(dir: &Path) -> Result<(), CaError> {
    let file = open_nofollow(dir, OFlags::DIRECTORY)?;
    let meta = file.metadata().map_err(io("inspect", dir))?;
    owned_and_private_writes(dir, &meta)
}

/// The certificate's text: a regular file (not a symlink) owned by netproxy's user that no one
/// else may write (clients trust it by its path).
pub(crate) fn read_cert(path: &Path) -> Result<String, CaError> {
    let file = open_nofollow(path, OFlags::empty())?;
    let meta = file.metadata().map_err(io("inspect", path))?;
    if !meta.file_type().is_file() {
        return Err(unsafe_path(path, "it is not a regular file"));
    }
    owned_and_private_writes(path, &meta)?;
    read_bounded(file, path)
}

/// The key's text, read only when the opened file is a regular file (not reached through a
/// symlink) owned by netproxy's effective user, with no permission for its group or others.
pub(crate) fn read_key(path: &Path) -> Result<SecretPem, CaError> {
    // O_NOFOLLOW: a symlink fails with ELOOP; O_NONBLOCK: a FIFO does not block the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(CaError::Symlink {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io("open", path)(e.into())),
    };
    let file = File::from(fd);
    // fstat of the opened descriptor: what is checked is what is read.
    let meta = file.metadata().map_err(io("inspect", path))?;
    if !meta.file_type().is_file() {
        return Err(CaError::NotRegular {
            path: path.to_owned(),
        });
    }
    let expected = rustix::process::geteuid().as_raw();
    if meta.uid() != expected {
        return Err(CaError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            expected,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::Permissive {
            path: path.to_owned(),
            mode,
        });
    }
    // A second name for the key (a hard link elsewhere) is a copy netproxy cannot see.
    if meta.nlink() != 1 {
        return Err(unsafe_path(
            path,
            format!(
                "the key has {} names (hard links); it must have one",
                meta.nlink()
            ),
        ));
    }
    read_bounded(file, path).map(SecretPem::new)
}

/// The content of an existing file that netproxy may trust (a regular file, not reached through
/// a symlink, of netproxy's user, that no one else may write), read up to `limit + 1` bytes
/// (enough to tell whether it is longer than `limit`); `None` when nothing is at `path`.
pub(crate) fn read_existing(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, CaError> {
    let file = match open_nofollow(path, OFlags::empty()) {
        Ok(f) => f,
        Err(CaError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata().map_err(io("inspect", path))?;
    if !meta.file_type().is_file() {
        return Err(unsafe_path(path, "it is not a regular file"));
    }
    owned_and_private_writes(path, &meta)?;
    let mut held = Vec::new();
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut held)
        .map_err(io("read", path))?;
    Ok(Some(held))
}

/// Writes `contents` as the new file `dir/name` with `mode`: a temporary file opened with
/// that mode, written and fsynced, then hard-linked to its name (which fails, and changes
/// nothing, when the name is taken); the directory is fsynced after.
pub(crate) fn write_new(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<PathBuf, CaError> {
    let path = dir.join(name);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp.{}.{nanos}", std::process::id()));
    let written = write_tmp(&tmp, contents, mode);
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(CaError::Overwrite { path: path.clone() })
        }
        Err(e) => Err(io("link", &path)(e)),
    });
    // The temporary name goes in every case (it may not exist if its creation failed).
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(dir)?;
    Ok(path)
}

fn write_tmp(tmp: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(OFlags::NOFOLLOW.bits().cast_signed())
        .open(tmp)
        .map_err(io("create", tmp))?;
    // The umask may have narrowed the mode: set it exactly (fchmod).
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io("set the mode of", tmp))?;
    file.write_all(contents).map_err(io("write", tmp))?;
    file.sync_all().map_err(io("sync", tmp))
}

/// Removes a file this process created (a key whose certificate could not be written).
pub(crate) fn remove(dir: &Path, path: &Path) -> Result<(), CaError> {
    std::fs::remove_file(path).map_err(io("remove", path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_file_never_replaces_an_existing_one_and_gets_its_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let old = rustix::process::umask(Mode::from_raw_mode(0o077));
        let written = write_new(dir.path(), "f", b"one", 0o644);
        rustix::process::umask(old);
        let path = written.unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o644, "{mode:o}");
        let err = write_new(dir.path(), "f", b"two", 0o644).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("refusing to overwrite existing file"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
