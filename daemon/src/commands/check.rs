//! What `--check-config` checks beyond the file itself: that the anomaly
//! log can be written by the user running the check (systemd's
//! `ExecStartPre=` runs it as the service's `User=`), creating nothing.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether the anomaly log at `path` can be written: `Ok(None)` when the
/// file (or its directory) is writable now, `Ok(Some(note))` when
/// directories are missing but the daemon can create them, `Err(why)`
/// otherwise. Nothing is created or changed.
pub fn anomaly_log_writable(path: &Path) -> Result<Option<String>, String> {
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    if path.exists() {
        return writable(path)
            .map(|()| None)
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut existing = parent.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(up) if !up.as_os_str().is_empty() => existing = up,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    writable(existing).map_err(|e| {
        format!(
            "cannot create {} in {}: {e}",
            path.display(),
            existing.display()
        )
    })?;
    if existing == parent {
        Ok(None)
    } else {
        Ok(Some(format!(
            "{} does not exist yet; anomalyd will create it",
            parent.display()
        )))
    }
}

/// Whether the calling user may write `path` (`access(2)` with `W_OK`:
/// permissions, ACLs and read-only mounts, for the real user).
fn writable(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; access(2) only reads it and touches no other memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::access(c_path.as_ptr(), libc::W_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_missing_and_directory_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anomalies.log");
        assert_eq!(anomaly_log_writable(&file), Ok(None));
        std::fs::write(&file, "").unwrap();
        assert_eq!(anomaly_log_writable(&file), Ok(None));
        let deep = dir.path().join("a/b/anomalies.log");
        let note = anomaly_log_writable(&deep).unwrap().unwrap();
        assert!(note.contains("will create"), "{note}");
        assert!(!dir.path().join("a").exists(), "nothing created");
        let err = anomaly_log_writable(dir.path()).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        let under_file = file.join("x.log");
        assert!(anomaly_log_writable(&under_file).is_err());
    }
}
