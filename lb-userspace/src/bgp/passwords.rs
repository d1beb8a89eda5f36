//! The TCP MD5 password of each BGPPeer, pure: the inline `password`, or the `password` key of
//! the Secret its `passwordSecret` names. Values stay inside [`Password`], which never prints.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::sessions::Passwords;
use super::socket::Password;
use crate::api;

/// The key of a `kubernetes.io/basic-auth` Secret holding the password (MetalLB's).
pub const SECRET_KEY: &str = "password";

/// Every password that can be resolved, by BGPPeer name. A peer whose Secret is missing or lacks
/// the key is absent (the configuration check reports it; its session is not started).
pub fn resolve(peers: &[api::BGPPeer], secrets: &[Secret]) -> Passwords {
    let mut out = Passwords::new();
    for peer in peers {
        let spec = &peer.spec;
        if !spec.password.is_empty() {
            out.insert(peer.name_any(), Password::new(spec.password.clone()));
            continue;
        }
        let Some(name) = spec
            .password_secret
            .as_ref()
            .and_then(|r| r.name.as_deref())
        else {
            continue;
        };
        let Some(secret) = secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
        else {
            continue;
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_KEY))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(SECRET_KEY))
                    .cloned()
            });
        if let Some(value) = value {
            out.insert(peer.name_any(), Password::new(value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::SecretReference;

    use super::*;

    fn peer(name: &str, password: &str, secret: Option<&str>) -> api::BGPPeer {
        let mut p = api::BGPPeer::new(name, api::BGPPeerSpec::default());
        p.spec.password = password.to_string();
        p.spec.password_secret = secret.map(|s| SecretReference {
            name: Some(s.to_string()),
            namespace: None,
        });
        p
    }

    fn secret(name: &str, data: Option<&str>, string_data: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.to_string());
        s.data = data.map(|v| [(SECRET_KEY.to_string(), ByteString(v.as_bytes().to_vec()))].into());
        s.string_data = string_data.map(|v| [(SECRET_KEY.to_string(), v.to_string())].into());
        s
    }

    #[test]
    fn inline_then_secret_data_then_string_data() {
        let peers = [
            peer("inline", "one", None),
            peer("data", "", Some("s-data")),
            peer("string", "", Some("s-string")),
            peer("missing", "", Some("nope")),
            peer("keyless", "", Some("s-empty")),
            peer("none", "", None),
        ];
        let secrets = [
            secret("s-data", Some("two"), None),
            secret("s-string", None, Some("three")),
            secret("s-empty", None, None),
        ];
        let got = resolve(&peers, &secrets);
        assert_eq!(
            got.keys().map(String::as_str).collect::<Vec<_>>(),
            ["data", "inline", "string"]
        );
        assert_eq!(got["inline"], Password::new("one".into()));
        assert_eq!(got["data"], Password::new("two".into()));
        assert_eq!(got["string"], Password::new("three".into()));
    }
}
