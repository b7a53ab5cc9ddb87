//! The supervisor's `posix_spawn(3)` of a step: the environment it inherits is made once, as
//! C strings, and each step's variables only replace or add entries, so a spawn allocates
//! for its own arguments and variables and nothing else. `std::process::Command` copied the
//! whole environment into a map and back for every spawn (callgrind: about half of what
//! `Command::spawn` executed).
//!
//! What a step gets is what `std::process::Command` gave it: a process group of its own,
//! stdin `/dev/null`, stdout and stderr the two file descriptors received, an empty signal
//! mask and SIGPIPE at its default action, the program searched in the step's `PATH` when it
//! sets one and else in the supervisor's (as `execvp(3)`; `/bin:/usr/bin` without any), and
//! the OS error of a failed `exec` or `chdir` as the spawn's error (glibc ≥ 2.24 reports it).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// `execvp(3)`'s search path when the environment has no `PATH` (glibc's `_CS_PATH`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What every spawn of one supervisor shares.
pub(super) struct Spawner {
    /// The supervisor's environment, one `NAME=value` each, in its order.
    base: Vec<CString>,
    /// The index in `base` of each name.
    names: HashMap<Vec<u8>, usize>,
    /// The supervisor's `PATH`.
    path: Option<OsString>,
    /// `/dev/null`, read-only: each step's stdin.
    null: OwnedFd,
}

impl Spawner {
    /// Takes this process's environment as the one steps inherit.
    ///
    /// # Errors
    /// `/dev/null` cannot be opened.
    pub(super) fn from_process() -> io::Result<Self> {
        let mut base = Vec::new();
        let mut names = HashMap::new();
        let mut path = None;
        for (name, value) in std::env::vars_os() {
            if name == "PATH" {
                path = Some(value.clone());
            }
            if let Some(entry) = entry(name.as_bytes(), value.as_bytes()) {
                // A name twice (only from a hand-made environment): both entries stay, as
                // this process has them; a step's variable replaces the first, which
                // getenv(3) reads.
                names.entry(name.into_vec()).or_insert(base.len());
                base.push(entry);
            }
        }
        let null = std::fs::File::open("/dev/null")?.into();
        Ok(Self {
            base,
            names,
            path,
            null,
        })
    }

    /// Starts `program` with `args`, the inherited environment with `env` set over it (later
    /// pairs win), in `cwd` (`None`: the supervisor's), in a new process group; returns its
    /// pid (also its process group id).
    ///
    /// # Errors
    /// A NUL byte in the program, an argument or a variable (`InvalidInput`); the program not
    /// found in `PATH` (`ENOENT`, or `EACCES` when only files that cannot be executed were); or
    /// the error of `posix_spawn` (the `exec` or the `chdir` failed in the child, or no
    /// process could be made).
    pub(super) fn spawn(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: Option<&str>,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
    ) -> io::Result<i32> {
        let nul = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "nul byte found in provided data",
            )
        };
        let argv: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| CString::new(a).map_err(|_| nul()))
            .collect::<Result<_, _>>()?;
        // The environment: the inherited entries, each replaced by the step's variable of the
        // same name, then the step's other variables in order.
        let mut envp: Vec<&CStr> = self.base.iter().map(CString::as_c_str).collect();
        let own: Vec<CString> = env
            .iter()
            .map(|(k, v)| entry(k.as_bytes(), v.as_bytes()).ok_or_else(nul))
            .collect::<Result<_, _>>()?;
        let mut added: Vec<(&str, usize)> = Vec::new();
        let mut step_path = None;
        for ((name, value), e) in env.iter().zip(&own) {
            if name == "PATH" {
                step_path = Some(value.as_str());
            }
            if let Some(&i) = self.names.get(name.as_bytes()) {
                envp[i] = e;
            } else if let Some(&(_, i)) = added.iter().find(|(n, _)| n == name) {
                envp[i] = e;
            } else {
                added.push((name, envp.len()));
                envp.push(e);
            }
        }
        let file = if program.contains('/') {
            argv[0].clone()
        } else {
            let search = match step_path {
                Some(p) => OsStr::new(p),
                None => self.path.as_deref().unwrap_or(OsStr::new(DEFAULT_PATH)),
            };
            let found = search_path(program, search, cwd.map(Path::new))?;
            CString::new(found.into_os_string().into_vec()).map_err(|_| nul())?
        };
        let cwd = cwd
            .map(|d| CString::new(d).map_err(|_| nul()))
            .transpose()?;
        posix_spawn(
            &file,
            &argv,
            &envp,
            cwd.as_deref(),
            [
                self.null.as_raw_fd(),
                stdout.as_raw_fd(),
                stderr.as_raw_fd(),
            ],
        )
    }
}

/// `name=value` as a C string; `None` when either holds a NUL byte.
fn entry(name: &[u8], value: &[u8]) -> Option<CString> {
    let mut e = Vec::with_capacity(name.len() + value.len() + 2);
    e.extend_from_slice(name);
    e.push(b'=');
    e.extend_from_slice(value);
    CString::new(e).ok()
}

/// The first `<dir>/<program>` of `search` (`:`-separated; an empty entry is the working
/// directory, `cwd` or the supervisor's) that is a file this process may execute, as
/// `execvp(3)` would find it.
///
/// # Errors
/// None found: `EACCES` when some entry named a file that cannot be executed, else `ENOENT`.
fn search_path(program: &str, search: &OsStr, cwd: Option<&Path>) -> io::Result<PathBuf> {
    use nix::unistd::{access, AccessFlags};
    let mut denied = false;
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(if dir.is_empty() { b"." } else { dir }));
        let candidate = dir.join(program);
        let at = match cwd {
            Some(c) if candidate.is_relative() => c.join(&candidate),
            _ => candidate.clone(),
        };
        match std::fs::metadata(&at) {
            Ok(m) if m.is_file() && access(&at, AccessFlags::X_OK).is_ok() => return Ok(candidate),
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// `posix_spawn(3)` of `file` with `argv` and `envp`: in a new process group, an empty signal
/// mask, SIGPIPE at its default action, `fds` as its stdin, stdout and stderr, in `cwd`.
#[allow(unsafe_code)]
fn posix_spawn(
    file: &CStr,
    argv: &[CString],
    envp: &[&CStr],
    cwd: Option<&CStr>,
    fds: [i32; 3],
) -> io::Result<i32> {
    use std::mem::MaybeUninit;
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    /// Destroys the attributes and file actions however the spawn ends.
    struct Guard {
        attr: *mut libc::posix_spawnattr_t,
        actions: *mut libc::posix_spawn_file_actions_t,
        attr_made: bool,
        actions_made: bool,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: each was initialised when its flag is set, and is destroyed once.
            unsafe {
                if self.actions_made {
                    libc::posix_spawn_file_actions_destroy(self.actions);
                }
                if self.attr_made {
                    libc::posix_spawnattr_destroy(self.attr);
                }
            }
        }
    }
    let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut guard = Guard {
        attr: attr.as_mut_ptr(),
        actions: actions.as_mut_ptr(),
        attr_made: false,
        actions_made: false,
    };
    // SAFETY: the attributes and file actions are initialised before use and destroyed by
    // `guard`; every pointer passed (paths, argv, envp, their NUL-terminated arrays) outlives
    // the call, which copies what it keeps; the signal sets are initialised by sigemptyset.
    unsafe {
        check(libc::posix_spawnattr_init(guard.attr))?;
        guard.attr_made = true;
        check(libc::posix_spawn_file_actions_init(guard.actions))?;
        guard.actions_made = true;

        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        let empty = empty.assume_init();
        let mut pipe = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(pipe.as_mut_ptr());
        libc::sigaddset(pipe.as_mut_ptr(), libc::SIGPIPE);
        let pipe = pipe.assume_init();
        check(libc::posix_spawnattr_setsigmask(guard.attr, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(guard.attr, &pipe))?;
        check(libc::posix_spawnattr_setpgroup(guard.attr, 0))?;
        check(libc::posix_spawnattr_setflags(
            guard.attr,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;
        for (target, fd) in fds.into_iter().enumerate() {
            check(libc::posix_spawn_file_actions_adddup2(
                guard.actions,
                fd,
                target as libc::c_int,
            ))?;
        }
        if let Some(dir) = cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(
                guard.actions,
                dir.as_ptr(),
            ))?;
        }
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            file.as_ptr(),
            guard.actions,
            guard.attr,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        ))?;
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_found_as_execvp_finds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let search = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(
            search_path("tool", OsStr::new(&search), None).expect("found"),
            exe
        );
        let denied = search_path("plain", OsStr::new(&search), None).expect_err("not executable");
        assert_eq!(denied.raw_os_error(), Some(libc::EACCES));
        let missing = search_path("nothing", OsStr::new(&search), None).expect_err("missing");
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        // An empty entry is the working directory: the step's when it has one.
        let found = search_path("tool", OsStr::new(":/nonexistent"), Some(dir.path()));
        assert_eq!(found.expect("in cwd"), Path::new("./tool"));
    }
}
