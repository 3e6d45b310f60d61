//! Everything that touches the operating system, in one place (as mio keeps `net/` and
//! `sys/`): addresses and the sockets bound to them, the non-blocking error kinds, and the
//! open-file limit. The server, the blocking models and the load generator all use these;
//! nothing else in the crate calls `libc` or builds a socket by hand.
//!
//! - [`address`]: listen and peer addresses, parsed and printed as users type them.
//! - `transport`: TCP and Unix listeners and streams behind one type each; UDP and
//!   `SO_REUSEPORT` binds.
//! - `nonblocking`: naming `WouldBlock`, `Interrupted` and friends.
//! - `rlimit`: the open-file limit.
//! - `process`: a worker dies with its parent; signals to children.

pub(crate) mod address;
pub(crate) mod nonblocking;
#[cfg(feature = "cli")]
pub(crate) mod process;
pub(crate) mod rlimit;
pub(crate) mod transport;
