//! Keeping the peer's copy of this node's routes equal to the policy's: what this session adds
//! to every route, what it cannot send, and the UPDATE messages for the difference.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::BytesMut;
use ipnet::IpNet;

use super::conn::{Conn, encode};
use super::{End, Task};
use crate::bgp::negotiate::Negotiated;
use crate::bgp::rib;
use crate::bgp::wire;

impl Task {
    /// The routes the policy wants, and how many cannot be sent on this session.
    fn desired(
        &mut self,
        ctx: &rib::Context,
        session: &wire::Session,
    ) -> (BTreeMap<IpNet, wire::RouteAttrs>, usize) {
        let routes = self.routes.borrow().clone();
        let (mut desired, unsendable) = rib::complete(&routes, ctx);
        for u in &unsendable {
            tracing::debug!(prefix = %u.prefix, reason = %u.reason, "not sent to this peer");
        }
        let refused = rib::keep_encodable(&mut desired, |prefix, attrs| {
            wire::encode_announce(std::slice::from_ref(prefix), attrs, session)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        // Warned once per prefix, not on every sync while it stays held back.
        for u in refused
            .iter()
            .filter(|u| !self.held_back.contains(&u.prefix))
        {
            tracing::warn!(
                prefix = %u.prefix,
                reason = %u.reason,
                "route not sent to this peer: its UPDATE cannot be encoded"
            );
        }
        self.held_back = refused.iter().map(|u| u.prefix).collect();
        (desired, unsendable.len() + refused.len())
    }

    pub(super) fn publish_prefixes(&self, unsendable: usize) {
        let wanted = self.routes.borrow().len();
        let sent = self.rib.len();
        self.metrics.prefixes(
            &self.label(),
            sent,
            wanted.saturating_sub(sent).max(unsendable),
        );
        self.update_status(|s| s.prefixes_sent = sent);
    }

    /// What this session adds to every route.
    pub(super) fn context(&self, local: IpAddr, n: &Negotiated) -> rib::Context {
        let pick_v4 = |a: &IpAddr| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        };
        let pick_v6 = |a: &IpAddr| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        };
        rib::Context {
            as_path: if self.params.ebgp() {
                vec![self.params.my_asn]
            } else {
                Vec::new()
            },
            next_hop_v4: pick_v4(&local)
                .or_else(|| self.params.node_addresses.iter().find_map(pick_v4)),
            next_hop_v6: pick_v6(&local)
                .or_else(|| self.params.node_addresses.iter().find_map(pick_v6)),
            families: n.session.families.clone(),
        }
    }

    /// Sends the difference between the policy's routes and the Adj-RIB-Out, in as few
    /// UPDATE messages as fit: withdrawals first, then announcements by attribute set.
    pub(super) async fn sync(&mut self, conn: &mut Conn, ctx: &rib::Context) -> Result<(), End> {
        let Some(session) = conn.session.clone() else {
            return Err(End::Down("UPDATE before the OPEN exchange".into()));
        };
        let (desired, unsendable) = self.desired(ctx, &session);
        let changes = self.rib.changes(&desired);
        if changes.is_empty() {
            self.publish_prefixes(unsendable);
            return Ok(());
        }
        let messages = match encode(&changes, &session) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the routes for this peer");
                return Err(End::Down(format!("encoding UPDATE: {e}")));
            }
        };
        let mut out = BytesMut::new();
        for m in &messages {
            out.extend_from_slice(m);
        }
        if let Err(e) = conn.send(&out).await {
            return Err(End::Down(format!("sending UPDATE: {e}")));
        }
        self.rib.record(&changes);
        let count = messages.len() as u64;
        self.metrics.updates_sent(&self.label(), count);
        self.update_status(|s| s.updates_sent += count);
        tracing::debug!(
            withdrawn = changes.withdraw.len(),
            announced = changes.announced(),
            messages = count,
            "routes sent"
        );
        self.publish_prefixes(unsendable);
        Ok(())
    }
}
