//! Helpers shared by the benchmark drivers (`bench`, `models`, `scale`): building and starting
//! the binaries, pinning them to a CPU, stopping what they started ([`Guard`]), and reading
//! what `/proc` says about a process.
#![allow(dead_code)] // each driver uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod guard;
pub use guard::Guard;

/// Builds the release binaries and examples a driver runs, e.g. `["--bin", "evloop-server"]`.
pub fn build(targets: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status =
        Command::new(cargo).args(["build", "--release"]).args(targets).status().expect("run cargo build");
    assert!(status.success(), "cargo build failed");
}

/// Builds as [`build`] does, but says what went wrong instead of panicking.
pub fn try_build(targets: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    match Command::new(&cargo).args(["build", "--release"]).args(targets).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("cargo build --release {} failed ({status})", targets.join(" "))),
        Err(error) => Err(format!("cannot run {cargo}: {error}")),
    }
}

/// The path of a release binary (`evloop-server`) or, with `examples/` in front, example.
pub fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    format!("{target}/release/{name}")
}

/// `program`, pinned to `cpu` with `taskset` when one is given.
pub fn on_cpu(cpu: Option<u32>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string(), program]);
            command
        }
        None => Command::new(program),
    }
}

/// Starts a server and returns it with the address of its first startup line
/// (`<handler> listening on <addr>`).
pub fn start_server(mut command: Command) -> (Child, String) {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("a startup line");
    // `<handler> listening on <addr>`, evloop's followed by what it speaks in parentheses.
    let addr = line.split_whitespace().nth(3).unwrap_or_default().to_string();
    // A baseline whose dependencies are missing exits before its startup line: say so here,
    // not later as a loader complaining about an empty address.
    assert!(
        !addr.is_empty(),
        "{program} printed no address (are its dependencies installed? scripts/test installs them)"
    );
    (child, addr)
}

/// Starts a server as [`start_server`] does, guarded (stopped when the guard is dropped),
/// and waits at most `timeout` for its startup line. Its later output is drained, so it
/// never writes into a closed pipe. A failure is a sentence.
pub fn start_server_within(mut command: Command, timeout: Duration) -> Result<(Guard, String), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut server = Guard::spawn(&mut command, &format!("the server ({program})"), Duration::from_secs(30))?;
    let stdout = server.child().stdout.take().ok_or("the server's stdout is not piped")?;
    let (first, first_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = first.send(lines.next());
        lines.for_each(drop);
    });
    let line = match first_line.recv_timeout(timeout) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(format!("{program} exited before it listened ({:?})", server.stop())),
        Err(_) => return Err(format!("{program} printed no startup line within {timeout:?}")),
    };
    // `<handler> listening on <addr>`, evloop's followed by what it speaks in parentheses.
    match line.split_whitespace().nth(3) {
        Some(addr) => Ok((server, addr.to_string())),
        None => Err(format!("{program}'s startup line names no address: {line:?}")),
    }
}

/// Starts a server with `count` listeners and returns it with their addresses, in the order
/// of its startup lines (the order of its `--listen` flags).
pub fn start_listeners(mut command: Command, count: usize) -> (Child, Vec<String>) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the server");
    let mut startup = BufReader::new(child.stdout.take().expect("piped stdout"));
    let addrs = (0..count)
        .map(|_| {
            let mut line = String::new();
            startup.read_line(&mut line).expect("a startup line");
            // `<handler> listening on <addr> (<codec>)`
            line.split_whitespace().nth(3).expect("an address on the startup line").to_string()
        })
        .collect();
    (child, addrs)
}

/// Stops a server started by this driver (SIGTERM, then waits).
pub fn stop(child: &mut Child) {
    // SAFETY: kill() on our own child's PID has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if child.wait().is_err() {
        let _ = child.kill();
    }
}

/// The children of `pid` (a server's worker processes).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

/// A number field of `/proc/PID/status`, e.g. `VmRSS:` (KiB) or `Threads:`.
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process spent in user space and in the kernel, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub user_us: f64,
    pub system_us: f64,
}

impl CpuTime {
    /// What was spent between `earlier` and this.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user_us: self.user_us - earlier.user_us, system_us: self.system_us - earlier.system_us }
    }

    /// Both together.
    pub fn total_us(self) -> f64 {
        self.user_us + self.system_us
    }
}

/// The CPU time `pid` used so far, from `/proc/PID/stat` (clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> CpuTime {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return CpuTime::default() };
    let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0) as f64;
    CpuTime { user_us: ticks(11) * 10_000.0, system_us: ticks(12) * 10_000.0 }
}

/// User plus system CPU time of `pid`, in clock ticks (10 ms).
pub fn cpu_ticks(pid: u32) -> u64 {
    (cpu_time(pid).total_us() / 10_000.0) as u64
}

/// CPU time of this process's children that have been waited for: after a loader run, the
/// loader's own cost.
pub fn children_cpu_time() -> CpuTime {
    // SAFETY: getrusage only writes into the struct we pass, which lives for the call.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as f64 * 1e6 + time.tv_usec as f64;
    CpuTime { user_us: micros(usage.ru_utime), system_us: micros(usage.ru_stime) }
}

/// User plus system CPU time of this process's children that have been waited for, in
/// microseconds.
pub fn children_cpu_us() -> u64 {
    children_cpu_time().total_us() as u64
}

/// A CSV of numbers with a header, as the drivers record their runs: the rows (a cell that
/// is not a number reads 0) and a lookup of a column's index by name.
pub struct Table {
    header: Vec<String>,
    /// The rows, a number per column.
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    pub fn read(path: &std::path::Path) -> Table {
        Table::try_read(path).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Reads as [`Table::read`] does, saying what is wrong instead of panicking.
    pub fn try_read(path: &std::path::Path) -> Result<Table, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .ok_or_else(|| format!("{} is empty: no header", path.display()))?
            .split(',')
            .map(String::from)
            .collect();
        let width = header.len();
        // A row written before a column was added has no cell for it: it reads 0.
        let rows = lines
            .map(|line| {
                let mut row: Vec<f64> =
                    line.split(',').map(|cell| cell.parse::<f64>().unwrap_or(0.0)).collect();
                row.resize(width.max(row.len()), 0.0);
                row
            })
            .collect();
        Ok(Table { header, rows })
    }

    /// Whether it has a column `name`.
    pub fn has(&self, name: &str) -> bool {
        self.header.iter().any(|c| c == name)
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> usize {
        self.header.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}"))
    }

    /// The points `(x, y)` of columns `x` and `y`, one per row.
    pub fn points(&self, x: &str, y: &str) -> Vec<(f64, f64)> {
        let (x, y) = (self.column(x), self.column(y));
        self.rows.iter().map(|row| (row[x], row[y])).collect()
    }
}
