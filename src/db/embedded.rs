//! The embedded PostgreSQL cluster used when `DATABASE_URL` is unset.
//!
//! A private cluster under `$FORTIFILE_DATA_DIR/postgres`, made on first use with the
//! machine's own PostgreSQL server binaries. It listens only on a Unix socket in
//! that directory (mode 0700, no TCP), is reused by later starts, and is stopped
//! by the process that started it. A process that finds it running attaches.
//!
//! `initdb` refuses to run as root, so as root the cluster runs as the `postgres`
//! system user and its directory belongs to that user.

use std::{
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;

/// The port only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";
const SYSTEM_USER: &str = "postgres";
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    bindir: PathBuf,
    run_as: Option<String>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Makes sure the cluster under `data_dir/postgres` exists and runs.
    pub fn ensure(data_dir: &Path) -> anyhow::Result<Self> {
        let bindir = find_bindir(&path_dirs(), pg_config_bindir(), Path::new("/usr/lib/postgresql"))?;
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
        let root = data_dir.join("postgres");
        let socket = root.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the data directory path {} is too long for PostgreSQL's Unix socket \
                 (at most {MAX_SOCKET_PATH} bytes for {}): set FORTIFILE_DATA_DIR to a shorter path",
                data_dir.display(),
                socket.display()
            );
        }

        let run_as = if nix::unistd::geteuid().is_root() { Some(SYSTEM_USER.to_string()) } else { None };
        prepare_root(&root, run_as.as_deref())?;

        let mut pg = EmbeddedPostgres { root, bindir, run_as, started_here: false };
        if !pg.pgdata().join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        if !pg.is_running()? {
            pg.start()?;
        }
        Ok(pg)
    }

    /// The directory holding the cluster, its socket and its log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pgdata(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// For a cluster this process started: a handle that can start it again
    /// if it stops under the server (see [`EmbeddedPostgres::restart_if_stopped`]).
    pub fn keeper(&self) -> Option<EmbeddedPostgres> {
        self.started_here.then(|| EmbeddedPostgres {
            root: self.root.clone(),
            bindir: self.bindir.clone(),
            run_as: self.run_as.clone(),
            started_here: true,
        })
    }

    /// Starts the cluster again if it is not running (PostgreSQL recovers from
    /// its WAL on the way up); returns whether it had to. Blocking.
    pub fn restart_if_stopped(&mut self) -> anyhow::Result<bool> {
        // Cheap first: the postmaster's pid file names a live process.
        let pid = fs::read_to_string(self.pgdata().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) || self.is_running()? {
            return Ok(false);
        }
        self.start()?;
        Ok(true)
    }

    /// Connection options for `database` as the cluster's superuser (the owner).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.root).port(PORT).username(SUPERUSER).database(database)
    }

    /// Stops the cluster if this process started it; a cluster we attached to is
    /// left running for its owner.
    pub fn stop(self) {
        if !self.started_here {
            return;
        }
        let pgdata = self.pgdata();
        match self.pg(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
            ],
        ) {
            Ok(out) if out.status.success() => tracing::info!("embedded PostgreSQL stopped"),
            Ok(out) => tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "pg_ctl stop failed"),
            Err(e) => tracing::warn!(error = %e, "pg_ctl stop failed"),
        }
    }

    fn initdb(&self) -> anyhow::Result<()> {
        tracing::info!(path = %self.pgdata().display(), "creating the embedded PostgreSQL cluster");
        let pgdata = self.pgdata();
        let out = self.pg(
            "initdb",
            [
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(SUPERUSER),
                // Only local socket connections exist, and the socket's directory is
                // private (0700) to the cluster's user.
                OsStr::new("--auth-local=trust"),
                OsStr::new("--auth-host=reject"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--no-locale"),
            ],
        )?;
        if !out.status.success() {
            bail!("initdb failed for {}: {}", pgdata.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let conf = pgdata.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
        text.push_str("\n# FortiFile: socket-only settings\ninclude_if_exists = 'fortifile.conf'\n");
        self.write_as_owner(&conf, &text)
    }

    fn write_settings(&self) -> anyhow::Result<()> {
        let socket_dir = self.root.to_string_lossy().replace('\'', "''");
        let text = format!(
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{socket_dir}'\n\
             unix_socket_permissions = 0700\nmax_connections = 200\n"
        );
        self.write_as_owner(&self.pgdata().join("fortifile.conf"), &text)
    }

    /// Writes a file in the cluster's directory and gives it to the cluster's user.
    fn write_as_owner(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        if let Some(user) = &self.run_as {
            let u = system_user(user)?;
            std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    fn is_running(&self) -> anyhow::Result<bool> {
        let pgdata = self.pgdata();
        let out = self.pg("pg_ctl", [OsStr::new("status"), OsStr::new("-D"), pgdata.as_os_str()])?;
        Ok(out.status.success())
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.write_settings()?;
        let pgdata = self.pgdata();
        let log = self.root.join("postgres.log");
        let out = self.pg(
            "pg_ctl",
            [
                OsStr::new("start"),
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
            ],
        )?;
        if out.status.success() {
            tracing::info!(socket = %self.root.display(), "embedded PostgreSQL started");
            self.started_here = true;
            return Ok(());
        }
        // Another process may have started it at the same moment: attach to that.
        if self.is_running()? {
            return Ok(());
        }
        let tail = fs::read_to_string(&log)
            .map(|t| t.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        bail!("could not start the embedded PostgreSQL (log {}):\n{}", log.display(), tail)
    }

    /// Runs one of the PostgreSQL programs, as the cluster's user when we are root.
    fn pg<'a>(&self, program: &str, args: impl IntoIterator<Item = &'a OsStr>) -> anyhow::Result<Output> {
        let exe = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser()?);
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(&self.root);
        cmd.output().with_context(|| format!("running {}", exe.display()))
    }
}

fn system_user(name: &str) -> anyhow::Result<nix::unistd::User> {
    nix::unistd::User::from_name(name).ok().flatten().with_context(|| {
        format!(
            "running as root, the embedded PostgreSQL needs the system user {name:?} \
                 (created by the Debian/Ubuntu package `postgresql`), or set DATABASE_URL"
        )
    })
}

/// Creates the cluster's directory, private to the user it runs as, and checks that
/// this user can reach it.
fn prepare_root(root: &Path, run_as: Option<&str>) -> anyhow::Result<()> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let Some(user) = run_as else {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on {}", root.display()))?;
        return Ok(());
    };
    let u = system_user(user)?;
    std::os::unix::fs::chown(root, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
        .with_context(|| format!("cannot give {} to the system user {user:?}", root.display()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on {}", root.display()))?;
    let reachable = Command::new(runuser()?).args(["-u", user, "--", "test", "-w"]).arg(root).status()?;
    if !reachable.success() {
        bail!(
            "the system user {user:?} cannot reach {}: every parent directory must be searchable \
             by it (e.g. chmod o+x on each), or set FORTIFILE_DATA_DIR to a directory it can reach",
            root.display()
        );
    }
    Ok(())
}

/// `runuser` (util-linux), which root uses to run the cluster as its own user;
/// looked up on PATH and in the sbin directories, which a root PATH may lack.
fn runuser() -> anyhow::Result<PathBuf> {
    path_dirs()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("runuser"))
        .find(|p| p.is_file())
        .context("running as root, the embedded PostgreSQL needs `runuser` (Debian/Ubuntu package util-linux)")
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Finds a directory holding `initdb`, `pg_ctl` and `postgres`: on `PATH`, then
/// `pg_config --bindir`, then `<versions_root>/*/bin`, newest version first.
pub fn find_bindir(path: &[PathBuf], pg_config: Option<PathBuf>, versions_root: &Path) -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|p| dir.join(p).is_file());
    if let Some(dir) = path.iter().find(|d| complete(d)) {
        return Ok(dir.clone());
    }
    if let Some(dir) = pg_config.filter(|d| complete(d)) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    match versions.into_iter().next() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, via pg_config, \
             or under {}: install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL",
            versions_root.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bindir(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for p in ["initdb", "pg_ctl", "postgres"] {
            fs::write(dir.join(p), "").unwrap();
        }
    }

    #[test]
    fn the_newest_installed_version_is_chosen() {
        let tmp = std::env::temp_dir().join(format!("ff-bindir-{}", uuid::Uuid::new_v4()));
        fake_bindir(&tmp.join("13/bin"));
        fake_bindir(&tmp.join("16/bin"));
        fake_bindir(&tmp.join("9/bin"));
        let found = find_bindir(&[], None, &tmp).unwrap();
        assert_eq!(found, tmp.join("16/bin"));
        fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn path_wins_over_pg_config_and_versions() {
        let tmp = std::env::temp_dir().join(format!("ff-bindir-{}", uuid::Uuid::new_v4()));
        fake_bindir(&tmp.join("onpath"));
        fake_bindir(&tmp.join("cfg"));
        fake_bindir(&tmp.join("v/15/bin"));
        let found =
            find_bindir(&[tmp.join("empty"), tmp.join("onpath")], Some(tmp.join("cfg")), &tmp.join("v")).unwrap();
        assert_eq!(found, tmp.join("onpath"));
        let found = find_bindir(&[], Some(tmp.join("cfg")), &tmp.join("v")).unwrap();
        assert_eq!(found, tmp.join("cfg"));
        fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn missing_binaries_say_which_package_to_install() {
        let tmp = std::env::temp_dir().join(format!("ff-bindir-{}", uuid::Uuid::new_v4()));
        let err = find_bindir(std::slice::from_ref(&tmp), None, &tmp).unwrap_err().to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
    }
}
