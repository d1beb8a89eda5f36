//! Reaching into node network namespaces from a test: run code on a thread inside one, and
//! relay the API server (on the root namespace's loopback) to the same port on a namespace's
//! loopback, so a kubeconfig pointing at 127.0.0.1 works unchanged inside it.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Runs `f` on a thread that has entered network namespace `ns`; sockets made there stay there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let target = File::open(&path).expect("netns handle");
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Listens on 127.0.0.1:`port` inside `ns` and relays every connection to 127.0.0.1:`port` of
/// the root namespace (where the API server is).
pub fn forward_api_into(ns: &str, port: u16) {
    let listener = in_netns(ns, move || {
        TcpListener::bind(("127.0.0.1", port)).expect("bind")
    });
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let (Ok(mut in2), Ok(mut out2)) = (inbound.try_clone(), outbound.try_clone()) else {
                continue;
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut inbound, &mut outbound);
                let _ = outbound.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut out2, &mut in2);
                let _ = in2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}
