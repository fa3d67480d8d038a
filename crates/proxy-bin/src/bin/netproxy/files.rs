//! Files netproxy writes for its caller: `serve --ready-file`, `run --learn`'s suggestion.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A new file of an unpredictable name in `path`'s folder (`.NAME.RANDOM.tmp`), created
/// exclusively without following a symlink, with `mode`.
fn temporary(path: &Path, mode: u32) -> std::io::Result<(PathBuf, std::fs::File)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{suffix}.tmp"));
    let tmp = dir.join(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(&tmp)?;
    Ok((tmp, file))
}

/// Writes `text` to `path` atomically: into a new file of an unpredictable name in the same
/// folder, created exclusively without following a symlink (with `mode`), then renamed over
/// `path` (a symlink at `path` is replaced, never followed).
pub(crate) fn write_atomically(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let (tmp, mut file) = temporary(path, mode)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Checks now that [`write_atomically`] can create its file beside `path` (the folder exists
/// and can be written), so that a session's work is not lost at its end for want of it. The
/// file made for the check is removed at once.
pub(crate) fn check_writable(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a folder",
        ));
    }
    let (tmp, file) = temporary(path, 0o600)?;
    drop(file);
    std::fs::remove_file(&tmp)
}
