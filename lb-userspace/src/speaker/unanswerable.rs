//! A node that cannot answer at all. When every interface eligible for layer 2 refused its
//! responder (XDP cannot attach: another program holds the interface, the kernel refuses the
//! mode, ...) while layer 2 is configured, the speaker must not stay in the election: it would
//! win addresses and leave them silent. It stops instead, saying why; its kubelet restarts it
//! (CrashLoopBackOff until the interface is freed), the others are elected for its addresses, and
//! whatever it had pinned goes quiet when the guard lapses.

use std::collections::BTreeMap;

/// Interfaces that were eligible but refused their responder, with the reason.
pub type Refused = BTreeMap<String, String>;

/// `error` with every cause under it that its own text does not already say (the kernel's
/// errno under a failed `bpf_link_create`).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

/// Why this node cannot take part in layer 2, or `None` when it can (or need not).
/// `served`: interfaces that do answer; `layer2`: any L2Advertisement is configured.
pub fn verdict(node: &str, refused: &Refused, served: usize, layer2: bool) -> Option<String> {
    if !layer2 || served > 0 || refused.is_empty() {
        return None;
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|(iface, why)| {
            let why = why
                .strip_prefix(&format!("interface {iface}: "))
                .unwrap_or(why);
            format!("{iface}: {why}")
        })
        .collect();
    Some(format!(
        "no interface on node {node:?} can answer ARP/NDP ({}); the speaker stops so that other \
         nodes are elected for its addresses. Free the interface (is another XDP program \
         attached?) or run the speaker with --dataplane auto to answer from userspace there",
        reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(names: &[&str]) -> Refused {
        names
            .iter()
            .map(|n| (n.to_string(), "Device or resource busy".to_string()))
            .collect()
    }

    #[test]
    fn describes_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("attach failed: `bpf_link_create` failed")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("`bpf_link_create` failed")]
        struct Inner(#[source] std::io::Error);
        let error = Outer(Inner(std::io::Error::from_raw_os_error(16)));
        let text = describe(&error);
        assert!(
            text.starts_with("attach failed: `bpf_link_create` failed: "),
            "{text}"
        );
        assert_eq!(text.matches("bpf_link_create").count(), 1, "{text}");
        assert!(text.contains("os error 16"), "{text}");
    }

    #[test]
    fn names_each_interface_once() {
        let refused = Refused::from([(
            "eth0".to_string(),
            "interface eth0: skb mode attach failed: Resource busy".to_string(),
        )]);
        let message = verdict("n", &refused, 0, true).expect("nothing answers");
        assert!(
            message.contains("(eth0: skb mode attach failed: Resource busy)"),
            "{message}"
        );
    }

    #[test]
    fn stops_only_when_layer2_is_configured_and_nothing_answers() {
        let two = refused(&["eth0", "eth1"]);
        let message = verdict("node-a", &two, 0, true).expect("nothing answers");
        assert!(message.contains("node \"node-a\""), "{message}");
        assert!(
            message.contains("eth0: Device or resource busy; eth1: Device or resource busy"),
            "{message}"
        );
        assert!(message.contains("--dataplane auto"), "{message}");
        // One interface still answers: the node can be elected.
        assert_eq!(verdict("node-a", &two, 1, true), None);
        // BGP only: layer 2 needs no responder.
        assert_eq!(verdict("node-a", &two, 0, false), None);
        // No interface was refused (none eligible at all): the plan reports it per Service.
        assert_eq!(verdict("node-a", &Refused::new(), 0, true), None);
    }
}
