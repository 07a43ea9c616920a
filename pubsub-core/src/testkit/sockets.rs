//! This process's own TCP connections and their socket options, read from
//! the kernel: how an adapter test checks that every connection it opened
//! to a broker has `TCP_NODELAY` set (small acks and flow frames otherwise
//! wait on Nagle for the peer's delayed ACK, about 40 ms each).

use std::io;
use std::net::SocketAddr;

/// One TCP connection of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnection {
    /// The address it is connected to.
    pub peer: SocketAddr,
    /// Whether `TCP_NODELAY` is set on it.
    pub nodelay: bool,
}

/// Every connected TCP socket of this process whose peer port is `port`
/// (Linux: the descriptors in /proc/self/fd). A descriptor closed while
/// this runs is skipped.
#[cfg(target_os = "linux")]
pub fn tcp_connections_to(port: u16) -> io::Result<Vec<TcpConnection>> {
    use std::os::fd::{BorrowedFd, RawFd};
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only borrowed for two getsockopt-style
        // queries; if another thread closed (or reused) it meanwhile, the
        // queries fail or describe that socket, and nothing is written.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            continue; // not connected, or not an internet socket
        };
        if peer.port() != port {
            continue;
        }
        if let Ok(nodelay) = sock.tcp_nodelay() {
            found.push(TcpConnection { peer, nodelay });
        }
    }
    Ok(found)
}

/// Every connected TCP socket of this process whose peer port is `port`
/// (only implemented on Linux).
#[cfg(not(target_os = "linux"))]
pub fn tcp_connections_to(_port: u16) -> io::Result<Vec<TcpConnection>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "listing a process's sockets is only implemented on Linux",
    ))
}

/// Panics unless this process has at least `at_least` TCP connections to
/// `port` and every one has `TCP_NODELAY` set; returns how many there are.
pub fn assert_all_nodelay(port: u16, at_least: usize) -> usize {
    let connections = tcp_connections_to(port).expect("list this process's TCP connections");
    assert!(
        connections.len() >= at_least,
        "expected at least {at_least} connections to port {port}, found {connections:?}"
    );
    let delayed: Vec<_> = connections.iter().filter(|c| !c.nodelay).collect();
    assert!(
        delayed.is_empty(),
        "{} of {} connections to port {port} without TCP_NODELAY: {delayed:?}",
        delayed.len(),
        connections.len()
    );
    connections.len()
}
