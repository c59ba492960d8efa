//! Helpers shared by the subcommands: logging, opening the store and the workflows, time zones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lienthong_engine::store::SledStore;
use lienthong_workflow::Catalog;

/// Default data directory of the embedded engine.
pub const DATA_DIR_DEFAULT: &str = "data";

/// Default workflow directory (relative to where the binary runs).
pub const WORKFLOWS_DIR_DEFAULT: &str = "workflows";

/// Logs to stderr; `RUST_LOG` overrides the level chosen by `-v`.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Opens (or creates) the sled store under `dir`.
pub fn open_store(dir: &Path) -> Result<Arc<SledStore>> {
    open_store_with(
        dir,
        lienthong_engine::store::sled_store::DISK_FREE_BYTES_MIN_DEFAULT,
    )
}

/// [`open_store`] keeping `disk_free_bytes_min` free on the file system (0: no reserve).
pub fn open_store_with(dir: &Path, disk_free_bytes_min: u64) -> Result<Arc<SledStore>> {
    let store = SledStore::open_with(dir, disk_free_bytes_min)
        .with_context(|| format!("cannot open the event store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Opens an existing store under `dir`; a missing directory is an error (reading commands must not
/// create an empty store by accident).
pub fn open_existing_store(dir: &Path) -> Result<Arc<SledStore>> {
    if !dir.exists() {
        anyhow::bail!(
            "no data directory at {}: run `lienthong demo --data {}` first, or pass --data",
            dir.display(),
            dir.display()
        );
    }
    open_store(dir)
}

/// Loads and validates the workflows under `dir`, printing every diagnostic on failure.
pub fn load_catalog(dir: &Path) -> Result<Arc<Catalog>> {
    match Catalog::load(dir) {
        Ok(c) => Ok(Arc::new(c)),
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}\n");
            }
            anyhow::bail!(
                "{} error(s) in the workflows under {}; fix them (see `lienthong check {}`)",
                diags.len(),
                dir.display(),
                dir.display()
            )
        }
    }
}

/// The workflow directory: the flag, else `./workflows`.
pub fn workflows_dir(flag: &Option<PathBuf>) -> PathBuf {
    flag.clone()
        .unwrap_or_else(|| PathBuf::from(WORKFLOWS_DIR_DEFAULT))
}

/// Parses a time-zone name (IANA) for display.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        anyhow::anyhow!("unknown time zone `{name}` (use an IANA name such as Asia/Ho_Chi_Minh)")
    })
}

/// `0`, `4096`, `512KiB`, `64MiB`, `2GiB`: a size in bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a whole number, e.g. 64MiB"))?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A duration such as `250ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 250ms, 2s or 1m"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a whole number before the unit"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_with_binary_units_and_refuse_others() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes(" 64MiB "), Ok(64 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert!(parse_bytes("64MB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("MiB").unwrap_err().contains("whole number"));
        assert!(
            parse_bytes("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
