//! The latency probes' own sender, with the kernel's software transmit timestamps: the veth
//! stamps each probe as its driver takes it (`skb_tx_timestamp`) and the stamp comes back on
//! the socket's error queue before `sendmmsg` returns (AF_PACKET with the qdisc bypassed sends
//! synchronously). With the receive timestamp of the reply, a probe's time splits into the send
//! path (user space → veth driver) and the flight (veth → node → reply back at the client's
//! receive path), on one clock (CLOCK_REALTIME). The load keeps its own, unstamped socket.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, TimestampingFlag, Timestamps, recvmsg, setsockopt, sockopt,
};

use super::net::{Batch, Sender, Sent};

pub struct ProbeSender {
    sender: Sender,
}

impl ProbeSender {
    /// Opens the probe sender on `ifname` of the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<ProbeSender> {
        let sender = Sender::open(ifname)?;
        setsockopt(
            sender.fd(),
            sockopt::Timestamping,
            &(TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
                | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
        )
        .context("SO_TIMESTAMPING on the probe socket")?;
        Ok(ProbeSender { sender })
    }

    /// Sends one probe; returns whether it went out and, if the kernel stamped it, when the
    /// veth driver took it (ns, CLOCK_REALTIME). Reading the error queue to its end keeps the
    /// newest stamp; an older one left by an unread probe predates this probe's send time, and
    /// the receiver pairs a stamp only if it lies between send and reply.
    pub fn send(&self, batch: &mut Batch) -> std::io::Result<(bool, Option<u64>)> {
        let sent = matches!(self.sender.send(batch, 1)?, Sent::Frames(n) if n > 0);
        Ok((sent, if sent { self.take_stamp() } else { None }))
    }

    /// The newest transmit timestamp waiting on the error queue, if any.
    fn take_stamp(&self) -> Option<u64> {
        let mut newest = None;
        while let Queued::Message(stamp) = self.read_one() {
            if stamp.is_some() {
                newest = stamp;
            }
        }
        newest
    }

    /// One message of the error queue, with its software timestamp if it has one.
    fn read_one(&self) -> Queued {
        let mut buf = [0u8; 128];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(Timestamps, [u8; 64]);
        let Ok(msg) = recvmsg::<()>(
            self.sender.fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) else {
            return Queued::Empty;
        };
        let Ok(mut cmsgs) = msg.cmsgs() else {
            return Queued::Message(None);
        };
        Queued::Message(cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampsns(ts) => {
                let ns = i128::from(ts.system.tv_sec()) * 1_000_000_000
                    + i128::from(ts.system.tv_nsec());
                u64::try_from(ns).ok().filter(|&v| v > 0)
            }
            _ => None,
        }))
    }
}

/// What reading the error queue found.
enum Queued {
    Empty,
    Message(Option<u64>),
}
