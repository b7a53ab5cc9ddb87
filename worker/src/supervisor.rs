//! The step supervisor: a small single-threaded process per worker that spawns the worker's
//! step processes and SIGKILLs every one of them, grandchildren included, when the worker goes
//! away by any signal. The worker starts it once (the dagrid binary run again as
//! `dagrid __step-supervisor <worker id>`, see [`entry`]) and talks to it over a Unix socket
//! pair; docs/architecture.md ("Step processes") tells why and how.
//!
//! * [`Launcher`] is the worker's side: [`Launcher::spawn`] sends a [`Request::Spawn`] with the
//!   step's stdout and stderr pipes attached (`SCM_RIGHTS`) and gets back a [`Supervised`]
//!   process (its pid, which is also its process group id, and a receiver of its exit
//!   status). One task owns each direction of the socket.
//! * [`entry`] is the supervisor's side ([`serve`]): a `poll` loop over the socket and a
//!   `signalfd` for SIGCHLD, no async runtime.
//! * The frames are a 4-byte little-endian length and a MessagePack body ([`encode`],
//!   [`Decoder`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::env::Inherited;
use crate::exec::processes;

mod spawn;

/// The first argument that makes the dagrid binary a step supervisor
/// (`dagrid __step-supervisor <worker id>`); hidden from `--help`.
pub const ARG: &str = "__step-supervisor";

/// The largest frame either side accepts (64 MiB): far above any command line (the kernel
/// takes at most a few MiB of arguments and environment).
const MAX_FRAME: usize = 64 << 20;

/// How long the supervisor waits between two rounds of SIGKILL while it empties its tree of
/// processes at the end.
const KILL_ROUND: Duration = Duration::from_millis(20);

/// How long a step's [`Reply::Spawned`] is held back for its `Exited` to go with it (20 ms):
/// most short steps end within it, and one reply then wakes the worker instead of two. The
/// worker meanwhile only waits: the step runs, and its output waits in its pipe.
const SPAWNED_HOLD: Duration = Duration::from_millis(20);

/// A message from the worker to its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Start a step's process in a process group of its own, stdin `/dev/null`, stdout and
    /// stderr the two file descriptors sent with this frame (in that order). The process
    /// inherits the supervisor's environment (what the worker's steps inherit of the worker's,
    /// [`Inherited`]) with `env` set over it.
    Spawn {
        /// Names the reply.
        id: u64,
        /// The program, searched in `PATH` when it holds no `/` (as `std::process::Command`).
        program: String,
        /// Its arguments (without the program).
        args: Vec<String>,
        /// Variables set over the inherited environment, in order.
        env: Vec<(String, String)>,
        /// Working directory; `None`: the supervisor's (the worker's).
        cwd: Option<String>,
    },
}

/// A message from the supervisor to the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The step of request `id` runs as `pid` (also its process group id). Held back until
    /// the process exits or [`SPAWNED_HOLD`] passes, whichever is first: a short step's
    /// `Spawned` and `Exited` then reach the worker in one write, and wake it once.
    Spawned {
        /// The request's id.
        id: u64,
        /// The process id.
        pid: i32,
        /// When it was started (ms since the epoch); 0 from a supervisor that did not say.
        #[serde(default)]
        started_ms: u64,
    },
    /// The step of request `id` could not be started.
    Failed {
        /// The request's id.
        id: u64,
        /// The OS error number (`ENOENT`, `ETXTBSY`…), 0 when the error was not the OS's.
        errno: i32,
        /// The error, for people.
        message: String,
    },
    /// A process started by a [`Request::Spawn`] ended; `status` is its wait status as
    /// `waitpid` gives it (`ExitStatus::from_raw`). Always sent after its `Spawned`.
    Exited {
        /// The process id.
        pid: i32,
        /// The raw wait status.
        status: i32,
    },
}

/// One frame: a 4-byte little-endian length, then the MessagePack body.
///
/// # Errors
/// When the message does not encode (not expected for these types).
pub(crate) fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the step's command line and environment take {} bytes, more than {MAX_FRAME}",
                body.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Splits a byte stream into frames and decodes them.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Appends bytes read from the socket.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A frame longer than [`MAX_FRAME`] or a body that does not decode: the stream is
    /// corrupt and must be closed.
    pub(crate) fn next<T: for<'de> Deserialize<'de>>(&mut self) -> io::Result<Option<T>> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes, more than {MAX_FRAME}"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = rmp_serde::from_slice(&self.buf[4..4 + len])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.buf.drain(..4 + len);
        Ok(Some(message))
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisor process.

/// Runs the step supervisor when this process was started as one (`argv[1]` is [`ARG`]) and
/// returns its exit code; `None` otherwise. Call it first thing in `main`, before any thread
/// or runtime starts: the supervisor must stay single-threaded.
pub fn entry() -> Option<ExitCode> {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(ARG)) {
        return None;
    }
    Some(match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dagrid step supervisor: {e}");
            ExitCode::FAILURE
        }
    })
}

/// The supervisor's loop. Its stdin is the socket to the worker. It makes itself the child
/// subreaper of everything it starts (`PR_SET_CHILD_SUBREAPER`: orphaned grandchildren are
/// reparented to it), catches SIGINT, SIGTERM, SIGHUP and SIGQUIT with a handler that does
/// nothing (a Ctrl-C or a service manager's SIGTERM is for the worker, which ends the
/// supervisor by closing the socket; a caught signal, unlike an ignored or blocked one, is
/// back to its default in the steps) and reads SIGCHLD from a signalfd (SIGCHLD blocked; the
/// steps start with an empty mask, [`spawn`]). It ends when
/// the worker closes the socket or dies, after SIGKILLing every process it started and every
/// descendant left.
fn serve() -> io::Result<()> {
    let sock = StdUnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    if sock.peer_addr().is_err() {
        return Err(io::Error::other(
            "stdin is not a socket: this command is started by `dagrid worker`, not by hand",
        ));
    }
    // A session of its own (and so a process group of its own: a signal to the worker's
    // group does not reach it): every step is a member, in whatever group, unless it makes a
    // session itself, so the worker can find the steps if this process dies (`kill_session`).
    if nix::unistd::setsid().is_err() {
        // Already a group leader (not started by a worker): a group of its own is all it gets.
        let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    }
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_child_subreaper(true)?;
        // Like the worker: a step cannot read the other steps' environments from here.
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        catch_and_ignore(s)?;
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()?;
    let sfd = nix::sys::signalfd::SignalFd::with_flags(
        &chld,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )?;

    let mut server = Server {
        spawner: spawn::Spawner::from_process()?,
        sock,
        live: HashSet::new(),
        decoder: Decoder::default(),
        fds: VecDeque::new(),
        out: Vec::new(),
        held: VecDeque::new(),
    };
    let result = server.run(&sfd);
    server.kill_everything(&sfd);
    result
}

/// The supervisor's state.
struct Server {
    /// How steps are started.
    spawner: spawn::Spawner,
    sock: StdUnixStream,
    /// Process groups of the steps started and not reaped yet (their leader's pid).
    live: HashSet<i32>,
    decoder: Decoder,
    /// File descriptors received and not used yet, in order.
    fds: VecDeque<OwnedFd>,
    /// Replies not written yet: those of one wake-up leave in one write.
    out: Vec<u8>,
    /// `Spawned` replies held back ([`SPAWNED_HOLD`]), oldest first: request id, pid, when
    /// it was started (ms since the epoch) and when the hold ends.
    held: VecDeque<(u64, i32, u64, Instant)>,
}

impl Server {
    /// Serves requests until the worker closes the socket (`Ok`) or the stream is corrupt.
    fn run(&mut self, sfd: &nix::sys::signalfd::SignalFd) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.release_held(Instant::now())?;
            self.flush()?;
            // Until the first held `Spawned` is due (rounded up to whole ms), or a message.
            let timeout = match self.held.front() {
                Some(&(.., until)) => {
                    let ms = until
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    PollTimeout::from(ms.min(u128::from(u16::MAX)) as u16)
                }
                None => PollTimeout::NONE,
            };
            let (sock_ready, chld_ready) = {
                let mut fds = [
                    PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if chld_ready {
                while let Ok(Some(_)) = sfd.read_signal() {}
                self.reap()?;
            }
            if sock_ready {
                let n = self.receive(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                while let Some(request) = self.decoder.next::<Request>()? {
                    self.handle(request)?;
                }
            }
        }
    }

    /// One `recvmsg`: the bytes go to the decoder, the file descriptors to the queue.
    fn receive(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut space = nix::cmsg_space!([RawFd; 8]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let (n, fds) = loop {
            match socket::recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            fds.extend(received);
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(Errno::EINTR) => continue,
                // The worker died with data unread: the same as its end closing.
                Err(Errno::ECONNRESET) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        };
        for fd in fds {
            self.fds.push_back(owned(fd));
        }
        let bytes = &iov[0];
        self.decoder.push(&bytes[..n]);
        Ok(n)
    }

    fn handle(&mut self, request: Request) -> io::Result<()> {
        let Request::Spawn {
            id,
            program,
            args,
            env,
            cwd,
        } = request;
        let (Some(stdout), Some(stderr)) = (self.fds.pop_front(), self.fds.pop_front()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a spawn request came without its two file descriptors",
            ));
        };
        // The step starts with an empty signal mask (a shell's `wait` needs SIGCHLD), while
        // SIGCHLD stays blocked here for the signalfd.
        let spawned = self
            .spawner
            .spawn(&program, &args, &env, cwd.as_deref(), &stdout, &stderr);
        // The pipes' write ends close here: only the step holds them now.
        drop((stdout, stderr));
        match spawned {
            Ok(pid) => {
                self.live.insert(pid);
                self.held.push_back((
                    id,
                    pid,
                    dagrid_shared::model::now_ms(),
                    Instant::now() + SPAWNED_HOLD,
                ));
            }
            Err(e) => self.send(&Reply::Failed {
                id,
                errno: e.raw_os_error().unwrap_or(0),
                message: e.to_string(),
            })?,
        }
        self.reap()
    }

    /// Reaps every child that ended: a step's leader is reported, any other (an orphan
    /// reparented to this subreaper) is reaped silently.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, (code & 0xff) << 8),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    (pid, sig as i32 | if core { 0x80 } else { 0 })
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if self.live.remove(&pid.as_raw()) {
                if let Some(at) = self.held.iter().position(|h| h.1 == pid.as_raw()) {
                    if let Some((id, pid, started_ms, _)) = self.held.remove(at) {
                        self.send(&Reply::Spawned {
                            id,
                            pid,
                            started_ms,
                        })?;
                    }
                }
                self.send(&Reply::Exited {
                    pid: pid.as_raw(),
                    status,
                })?;
            }
        }
    }

    /// Sends the `Spawned` replies whose hold ended by `now`.
    fn release_held(&mut self, now: Instant) -> io::Result<()> {
        while let Some(&(id, pid, started_ms, until)) = self.held.front() {
            if until > now {
                break;
            }
            self.held.pop_front();
            self.send(&Reply::Spawned {
                id,
                pid,
                started_ms,
            })?;
        }
        Ok(())
    }

    /// Queues a reply; [`Server::flush`] writes it before the next wait.
    fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.out.extend_from_slice(&encode(reply)?);
        Ok(())
    }

    /// Writes the queued replies.
    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// SIGKILLs the process group of every step still running, then every process left in
    /// this supervisor's tree (orphans reparented to it) or session (processes that left
    /// their group), round after round until it has no child left.
    fn kill_everything(&mut self, sfd: &nix::sys::signalfd::SignalFd) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        for &pgid in &self.live {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let me = std::process::id() as i32;
        loop {
            for pid in children() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            kill_members(me);
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(KILL_ROUND).unwrap_or(PollTimeout::NONE),
            );
            while let Ok(Some(_)) = sfd.read_signal() {}
        }
    }
}

/// Catches `signal` with a handler that does nothing: the supervisor lives on, and the
/// processes it starts get the signal's default action back (exec resets caught signals).
#[allow(unsafe_code)]
fn catch_and_ignore(signal: Signal) -> io::Result<()> {
    extern "C" fn nothing(_: nix::libc::c_int) {}
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(nothing),
        nix::sys::signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all, which is async-signal-safe.
    unsafe { nix::sys::signal::sigaction(signal, &action) }?;
    Ok(())
}

/// Takes ownership of a file descriptor just received with `SCM_RIGHTS`.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed `fd` in this process for this message; nothing else
    // refers to it, so it has exactly one owner from here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// This process's children: `/proc/self/task/*/children` where the kernel has it, else the
/// processes whose parent is this one (`/proc/*/stat`).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if listed {
        return out;
    }
    let me = std::process::id() as i32;
    processes()
        .filter(|(_, stat)| stat.ppid == me)
        .map(|(pid, _)| pid)
        .collect()
}

/// SIGKILLs every process left in session `sid`: the session of a supervisor that died
/// (every step it started, and every process those started that did not make a session of
/// its own, whatever its process group), in rounds until a round finds none running. Linux
/// gives no new process the id of a session that still has members, so only those are hit.
fn kill_session(sid: i32) -> usize {
    let mut killed = 0;
    for _ in 0..5 {
        match kill_members(sid) {
            0 => break,
            n => killed += n,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed
}

/// One round of [`kill_session`]: SIGKILLs the running members of session `sid` but this
/// process; returns how many.
fn kill_members(sid: i32) -> usize {
    let me = std::process::id() as i32;
    processes()
        .filter(|&(pid, stat)| stat.session == sid && stat.running() && pid != me)
        .filter(|&(pid, _)| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
        .count()
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// How a worker starts its step processes.
#[derive(Debug)]
pub(crate) enum Launcher {
    /// From the worker itself (`posix_spawn`): nothing kills the steps if the worker dies
    /// (`--steps-die-with-worker false`, or no supervisor program configured).
    Direct,
    /// Through the worker's step supervisor.
    Supervised(Supervisor),
}

impl Launcher {
    /// Closes the supervisor, if any, and waits until it has exited (it SIGKILLs what is
    /// left of its tree first: at the end of a worker's shutdown, only processes the steps
    /// left behind).
    pub(crate) async fn shutdown(&self) {
        if let Launcher::Supervised(s) = self {
            s.shutdown().await;
        }
    }
}

/// A step started by the supervisor.
#[derive(Debug)]
pub(crate) struct Supervised {
    /// Its pid, also its process group id.
    pub(crate) pid: u32,
    /// When the supervisor started it (ms since the epoch; 0: not said).
    pub(crate) started_ms: u64,
    /// Its exit status, once it ended; an error when the supervisor died first (its group
    /// has then been SIGKILLed).
    pub(crate) exit: oneshot::Receiver<io::Result<ExitStatus>>,
}

/// The worker's end of its step supervisor: the running one, restarted at the next spawn
/// when it died.
#[derive(Debug)]
pub(crate) struct Supervisor {
    program: std::path::PathBuf,
    worker_id: String,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    current: Mutex<Option<Client>>,
    tasks: TaskTracker,
}

/// One supervisor process and the two tasks that own its socket.
#[derive(Debug)]
struct Client {
    pid: u32,
    frames: mpsc::UnboundedSender<Frame>,
    state: Arc<Mutex<State>>,
    stream: Arc<UnixStream>,
}

/// A frame to write, with the file descriptors to send along.
#[derive(Debug)]
struct Frame {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

type SpawnReply = io::Result<Supervised>;

/// What the reader task and the spawners share.
#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Spawn requests sent and not answered yet.
    spawns: HashMap<u64, oneshot::Sender<SpawnReply>>,
    /// Steps running under the supervisor, by pid.
    exits: HashMap<i32, oneshot::Sender<io::Result<ExitStatus>>>,
    /// Set once the socket is closed: nothing more is sent.
    dead: bool,
    /// Set by [`Supervisor::shutdown`]: its end is expected.
    closing: bool,
}

impl Supervisor {
    /// Starts the supervisor of worker `worker_id`: `<program> __step-supervisor <worker id>`
    /// with the environment the steps inherit (so the supervisor's own `/proc/<pid>/environ`
    /// holds nothing the steps may not see).
    ///
    /// # Errors
    /// When the program cannot be started.
    pub(crate) fn start(
        program: &Path,
        worker_id: &str,
        inherited: &Inherited,
    ) -> io::Result<Self> {
        let supervisor = Self {
            program: program.to_path_buf(),
            worker_id: worker_id.to_string(),
            env: inherited
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            current: Mutex::new(None),
            tasks: TaskTracker::new(),
        };
        let client = supervisor.launch()?;
        tracing::info!(supervisor.pid = client.pid, program = %program.display(), "step supervisor started");
        *supervisor.lock() = Some(client);
        Ok(supervisor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Client>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a supervisor process and its two socket tasks.
    fn launch(&self) -> io::Result<Client> {
        let (ours, theirs) = StdUnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let mut child = tokio::process::Command::new(&self.program)
            .arg(ARG)
            .arg(&self.worker_id)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // It makes a session of its own (`serve`), and so a process group of its own: a
            // signal to the worker's whole group (`kill -9 -<pgid>`, a shell's job control, a
            // supervisor daemon killing as a group) must not take the supervisor down with the
            // worker, or nothing would kill the steps.
            .spawn()
            .map_err(|e| {
                // Not `e.kind()`: a missing supervisor must not read as a missing step program.
                io::Error::other(format!(
                    "cannot start the step supervisor {}: {e}",
                    self.program.display()
                ))
            })?;
        let pid = child.id().unwrap_or(0);
        let stream = Arc::new(UnixStream::from_std(ours)?);
        let state = Arc::new(Mutex::new(State::default()));
        let (frames, queued) = mpsc::unbounded_channel();
        self.tasks.spawn(write_frames(stream.clone(), queued));
        let (s, st) = (stream.clone(), state.clone());
        self.tasks.spawn(async move {
            let cause = read_replies(&s, &st).await;
            let closing = fail_all(&st, &cause);
            let status = child.wait().await;
            // What it started and did not kill: a step whose `Spawned` it held back, and what
            // steps started in groups of their own.
            if !closing && pid > 0 {
                let sid = pid as i32;
                let killed = tokio::task::spawn_blocking(move || kill_session(sid))
                    .await
                    .unwrap_or(0);
                if killed > 0 {
                    tracing::warn!(supervisor.pid = pid, killed, "SIGKILLed the processes left in the dead step supervisor's session");
                }
            }
            match status {
                Ok(status) if closing && status.success() => {
                    tracing::debug!(supervisor.pid = pid, "step supervisor exited");
                }
                status => tracing::error!(
                    supervisor.pid = pid,
                    status = ?status,
                    cause = %cause,
                    "the step supervisor ended unexpectedly; the steps it ran were SIGKILLed and fail, and a new supervisor starts with the next step"
                ),
            }
        });
        Ok(Client {
            pid,
            frames,
            state,
            stream,
        })
    }

    /// Starts a step through the supervisor (restarted first if it died). `stdout` and
    /// `stderr` are the write ends of the step's pipes; they are closed here once sent.
    ///
    /// # Errors
    /// The spawn's own error (`ENOENT` for a program not found, as `Command::spawn` gives
    /// it), or an error saying the supervisor died or could not be restarted.
    pub(crate) async fn spawn(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: Option<&str>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Supervised> {
        let (reply, replied) = oneshot::channel();
        {
            let mut current = self.lock();
            let mut relaunched = false;
            let (client, mut state) = loop {
                if current.as_ref().is_none_or(Client::is_dead) {
                    let client = self.launch()?;
                    tracing::warn!(supervisor.pid = client.pid, "step supervisor restarted");
                    *current = Some(client);
                    relaunched = true;
                }
                let client = current.as_ref().expect("just set");
                let state = client.state.lock().unwrap_or_else(|p| p.into_inner());
                // Checked again under the lock the reader's `fail_all` takes: a waiter inserted
                // after it drained the waiters would never be answered.
                if !state.dead {
                    break (client, state);
                }
                drop(state);
                if relaunched {
                    return Err(died("as it was started"));
                }
                *current = None;
            };
            state.next_id += 1;
            let id = state.next_id;
            let bytes = encode(&Request::Spawn {
                id,
                program: program.to_string(),
                args: args.to_vec(),
                env: env.to_vec(),
                cwd: cwd.map(str::to_string),
            })?;
            state.spawns.insert(id, reply);
            let frame = Frame {
                bytes,
                fds: vec![stdout, stderr],
            };
            if client.frames.send(frame).is_err() {
                state.spawns.remove(&id);
                return Err(died("before it could start the step"));
            }
        }
        replied
            .await
            .unwrap_or_else(|_| Err(died("before it started the step")))
    }

    async fn shutdown(&self) {
        if let Some(client) = self.lock().take() {
            client
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .closing = true;
            // Dropping the client ends the stream: the supervisor sees EOF.
            drop(client);
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Client {
    /// Ends the worker's half of the stream (the reader task still holds the socket), so the
    /// supervisor reads EOF, kills what is left and exits, whichever way the client goes: a
    /// shutdown, a replaced dead supervisor, or a worker that returned early.
    fn drop(&mut self) {
        let _ = socket::shutdown(self.stream.as_raw_fd(), socket::Shutdown::Write);
    }
}

impl Client {
    fn is_dead(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).dead
    }
}

/// The error of a step whose supervisor died.
fn died(when: &str) -> io::Error {
    io::Error::other(format!("the step supervisor died {when}"))
}

/// Writes the queued frames, each with its file descriptors, until the channel closes or the
/// socket fails.
async fn write_frames(stream: Arc<UnixStream>, mut queued: mpsc::UnboundedReceiver<Frame>) {
    while let Some(frame) = queued.recv().await {
        if let Err(e) = write_frame(&stream, &frame).await {
            tracing::warn!(cause = %e, "cannot write to the step supervisor; closing its socket so it kills its steps and a new one starts");
            // The reader then reads EOF and fails every waiter (`fail_all`), and the next spawn
            // starts a new supervisor: a spawn whose frame was lost is never left unanswered.
            let _ = socket::shutdown(stream.as_raw_fd(), socket::Shutdown::Both);
            return;
        }
        // `frame.fds` close here: the supervisor holds its own copies now.
    }
}

async fn write_frame(stream: &UnixStream, frame: &Frame) -> io::Result<()> {
    let raw: Vec<RawFd> = frame.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < frame.bytes.len() {
        let rest = &frame.bytes[sent..];
        let with_fds = sent == 0 && !raw.is_empty();
        sent += stream
            .async_io(Interest::WRITABLE, || {
                let iov = [io::IoSlice::new(rest)];
                let rights = [ControlMessage::ScmRights(&raw)];
                let cmsgs: &[ControlMessage] = if with_fds { &rights } else { &[] };
                socket::sendmsg::<()>(
                    stream.as_raw_fd(),
                    &iov,
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            })
            .await?;
    }
    Ok(())
}

/// Reads replies until the socket closes; returns why it ended.
async fn read_replies(stream: &UnixStream, state: &Mutex<State>) -> io::Error {
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.readable().await {
            Err(e) => return e,
            Ok(()) => match stream.try_read(&mut buf) {
                Ok(0) => return io::Error::new(io::ErrorKind::UnexpectedEof, "socket closed"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return e,
            },
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next::<Reply>() {
                Ok(Some(reply)) => deliver(state, reply),
                Ok(None) => break,
                Err(e) => return e,
            }
        }
    }
}

/// Hands a reply to whoever waits for it.
fn deliver(state: &Mutex<State>, reply: Reply) {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    match reply {
        Reply::Spawned {
            id,
            pid,
            started_ms,
        } => {
            let (exited, exit) = oneshot::channel();
            state.exits.insert(pid, exited);
            let started = Supervised {
                pid: pid as u32,
                started_ms,
                exit,
            };
            let delivered = state
                .spawns
                .remove(&id)
                .is_some_and(|tx| tx.send(Ok(started)).is_ok());
            if !delivered {
                // Nobody waits for this step any more (its task was dropped): it must not run.
                state.exits.remove(&pid);
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        Reply::Failed { id, errno, message } => {
            let e = if errno != 0 {
                io::Error::from_raw_os_error(errno)
            } else {
                io::Error::other(message)
            };
            if let Some(tx) = state.spawns.remove(&id) {
                let _ = tx.send(Err(e));
            }
        }
        Reply::Exited { pid, status } => {
            if let Some(tx) = state.exits.remove(&pid) {
                let _ = tx.send(Ok(ExitStatus::from_raw(status)));
            }
        }
    }
}

/// After the socket closed: SIGKILLs the group of every step that ran under the supervisor
/// and fails them and the spawns in flight. Returns whether the end was expected.
fn fail_all(state: &Mutex<State>, cause: &io::Error) -> bool {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.dead = true;
    for (id, tx) in state.spawns.drain() {
        let _ = id;
        let _ = tx.send(Err(died(&format!("before it started the step ({cause})"))));
    }
    for (pid, tx) in state.exits.drain() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = tx.send(Err(died(
            "while the step ran; its process group was SIGKILLed",
        )));
    }
    state.closing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_split_and_back_to_back() {
        let spawn = Request::Spawn {
            id: 7,
            program: "sh".into(),
            args: vec!["-c".into(), "echo é; sleep 1".into(), String::new()],
            env: vec![("A".into(), "1".into()), ("B".into(), String::new())],
            cwd: Some("/tmp".into()),
        };
        let replies = [
            Reply::Spawned {
                id: 7,
                pid: 4242,
                started_ms: 1_800_000_000_000,
            },
            Reply::Failed {
                id: 8,
                errno: 2,
                message: "No such file or directory".into(),
            },
            Reply::Exited {
                pid: 4242,
                status: 0x0100,
            },
        ];
        let mut d = Decoder::default();
        d.push(&encode(&spawn).unwrap());
        assert_eq!(d.next::<Request>().unwrap(), Some(spawn));
        assert_eq!(d.next::<Request>().unwrap(), None);

        // Replies back to back, fed one byte at a time.
        let bytes: Vec<u8> = replies.iter().flat_map(|r| encode(r).unwrap()).collect();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(r) = d.next::<Reply>().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, replies);
        assert_eq!(ExitStatus::from_raw(0x0100).code(), Some(1));
    }

    #[test]
    fn a_corrupt_or_oversized_frame_is_an_error() {
        let mut d = Decoder::default();
        d.push(&((MAX_FRAME as u32) + 1).to_le_bytes());
        assert_eq!(
            d.next::<Reply>().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut d = Decoder::default();
        d.push(&3u32.to_le_bytes());
        d.push(&[0xc1, 0xc1, 0xc1]);
        assert_eq!(
            d.next::<Reply>().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn wait_statuses_encode_as_waitpid_gives_them() {
        // Exited(3) and Signaled(SIGKILL), as `reap` encodes them.
        let exited = ExitStatus::from_raw((3 & 0xff) << 8);
        assert_eq!(exited.code(), Some(3));
        let killed = ExitStatus::from_raw(Signal::SIGKILL as i32);
        assert_eq!(killed.signal(), Some(9));
        assert_eq!(killed.code(), None);
    }

    #[tokio::test]
    async fn a_dead_supervisor_fails_its_steps_and_spawns() {
        let state = Mutex::new(State::default());
        let (spawned, spawn) = oneshot::channel();
        state.lock().unwrap().spawns.insert(1, spawned);
        let (exited, exit) = oneshot::channel();
        // A pid that is no process group: the SIGKILL finds nothing.
        state.lock().unwrap().exits.insert(i32::MAX - 1, exited);
        let closing = fail_all(&state, &io::Error::other("socket closed"));
        assert!(!closing);
        assert!(state.lock().unwrap().dead);
        let e = spawn.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("supervisor died"), "{e}");
        let e = exit.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("SIGKILLed"), "{e}");
    }
}
