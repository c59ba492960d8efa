//! CPU time a run used, by process and by thread, read from `/proc`.
//!
//! Throughput on a shared machine drifts by a fifth from one run to the next, which hides a
//! change that saves a tenth of the work. The CPU time spent per dossier moves much less with
//! the machine's load, and split by thread it shows where a change took effect (the store's
//! writer thread, the async workers, sled's I/O threads ...). [`CpuMeter`] takes the counters of
//! each process before the measured part of a run and again after it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// The CPU time one process used over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuUse {
    /// The process, as the run names it (`bench`, `serve`, `agent tu-phap` ...).
    pub process: String,
    /// User and system time of the whole process, threads that ended meanwhile included.
    pub total: Duration,
    /// User and system time by thread name (a trailing `-<n>` dropped, so `sled-io-3` counts
    /// as `sled-io`), for the threads alive at the end.
    pub threads: BTreeMap<String, Duration>,
}

/// Counters of one process at the start of a run.
struct Start {
    process: String,
    /// `self`, or the process id.
    pid: String,
    total: Duration,
    /// By thread id: name and time.
    threads: BTreeMap<String, (String, Duration)>,
}

/// Measures the CPU time processes use between [`CpuMeter::start`] and [`CpuMeter::stop`].
pub struct CpuMeter {
    starts: Vec<Start>,
}

impl CpuMeter {
    /// Reads the counters of `processes`: a name each, and its process id (`None`: this one).
    /// A process whose counters cannot be read (not Linux, gone) is left out.
    pub fn start(processes: &[(String, Option<u32>)]) -> CpuMeter {
        let starts = processes
            .iter()
            .filter_map(|(name, pid)| {
                let pid = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
                Some(Start {
                    process: name.clone(),
                    total: process_time(&pid)?,
                    threads: thread_times(&pid),
                    pid,
                })
            })
            .collect();
        CpuMeter { starts }
    }

    /// What each process used since [`CpuMeter::start`]; processes gone meanwhile are left out.
    pub fn stop(self) -> Vec<CpuUse> {
        self.starts
            .into_iter()
            .filter_map(|s| {
                let total = process_time(&s.pid)?.saturating_sub(s.total);
                let mut threads = BTreeMap::new();
                for (tid, (name, now)) in thread_times(&s.pid) {
                    let before = s.threads.get(&tid).map_or(Duration::ZERO, |(_, t)| *t);
                    *threads.entry(group(&name)).or_insert(Duration::ZERO) +=
                        now.saturating_sub(before);
                }
                Some(CpuUse {
                    process: s.process,
                    total,
                    threads,
                })
            })
            .collect()
    }
}

/// A thread's name without a trailing `-<n>` (the numbered members of one pool).
fn group(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((stem, n)) if !stem.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            stem.to_string()
        }
        _ => name.to_string(),
    }
}

/// The kernel's clock ticks per second, the unit of `/proc/*/stat` times.
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf(3) reads a constant of the system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The name and the user + system time in a `/proc/.../stat` line. The name is in parentheses
/// and may hold spaces or parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<(String, Duration)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3), ... utime (field 14), stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime.saturating_add(stime);
    let per_s = ticks_per_s();
    let time = Duration::from_secs(ticks / per_s)
        + Duration::from_nanos((ticks % per_s) * 1_000_000_000 / per_s);
    Some((name, time))
}

fn process_time(pid: &str) -> Option<Duration> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&line).map(|(_, t)| t)
}

fn thread_times(pid: &str) -> BTreeMap<String, (String, Duration)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let line = std::fs::read_to_string(task.path().join("stat")).ok()?;
            Some((
                task.file_name().to_string_lossy().into_owned(),
                parse_stat(&line)?,
            ))
        })
        .collect()
}

/// Thread groups shown by name in the text report; the rest are summed as `other`.
const THREADS_SHOWN: usize = 4;

/// Microseconds per dossier, to one decimal.
fn per_dossier_us(t: Duration, dossiers: u64) -> f64 {
    (t.as_secs_f64() * 1e6 / dossiers.max(1) as f64 * 10.0).round() / 10.0
}

/// The JSON of `bench e2e`'s `cpu_us_per_dossier`: by process, its total and its threads.
pub fn to_json(uses: &[CpuUse], dossiers: u64) -> Value {
    uses.iter()
        .map(|u| {
            let threads: serde_json::Map<String, Value> = u
                .threads
                .iter()
                .map(|(name, t)| (name.clone(), per_dossier_us(*t, dossiers).into()))
                .collect();
            (
                u.process.clone(),
                json!({ "total": per_dossier_us(u.total, dossiers), "threads": threads }),
            )
        })
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// One line per process: `bench 612 µs (lienthong-store 240, tokio-rt-worker 200, ...)`.
pub fn to_text(uses: &[CpuUse], dossiers: u64) -> Vec<String> {
    uses.iter()
        .map(|u| {
            let mut threads: Vec<(&String, &Duration)> = u.threads.iter().collect();
            threads.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let mut parts: Vec<String> = threads
                .iter()
                .take(THREADS_SHOWN)
                .map(|(name, t)| format!("{name} {:.0}", per_dossier_us(**t, dossiers)))
                .collect();
            let rest: Duration = threads.iter().skip(THREADS_SHOWN).map(|(_, t)| **t).sum();
            if !rest.is_zero() {
                parts.push(format!("other {:.0}", per_dossier_us(rest, dossiers)));
            }
            format!(
                "{} {:.0} µs ({})",
                u.process,
                per_dossier_us(u.total, dossiers),
                parts.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_time_even_with_spaces_and_parentheses() {
        let per_s = ticks_per_s();
        let line = format!(
            "4242 (tokio (rt) worker) S 1 2 3 4 5 6 7 8 9 10 {} {} 0 0 20 0 1 0",
            per_s * 2,
            per_s / 2
        );
        assert_eq!(
            parse_stat(&line),
            Some((
                "tokio (rt) worker".to_string(),
                Duration::from_millis(2_500)
            ))
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn numbered_pool_threads_count_together() {
        assert_eq!(group("sled-io-3"), "sled-io");
        assert_eq!(group("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(group("lienthong-fsync"), "lienthong-fsync");
        assert_eq!(group("-7"), "-7");
    }

    #[test]
    fn this_process_is_measured_by_thread() {
        let meter = CpuMeter::start(&[("bench".to_string(), None)]);
        let (spun_tx, spun_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let spin = std::thread::Builder::new()
            .name("spin-1".into())
            .spawn(move || {
                // Spins until it used 150 ms of CPU by its own counter, however busy the machine.
                let own = || {
                    std::fs::read_to_string("/proc/thread-self/stat")
                        .ok()
                        .and_then(|l| parse_stat(&l))
                        .map(|(_, t)| t)
                };
                let mut x = 0u64;
                while own().is_some_and(|t| t < Duration::from_millis(150)) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                let _ = spun_tx.send(());
                // Still alive when the meter stops: its time is listed under its pool's name.
                let _ = end_rx.recv();
                x
            })
            .expect("spawn");
        spun_rx.recv().expect("the thread spun");
        let uses = meter.stop();
        drop(end_tx);
        spin.join().expect("join");
        assert_eq!(uses.len(), 1);
        let spun = uses[0].threads.get("spin").copied().unwrap_or_default();
        assert!(
            spun >= Duration::from_millis(150),
            "a thread that spun 150 ms of CPU is listed with {spun:?}"
        );
        // The process's time and each thread's are rounded to clock ticks and scaled by the
        // kernel separately (and the process's is read first), so the total may trail its
        // threads' by a few ticks: a CI run saw it fall short of the spinning thread's.
        let slack = Duration::from_millis(50);
        assert!(
            uses[0].total + slack >= spun,
            "the process's total {:?} leaves out the spinning thread's {spun:?}",
            uses[0].total
        );
        let text = to_text(&uses, 10);
        assert!(
            text[0].starts_with("bench ") && text[0].contains("spin "),
            "{text:?}"
        );
        let json = to_json(&uses, 10);
        assert!(json["bench"]["threads"]["spin"].as_f64().unwrap_or(0.0) >= 15_000.0);
    }
}
