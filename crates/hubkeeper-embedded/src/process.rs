//! Child-process plumbing shared by both servers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::{io_err, EmbeddedError};

/// The user a server runs as: ourselves, or `nobody` when we are root (Postgres refuses root).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
    pub switched: bool,
}

impl RunAs {
    pub fn for_postgres() -> Self {
        if Uid::effective().is_root() {
            let (uid, gid) = match User::from_name("nobody") {
                Ok(Some(user)) => (user.uid, user.gid),
                _ => (Uid::from_raw(65534), Gid::from_raw(65534)),
            };
            Self {
                uid,
                gid,
                switched: true,
            }
        } else {
            Self::current()
        }
    }

    pub fn current() -> Self {
        Self {
            uid: Uid::effective(),
            gid: Gid::effective(),
            switched: false,
        }
    }

    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        if self.switched {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
            // Drop root's supplementary groups too.
            cmd.env("HOME", "/tmp");
        }
    }

    /// Makes `path` (and everything below it) owned by this user.
    pub fn chown_tree(&self, path: &Path) -> Result<(), EmbeddedError> {
        if !self.switched {
            return Ok(());
        }
        chown_recursive(path, self.uid, self.gid)
    }

    /// Whether this user can reach `path` through its ancestors (needs search permission on each).
    pub fn can_traverse(&self, path: &Path) -> bool {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !self.switched {
            return true;
        }
        let mut current = path.parent();
        while let Some(dir) = current {
            if let Ok(meta) = std::fs::metadata(dir) {
                let mode = meta.permissions().mode();
                let ok = if meta.uid() == self.uid.as_raw() {
                    mode & 0o100 != 0
                } else if meta.gid() == self.gid.as_raw() {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                };
                if !ok {
                    return false;
                }
            }
            current = dir.parent();
        }
        true
    }
}

fn chown_recursive(path: &Path, uid: Uid, gid: Gid) -> Result<(), EmbeddedError> {
    nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|e| EmbeddedError::Command {
        what: format!("chown {}", path.display()),
        detail: e.to_string(),
    })?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            chown_recursive(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Spawns a server child: its own process group, output appended to `log`, and a parent-death
/// signal so that it does not outlive us if we are killed.
pub(crate) fn spawn_server(
    mut cmd: Command,
    log: &Path,
    run_as: RunAs,
    death_signal: Signal,
) -> Result<Child, EmbeddedError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    run_as.apply(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing. It runs after the uid
    // switch, which would otherwise clear the parent-death signal.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(death_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    cmd.spawn().map_err(|e| EmbeddedError::Command {
        what: format!("starting {:?}", cmd.get_program()),
        detail: e.to_string(),
    })
}

/// Runs a setup command to completion, capturing its output for the error message.
pub(crate) fn run_to_end(mut cmd: Command, run_as: RunAs, what: &str) -> Result<(), EmbeddedError> {
    run_as.apply(&mut cmd);
    let output = cmd.output().map_err(|e| EmbeddedError::Command {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            what: what.into(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// Sends `signal` and waits up to `grace` for the child to exit, then kills it.
pub(crate) fn stop_child(child: &mut Child, signal: Signal, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a server left running by an earlier, killed run (its pid read from a pid file).
pub(crate) fn stop_stale(pid: i32, signal: Signal, grace: Duration) {
    let pid = Pid::from_raw(pid);
    if kill(pid, None).is_err() {
        return;
    }
    tracing::warn!(
        pid = pid.as_raw(),
        "stopping a server left over by an earlier run"
    );
    let _ = kill(pid, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if kill(pid, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

/// Locates an executable: an explicit path from the environment, then candidate paths, then PATH.
pub(crate) fn find_binary(
    name: &'static str,
    env_var: &str,
    candidates: &[std::path::PathBuf],
) -> Result<std::path::PathBuf, EmbeddedError> {
    if let Ok(explicit) = std::env::var(env_var) {
        let p = std::path::PathBuf::from(explicit);
        if p.is_file() {
            return Ok(p);
        }
        return Err(EmbeddedError::BinaryNotFound(
            name,
            format!("{env_var}={} does not exist", p.display()),
        ));
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(EmbeddedError::BinaryNotFound(
        name,
        format!("set {env_var}, or run scripts/bootstrap.sh to install it"),
    ))
}
