//! A TCP proxy that a test can black-hole: while cut, it forwards nothing in either direction
//! and connects nothing upstream, but closes no socket, so each side sees a silent network (a
//! partition), not a closed connection. Used between a worker and redis-server.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A proxy to one upstream address; dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let watch = cut.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let rx = watch.subscribe();
                conns.spawn(async move {
                    let _ = forward(client, upstream, rx).await;
                });
            }
        });
        Ok(Proxy {
            addr,
            cut,
            _tasks: tasks,
        })
    }

    /// The address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops (`true`) or resumes (`false`) all forwarding.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Waits while the proxy is cut.
async fn open(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|cut| !cut).await;
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<bool>,
) -> std::io::Result<()> {
    open(&mut rx).await;
    let server = TcpStream::connect(upstream).await?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, rx.clone());
    let down = pipe(sr, cw, rx);
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is cut.
async fn pipe(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut rx: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        open(&mut rx).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        open(&mut rx).await;
        to.write_all(&buf[..n]).await?;
    }
}
