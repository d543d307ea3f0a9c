//! A byte-level TCP/Unix-socket bridge (tokio `copy_bidirectional`).
//!
//! DynamoDB Local can only listen on `*:port`. It runs inside a private network
//! namespace; one bridge inside listens on a Unix socket and connects to its
//! loopback port, another outside listens on the host's 127.0.0.1 and connects
//! to that socket. Path-based Unix sockets live in the file system, which the
//! namespaces share.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// One side of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    /// `tcp:127.0.0.1:8000` or `unix:/path/to.sock`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(a) = s.strip_prefix("tcp:") {
            Ok(Endpoint::Tcp(a.to_string()))
        } else if let Some(p) = s.strip_prefix("unix:") {
            Ok(Endpoint::Unix(p.into()))
        } else {
            Err(format!(
                "endpoint must be tcp:HOST:PORT or unix:PATH, got {s}"
            ))
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(to: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    Ok(match to {
        Endpoint::Tcp(a) => {
            let s = TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p).await?),
    })
}

/// A bound listening side.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen` (a TCP address must be loopback; a stale socket file is replaced).
    pub async fn bind(listen: &Endpoint) -> std::io::Result<Self> {
        Ok(match listen {
            Endpoint::Tcp(a) => Listener::Tcp(TcpListener::bind(a).await?),
            Endpoint::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Listener::Unix(UnixListener::bind(p)?, p.clone())
            }
        })
    }

    /// The bound TCP address, if TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Listener::Unix(l, _) => Box::new(l.accept().await?.0),
        })
    }

    /// Forwards every accepted connection to `to` until the task is dropped.
    pub async fn serve(self, to: Endpoint) -> std::io::Result<()> {
        loop {
            let mut inbound = self.accept().await?;
            let to = to.clone();
            tokio::spawn(async move {
                match connect(&to).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => tracing::debug!("bridge: connect {to:?}: {e}"),
                }
            });
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
