//! `--workload file`: the files the loader downloads and what each must hash to. The loader
//! reads the same directory the server serves (`--files DIR`), once, before the run: a CRC-32
//! of each file, so every downloaded byte is checked without keeping any file in memory.

use std::io::{self, Read};
use std::path::Path;

/// One file to download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name, as `GET` takes it.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The CRC-32 of its bytes.
    pub crc: u32,
}

/// The files of a directory, in name order.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    /// See [`Entry`].
    pub files: Vec<Entry>,
}

impl Catalogue {
    /// The regular files at the top of `dir` (the ones `LIST` shows), hashed.
    pub fn read(dir: &Path) -> io::Result<Catalogue> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.contains(' ') || name.chars().any(char::is_control) || !entry.metadata()?.is_file() {
                continue;
            }
            let mut hasher = crc32fast::Hasher::new();
            let mut file = std::fs::File::open(entry.path())?;
            let mut buffer = vec![0; 1 << 20];
            let mut size = 0u64;
            loop {
                let read = file.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                size += read as u64;
            }
            files.push(Entry { name, size, crc: hasher.finalize() });
        }
        if files.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--files: no regular file to download there",
            ));
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Catalogue { files })
    }

    /// The file request `seq` of connection `conn` downloads: each connection goes through
    /// the files in turn, starting at its own.
    pub fn pick(&self, conn: u32, seq: u64) -> usize {
        ((u64::from(conn) + seq) % self.files.len() as u64) as usize
    }
}
