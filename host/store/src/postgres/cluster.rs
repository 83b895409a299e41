//! A throwaway PostgreSQL cluster for tests and trials: `initdb` into a temporary directory, started on a free loopback port, removed when dropped; as root it runs as the `postgres` user, since the server refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster that only this process uses. Trust authentication on
/// loopback, no fsync: for tests, never for data that matters.
pub struct TestCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid, when this process is root.
    user: Option<(u32, u32)>,
    /// Commits flushed to disk (else fsync is off, for tests' speed).
    durable: bool,
}

impl TestCluster {
    /// Creates and starts a cluster. The server binaries are found with
    /// `pg_config --bindir` (or under `/usr/lib/postgresql/*/bin`).
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// [`Self::start`]; `durable` keeps PostgreSQL's own defaults (every
    /// commit flushed to disk), for measurements that compare stores.
    pub fn start_with(durable: bool) -> Result<Self, String> {
        let bindir = bindir()?;
        let user =
            if is_root() {
                Some(postgres_user().ok_or(
                    "running as root, and there is no `postgres` user to run the server as",
                )?)
            } else {
                None
            };
        let dir = std::env::temp_dir().join(format!("corral-pg-{:016x}", fastrand::u64(..)));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to `postgres`: {e}", dir.display()))?;
        }
        let mut cluster = TestCluster {
            dir,
            bindir,
            port: 0,
            user,
            durable,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str()
                    .ok_or("a temporary directory that is not UTF-8")?,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        cluster.port = free_port()?;
        cluster.start_server()?;
        cluster.watch()?;
        Ok(cluster)
    }

    /// Stops the server and removes its files once this process is gone,
    /// however it ends: a cluster kept in a `static` is never dropped.
    fn watch(&self) -> Result<(), String> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; '{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bindir.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
    }

    /// The URL of database `db` (see [`Self::create_database`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and gives its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        )?;
        Ok(self.url(name))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts the server again on the same port.
    pub fn start_server(&self) -> Result<(), String> {
        let data = self.data();
        let fast = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{fast}",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the server's programs (as `postgres` when root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.args(args).current_dir(&self.dir).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let out: Output = cmd
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(format!(
            "{program} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        ))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` are.
fn bindir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: `.ci/run` installs them (Debian: postgresql)".into()
    })
}

fn is_root() -> bool {
    // The owner of a file this process just created is its effective user.
    let probe = std::env::temp_dir().join(format!("corral-uid-{:016x}", fastrand::u64(..)));
    let uid = std::fs::write(&probe, b"")
        .and_then(|_| std::fs::metadata(&probe))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let _ = std::fs::remove_file(&probe);
    uid.is_ok_and(|u| u == 0)
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
