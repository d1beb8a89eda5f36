//! Gossip datagram framing: every datagram carries an HMAC-SHA256 over its payload under the
//! shared memberlist key (Secret `memberlist`, key `secretkey`), so a member without the secret
//! is ignored. Integrity and origin only: membership data is not confidential.
//!
//! Layout: `b"HRLD"`, one mode byte (`1` = HMAC-SHA256, `0` = unauthenticated, used only when no
//! key is configured, as MetalLB runs without encryption when the secret is missing), the
//! 32-byte tag (mode 1 only), then the foca payload.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"HRLD";
const MODE_PLAIN: u8 = 0;
const MODE_HMAC: u8 = 1;
const TAG_LEN: usize = 32;
/// Bytes added to every payload with a key.
pub const OVERHEAD: usize = MAGIC.len() + 1 + TAG_LEN;

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not a Herald gossip datagram")]
    NotGossip,
    #[error("datagram is unauthenticated but this member requires the memberlist secret")]
    Unauthenticated,
    #[error("datagram is authenticated but this member has no memberlist secret")]
    NoKey,
    #[error("authentication tag does not match (different or missing memberlist secret)")]
    BadTag,
}

/// The shared key (or its absence).
#[derive(Clone, Default)]
pub struct GossipKey(Option<Vec<u8>>);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self.0 {
            Some(_) => f.write_str("GossipKey(<set>)"),
            None => f.write_str("GossipKey(<none>)"),
        }
    }
}

impl GossipKey {
    /// `None` or an empty secret: unauthenticated mode.
    pub fn new(secret: Option<&[u8]>) -> Self {
        GossipKey(secret.filter(|s| !s.is_empty()).map(<[u8]>::to_vec))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn mac(key: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }

    /// Frames `payload` for the wire.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(MAGIC);
        match &self.0 {
            Some(key) => {
                out.push(MODE_HMAC);
                let mut mac = Self::mac(key);
                mac.update(payload);
                out.extend_from_slice(&mac.finalize().into_bytes());
            }
            None => out.push(MODE_PLAIN),
        }
        out.extend_from_slice(payload);
        out
    }

    /// Checks a datagram and returns its payload.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], AuthError> {
        let rest = datagram
            .strip_prefix(MAGIC.as_slice())
            .ok_or(AuthError::NotGossip)?;
        let (&mode, rest) = rest.split_first().ok_or(AuthError::NotGossip)?;
        match (mode, &self.0) {
            (MODE_PLAIN, None) => Ok(rest),
            (MODE_PLAIN, Some(_)) => Err(AuthError::Unauthenticated),
            (MODE_HMAC, None) => Err(AuthError::NoKey),
            (MODE_HMAC, Some(key)) => {
                if rest.len() < TAG_LEN {
                    return Err(AuthError::NotGossip);
                }
                let (tag, payload) = rest.split_at(TAG_LEN);
                let mut mac = Self::mac(key);
                mac.update(payload);
                // Constant-time comparison.
                mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
                Ok(payload)
            }
            _ => Err(AuthError::NotGossip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_rejections() {
        let a = GossipKey::new(Some(b"k3yk3yk3yk3yk3yk3yk3yk"));
        let b = GossipKey::new(Some(b"another-secret-value00"));
        let none = GossipKey::new(None);
        let sealed = a.seal(b"payload");
        assert_eq!(sealed.len(), OVERHEAD + 7);
        assert_eq!(a.open(&sealed), Ok(&b"payload"[..]));
        assert_eq!(b.open(&sealed), Err(AuthError::BadTag));
        assert_eq!(none.open(&sealed), Err(AuthError::NoKey));
        let plain = none.seal(b"payload");
        assert_eq!(none.open(&plain), Ok(&b"payload"[..]));
        assert_eq!(a.open(&plain), Err(AuthError::Unauthenticated));
        assert_eq!(a.open(b"junk"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD\x01short"), Err(AuthError::NotGossip));
        assert_eq!(a.open(b"HRLD\x07"), Err(AuthError::NotGossip));
        assert!(
            GossipKey::new(Some(b"")).open(&plain).is_ok(),
            "empty = none"
        );
        assert_eq!(format!("{a:?}"), "GossipKey(<set>)");
    }

    proptest! {
        /// Flipping any bit of an authenticated datagram makes it fail.
        #[test]
        fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<usize>()) {
            let key = GossipKey::new(Some(b"0123456789abcdefghijkl"));
            let mut sealed = key.seal(&payload);
            prop_assert_eq!(key.open(&sealed), Ok(&payload[..]));
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(key.open(&sealed).is_err());
        }
    }
}
