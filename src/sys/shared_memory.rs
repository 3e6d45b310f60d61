//! Memory shared between processes: an anonymous file (`memfd_create`) that a parent makes
//! and its children inherit and map. The worker supervisor makes one for the workers'
//! metrics (`reactor/metrics.rs`); each worker writes only its own slot, so no lock is needed,
//! and a worker that answers a scrape reads every slot. The fork model maps one before it
//! forks, for its children's counts (`models/fork.rs`), a slot each, the same way.
//!
//! The words are `AtomicU64`: a reader in another process never sees half of a store.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;

/// A mapping of shared memory, seen as words.
#[derive(Debug)]
pub struct SharedWords {
    words: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping is plain memory, only ever accessed through `AtomicU64`s, which are
// safe to share between threads (and processes).
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// A new anonymous file of `len` zeroed words, to be inherited by child processes: its
    /// descriptor is not closed on `exec`. Nothing is mapped here: the parent only hands it
    /// on (tmpfs allocates pages only where a child writes).
    #[cfg(any(feature = "cli", test))]
    pub fn create_file(len: usize) -> io::Result<OwnedFd> {
        let name = c"evloop-shared";
        // SAFETY: `name` is a valid C string; flags 0 keeps the descriptor across exec.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        let bytes = len.checked_mul(8).and_then(|bytes| libc::off_t::try_from(bytes).ok());
        let bytes = bytes.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(file.as_raw_fd(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(file)
    }

    /// A new mapping of `len` zeroed words, shared with the children this process forks
    /// from now on: a shared mapping stays shared across `fork` (the fork model's children
    /// keep their counts in it).
    #[cfg(feature = "cli")]
    pub fn for_children(len: usize) -> io::Result<SharedWords> {
        Self::map(Self::create_file(len)?)
    }

    /// Maps the whole of the shared file `fd` (inherited from the parent); the descriptor is
    /// closed once mapped, and the mapping lives until this value is dropped.
    pub fn map_inherited(fd: RawFd) -> io::Result<SharedWords> {
        // SAFETY: fcntl on any number is harmless; it tells whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was passed to this process for this purpose and is taken
        // over here, once (the caller reads its number from the environment once).
        Self::map(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Maps the whole of the shared file `file`, which is closed once mapped.
    fn map(file: OwnedFd) -> io::Result<SharedWords> {
        // SAFETY: an all-zero stat is a valid value for fstat to fill in.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on an open descriptor, into a live struct.
        if unsafe { libc::fstat(file.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = usize::try_from(stat.st_size).unwrap_or(0);
        if bytes < 8 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the shared file is empty"));
        }
        // SAFETY: a fresh shared mapping of an open file, of its size; the kernel picks
        // the address. Page-aligned, so aligned for AtomicU64.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords { words: address.cast(), len: bytes / 8 })
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` words and lives as long as `self`; every access
        // goes through atomics.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }

    /// Slot `index` of the words cut in slots of `width`: the words one process owns (a
    /// forked child's counts). Panics past the end, as indexing does.
    #[cfg(feature = "cli")]
    pub fn slot(&self, index: usize, width: usize) -> &[AtomicU64] {
        &self.words()[index * width..(index + 1) * width]
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map_inherited`, once.
        unsafe { libc::munmap(self.words.cast(), self.len * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Two mappings of one file see each other's stores.
    #[test]
    fn two_mappings_share_their_words() {
        let file = SharedWords::create_file(1024).unwrap();
        // SAFETY: dup of an open descriptor we own.
        let first = SharedWords::map_inherited(unsafe { libc::dup(file.as_raw_fd()) }).unwrap();
        // SAFETY: as above.
        let second = SharedWords::map_inherited(unsafe { libc::dup(file.as_raw_fd()) }).unwrap();
        assert_eq!(first.words().len(), 1024);
        first.words()[1000].store(42, Ordering::Relaxed);
        assert_eq!(second.words()[1000].load(Ordering::Relaxed), 42);
    }
}
