//! The supervisor's spawn of a step: the environment it inherits is made once, as C strings,
//! and each step's variables only replace or add entries, so a spawn allocates for its own
//! arguments and variables and nothing else (`std::process::Command` copied the whole
//! environment into a map and back for every spawn: callgrind, about half of what
//! `Command::spawn` executed). The process is made as glibc's `posix_spawn(3)` makes it, a
//! `clone(CLONE_VM | CLONE_VFORK)` onto a stack of its own, with a child that makes only the
//! system calls this process's state calls for ([`clone_exec`]).
//!
//! What a step gets is what `std::process::Command` gave it: a process group of its own,
//! stdin `/dev/null`, stdout and stderr the two file descriptors received, an empty signal
//! mask and SIGPIPE at its default action, the program searched in the step's `PATH` when it
//! sets one and else in the supervisor's (as `execvp(3)`; `/bin:/usr/bin` without any), and
//! the OS error of a failed `exec` or `chdir` as the spawn's error.

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
    /// The signals each step's child sets to their default action ([`signals_to_reset`]).
    reset: Vec<libc::c_int>,
    /// Where each step's child runs until it `exec`s.
    stack: ChildStack,
}

impl Spawner {
    /// Takes this process's environment as the one steps inherit, and its signal actions as
    /// they are now (call it after changing them).
    ///
    /// # Errors
    /// `/dev/null` cannot be opened, or the child's stack cannot be mapped.
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
            reset: signals_to_reset(),
            stack: ChildStack::new()?,
        })
    }

    /// Starts `program` with `args`, the inherited environment with `env` set over it (later
    /// pairs win), in `cwd` (`None`: the supervisor's), in a new process group; returns its
    /// pid (also its process group id).
    ///
    /// # Errors
    /// A NUL byte in the program, an argument or a variable (`InvalidInput`); the program not
    /// found in `PATH` (`ENOENT`, or `EACCES` when only files that cannot be executed were); or
    /// the error of the spawn (the `exec`, the `chdir` or a `dup2` failed in the child, or no
    /// process could be made).
    pub(super) fn spawn(
        &mut self,
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
        clone_exec(
            &mut self.stack,
            &self.reset,
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

/// The stack the child of [`clone_exec`] runs on between `clone(2)` and `execve(2)`: one
/// mapping for every spawn (the supervisor is suspended while the child uses it, and spawns
/// one step at a time), its lowest page a guard.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Bytes mapped, guard page included: the child only makes system calls.
    const LEN: usize = 64 * 1024;

    fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        #[allow(unsafe_code)]
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Self {
                base,
                len: Self::LEN,
            };
            if libc::mprotect(base, page_size(), libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&mut self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which `clone(2)` takes as the stack top.
        #[allow(unsafe_code)]
        unsafe {
            self.base.cast::<u8>().add(self.len).cast()
        }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no child runs on it (each ends
        // or execs before `clone` returns).
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// The signals whose action this process changed from what `exec` keeps: each caught one
/// (a handler, which `exec` resets anyway but which must not run in the child before it)
/// and SIGPIPE (ignored by Rust programs, and an ignored signal stays ignored across
/// `exec`). The child sets each to its default action.
fn signals_to_reset() -> Vec<libc::c_int> {
    let mut reset = vec![libc::SIGPIPE];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGPIPE || sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a query (no new action); `old` is written by the call.
        #[allow(unsafe_code)]
        let handler = unsafe {
            let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) != 0 {
                continue;
            }
            old.assume_init().sa_sigaction
        };
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            reset.push(sig);
        }
    }
    reset
}

/// What the child of [`clone_exec`] reads, and the error it leaves for the parent.
#[repr(C)]
struct ChildArgs {
    file: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    cwd: *const libc::c_char,
    fds: [libc::c_int; 3],
    reset: *const libc::c_int,
    reset_len: usize,
    /// The `errno` of the child's call that failed (0 while none did).
    err: libc::c_int,
}

/// The child between `clone(2)` and `execve(2)`: it shares the supervisor's memory and runs
/// on [`ChildStack`], so it makes system calls and nothing else (no allocation, no lock),
/// as glibc's `posix_spawn` child does. It returns only by `execve` or `_exit(127)`.
#[allow(unsafe_code)]
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `clone_exec`, alive while the parent is suspended;
    // every pointer in it is valid (NUL-terminated strings and arrays); the calls are
    // async-signal-safe system call wrappers.
    unsafe {
        let a = &mut *arg.cast::<ChildArgs>();
        let fail = |a: &mut ChildArgs| -> ! {
            a.err = *libc::__errno_location();
            libc::_exit(127)
        };
        let mut dfl = std::mem::zeroed::<libc::sigaction>();
        dfl.sa_sigaction = libc::SIG_DFL;
        for i in 0..a.reset_len {
            // A signal this process cannot set (glibc's own) keeps its action.
            libc::sigaction(*a.reset.add(i), &dfl, std::ptr::null_mut());
        }
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        for (target, fd) in a.fds.into_iter().enumerate() {
            let target = target as libc::c_int;
            if fd == target {
                // Already in place: only its close-on-exec flag goes (as posix_spawn does).
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    fail(a);
                }
            } else if libc::dup2(fd, target) < 0 {
                fail(a);
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            fail(a);
        }
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(a.file, a.argv.cast(), a.envp.cast());
        fail(a)
    }
}

/// Starts `file` with `argv` and `envp` as `posix_spawn(3)` would with a new process group,
/// an empty signal mask, SIGPIPE at its default action and `fds` as stdin, stdout and
/// stderr, in `cwd`: `clone(CLONE_VM | CLONE_VFORK)` onto `stack`, then, in the child, only
/// what differs from the supervisor. glibc's `posix_spawn` child queries and sets the action
/// of every signal (about 120 `rt_sigaction` calls, some 40 µs a spawn on this project's
/// benchmark machine); this one sets those of `reset` ([`signals_to_reset`]).
#[allow(unsafe_code)]
fn clone_exec(
    stack: &mut ChildStack,
    reset: &[libc::c_int],
    file: &CStr,
    argv: &[CString],
    envp: &[&CStr],
    cwd: Option<&CStr>,
    fds: [i32; 3],
) -> io::Result<i32> {
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let mut args = ChildArgs {
        file: file.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.map_or(std::ptr::null(), CStr::as_ptr),
        fds,
        reset: reset.as_ptr(),
        reset_len: reset.len(),
        err: 0,
    };
    // SAFETY: every signal is blocked around the clone, so no handler of this process runs
    // in the child before it resets them; the child runs on `stack` (exclusively borrowed)
    // and this process is suspended until it has called `execve` or `_exit` (CLONE_VFORK),
    // so `args` and what it points to outlive its use; `err` is read after that.
    unsafe {
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of_mut!(args).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        let err = std::ptr::read_volatile(std::ptr::addr_of!(args.err));
        if err != 0 {
            // It has exited: reap it here, so the supervisor never sees this pid.
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            return Err(io::Error::from_raw_os_error(err));
        }
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
