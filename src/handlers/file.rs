//! `file`: file transfer from one directory, the classic course's last exercise.
//!
//! Requests are lines:
//!
//! - `LIST` -> `OK <n>`, then n lines `<size> <name>`: the regular files at the top of the
//!   directory, sorted by name.
//! - `GET <name>` -> `OK <size>`, then exactly size bytes of the file.
//! - `GET <name> <offset>` -> `OK <remaining>`, then the bytes from offset (resuming).
//! - anything else, or a name that is missing, not a regular file, or outside the directory
//!   -> `ERR <reason>`, and the connection keeps serving.
//!
//! Names may contain `/` for subdirectories. The handler never opens a socket or holds file
//! bytes: it checks the name and states "send this file from here" ([`Outbox::send_file`]);
//! the reactor streams it. A name is confined to the directory by refusing what can only
//! mean escape (absolute paths, `..`, NUL bytes) and then by resolving symbolic links and
//! checking the real path is still inside: the classic bug of every toy file server is a
//! link, or a `../`, that leads out.

use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::handlers::{Handler, Outbox, Peer};

/// Serves the files under one directory; see the module documentation.
#[derive(Debug, Clone)]
pub struct FileServer {
    /// The directory, resolved (symbolic links followed): every file served is under it.
    root: PathBuf,
}

impl FileServer {
    /// Serves the files under `root`, which must be a directory.
    pub fn new(root: &Path) -> std::io::Result<FileServer> {
        let root = fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"));
        }
        Ok(FileServer { root })
    }

    fn list(&self, out: &mut Outbox) {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) => return out.reply_with(|buf| drop(write!(buf, "ERR cannot list: {error}"))),
        };
        let mut files: Vec<(String, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                // Regular files only (a link is listed if it leads to one inside); names that
                // would not survive a line (not UTF-8, control characters) are left out.
                let name = entry.file_name().into_string().ok()?;
                if name.chars().any(char::is_control) || name.contains(' ') {
                    return None;
                }
                let (_, metadata) = self.resolve(&name).ok()?;
                Some((name, metadata.len()))
            })
            .collect();
        files.sort();
        out.reply_with(|buf| drop(write!(buf, "OK {}", files.len())));
        for (name, size) in files {
            out.reply_with(|buf| drop(write!(buf, "{size} {name}")));
        }
    }

    fn get(&self, name: &str, offset: Option<&str>, out: &mut Outbox) {
        let offset = match offset.map(str::parse::<u64>) {
            None => 0,
            Some(Ok(offset)) => offset,
            Some(Err(_)) => return out.reply(b"ERR bad offset: expected a number of bytes"),
        };
        let (path, metadata) = match self.resolve(name) {
            Ok(found) => found,
            Err(reason) => return out.reply_with(|buf| drop(write!(buf, "ERR {reason}"))),
        };
        let size = metadata.len();
        if offset > size {
            return out
                .reply_with(|buf| drop(write!(buf, "ERR offset {offset} is past the end ({size} bytes)")));
        }
        let remaining = size - offset;
        out.reply_with(|buf| drop(write!(buf, "OK {remaining}")));
        if remaining > 0 {
            out.send_file(path, offset, remaining);
        }
    }

    /// The real path of `name` under the root, and its metadata, if it is a regular file
    /// there; otherwise the reason to give the client.
    fn resolve(&self, name: &str) -> Result<(PathBuf, fs::Metadata), &'static str> {
        if name.is_empty() || name.contains('\0') {
            return Err("bad name");
        }
        let relative = Path::new(name);
        if !relative.components().all(|part| matches!(part, Component::Normal(_))) {
            return Err("outside the directory: names are relative, without '..'");
        }
        let path = fs::canonicalize(self.root.join(relative)).map_err(|_| "no such file")?;
        if !path.starts_with(&self.root) {
            return Err("outside the directory: a link leads out");
        }
        let metadata = fs::metadata(&path).map_err(|_| "no such file")?;
        if !metadata.is_file() {
            return Err("not a regular file");
        }
        Ok((path, metadata))
    }
}

impl Handler for FileServer {
    fn on_message(&mut self, _from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        let Ok(request) = std::str::from_utf8(message) else {
            return out.reply(b"ERR invalid UTF-8");
        };
        let mut words = request.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("LIST"), None, _, _) => self.list(out),
            (Some("GET"), Some(name), offset, None) => self.get(name, offset, out),
            _ => out.reply(b"ERR expected LIST, GET <name> or GET <name> <offset>"),
        }
    }

    /// A file flows over a stream: not over UDP.
    fn needs_connections(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::Intent;
    use crate::handlers::test_support::handle;

    /// A directory with two files, a subdirectory with one, and a link that leads out; one
    /// per test (`name`), as tests run in parallel.
    fn fixture(name: &str) -> (PathBuf, FileServer) {
        let dir = std::env::temp_dir().join(format!("evloop-file-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("b.txt"), b"hello").unwrap();
        fs::write(dir.join("a.bin"), [0u8; 10]).unwrap();
        fs::write(dir.join("sub/c.txt"), b"nested").unwrap();
        let _ = std::os::unix::fs::symlink("/etc/hostname", dir.join("escape"));
        let server = FileServer::new(&dir).unwrap();
        (dir, server)
    }

    fn replies(server: &mut FileServer, request: &str) -> (Vec<String>, Vec<Intent>) {
        let out = handle(server, request.as_bytes());
        let mut lines = Vec::new();
        let mut files = Vec::new();
        for (intent, payload) in out.iter() {
            match intent {
                Intent::Send { .. } => lines.push(String::from_utf8(payload.to_vec()).unwrap()),
                other => files.push(other.clone()),
            }
        }
        (lines, files)
    }

    /// LIST: the regular files at the top, sorted, with sizes (no directories, no link out).
    #[test]
    fn lists_regular_files() {
        let (dir, mut server) = fixture("lists_regular_files");
        let (lines, _) = replies(&mut server, "LIST");
        assert_eq!(lines, ["OK 2", "10 a.bin", "5 b.txt"]);
        fs::remove_dir_all(dir).unwrap();
    }

    /// GET: the size, then the file to send; with an offset, what remains.
    #[test]
    fn gets_files_and_resumes() {
        let (dir, mut server) = fixture("gets_files_and_resumes");
        let root = fs::canonicalize(&dir).unwrap();
        let (lines, files) = replies(&mut server, "GET b.txt");
        assert_eq!(lines, ["OK 5"]);
        assert_eq!(files, [Intent::SendFile { path: root.join("b.txt"), offset: 0, length: 5 }]);
        let (lines, files) = replies(&mut server, "GET sub/c.txt 2");
        assert_eq!(lines, ["OK 4"]);
        assert_eq!(files, [Intent::SendFile { path: root.join("sub/c.txt"), offset: 2, length: 4 }]);
        let (lines, files) = replies(&mut server, "GET b.txt 5");
        assert_eq!((lines.as_slice(), files.len()), (&["OK 0".to_string()][..], 0));
        fs::remove_dir_all(dir).unwrap();
    }

    /// Every way out of the directory, and every bad request, is an ERR.
    #[test]
    fn refuses_escapes_and_bad_requests() {
        let (dir, mut server) = fixture("refuses_escapes_and_bad_requests");
        for request in [
            "GET ../etc/passwd",
            "GET /etc/passwd",
            "GET sub/../../etc/passwd",
            "GET escape",
            "GET sub",
            "GET nope.txt",
            "GET b.txt 6",
            "GET b.txt x",
            "GET",
            "PUT b.txt",
            "LIST x",
        ] {
            let (lines, files) = replies(&mut server, request);
            assert_eq!(lines.len(), 1, "{request}");
            assert!(lines[0].starts_with("ERR "), "{request}: {lines:?}");
            assert!(files.is_empty(), "{request}");
        }
        let (lines, _) = replies(&mut server, "GET a\0b");
        assert!(lines[0].starts_with("ERR "));
        fs::remove_dir_all(dir).unwrap();
    }
}
