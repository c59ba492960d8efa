//! The processes a bench run starts (servers, agents): spawned from this very binary, their
//! stderr drained into a short tail for error messages, their peak resident memory read from
//! `/proc` before they are stopped, killed on `Drop` whatever happens.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use parking_lot::Mutex;

/// Lines of a process's stderr kept for an error message.
const LOG_TAIL_LINES: usize = 40;

/// How long a process has to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process of the bench.
pub struct Proc {
    /// What it is, for messages (`serve`, `agent tu-phap` ...).
    pub name: String,
    child: Child,
    /// The last lines of its stderr.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Spawns `cmd` (stdout piped, stderr drained) and, with `ready`, waits until a stderr line
    /// starts with it; answers the rest of that line.
    pub fn spawn(name: &str, mut cmd: Command, ready: Option<&str>) -> Result<(Proc, String)> {
        die_with_parent(&mut cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let prefix = ready.map(str::to_string);
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !told
                    && let Some(p) = &prefix
                    && let Some(rest) = line.strip_prefix(p.as_str())
                {
                    let _ = tx.send(rest.to_string());
                    told = true;
                }
                let mut log = sink.lock();
                if log.len() == LOG_TAIL_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let mut proc = Proc {
            name: name.to_string(),
            child,
            log,
        };
        let rest = match ready {
            None => String::new(),
            Some(p) => {
                let deadline = Instant::now() + READY_TIMEOUT;
                loop {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(rest) => break rest,
                        // Its stderr closed: it has exited, or soon will.
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    if let Some(status) = proc.child.try_wait()? {
                        bail!(
                            "{name} exited ({status}) before it was ready:\n{}",
                            proc.tail()
                        );
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "{name} did not print `{p}` within {} s:\n{}",
                            READY_TIMEOUT.as_secs(),
                            proc.tail()
                        );
                    }
                }
            }
        };
        Ok((proc, rest))
    }

    /// The last lines it wrote to stderr.
    pub fn tail(&self) -> String {
        self.log
            .lock()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory so far, in bytes (`VmHWM`), while it runs.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_of(&format!("/proc/{}/status", self.child.id()))
    }

    /// Sends `signal` (SIGINT or SIGTERM: both stop lienthong's commands cleanly).
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) on our own child, not yet reaped (we hold the `Child`).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        if rc != 0 {
            bail!(
                "cannot signal {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for it to exit; answers its status and stdout.
    pub fn wait(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not stop within {} s:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        if !status.success() {
            return Err(anyhow!("{} failed ({status}):\n{}", self.name, self.tail()));
        }
        Ok((status, out))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes the kernel kill `cmd`'s process when the bench dies (SIGKILL, a CI timeout), when no
/// `Drop` runs: no server or agent is left behind holding ports and disk.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `VmHWM` of a `/proc/<pid>/status` file, in bytes.
pub fn peak_rss_of(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's own peak resident memory, in bytes.
pub fn own_peak_rss_bytes() -> Option<u64> {
    peak_rss_of("/proc/self/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_of_this_process_is_read_from_proc() {
        let peak = own_peak_rss_bytes().expect("Linux /proc");
        assert!(
            peak > 1024 * 1024,
            "a test binary holds more than 1 MiB: {peak}"
        );
    }

    #[test]
    fn a_ready_line_is_found_and_a_silent_exit_is_reported() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting >&2; echo 'ready at 127.0.0.1:9' >&2; sleep 5",
        ]);
        let (p, rest) = Proc::spawn("sh", cmd, Some("ready at ")).expect("ready");
        assert_eq!(rest, "127.0.0.1:9");
        assert!(p.peak_rss_bytes().is_some());
        drop(p);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = Proc::spawn("sh", cmd, Some("ready"))
            .err()
            .expect("no ready line");
        let text = format!("{err:#}");
        assert!(text.contains("exited") && text.contains("boom"), "{text}");
    }
}
