//! Who may read `/metrics`: a bearer token, checked by something that knows (the API server's
//! TokenReview and SubjectAccessReview, see `k8s::authz`), with its answers kept for a while so
//! a scrape every few seconds costs the API server nothing most of the time. Probes are never
//! behind it (kubelet sends no token).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What was decided about one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// The token is not valid (unknown, expired, wrong audience): 401.
    Unauthenticated,
    /// Valid, but its user may not `get` the path: 403, with the authorizer's reason.
    Forbidden(String),
}

/// A boxed future of a decision; `Err` when it could not be made (the API server unreachable):
/// refused for now (503) and not remembered.
pub type Deciding<'a> = Pin<Box<dyn Future<Output = Result<Decision, String>> + Send + 'a>>;

/// Decides about a bearer token.
pub trait Authorize: Send + Sync {
    fn decide<'a>(&'a self, token: &'a str) -> Deciding<'a>;
}

/// How long a decision is kept: a revoked token or a removed permission takes effect within it.
pub const DECISION_TTL: Duration = Duration::from_secs(60);
/// Tokens remembered at most (the oldest decisions go first).
const MAX_REMEMBERED: usize = 1024;

/// Remembers `inner`'s decisions for [`DECISION_TTL`], by SHA-256 of the token (the token
/// itself is never kept).
pub struct Remembering<A> {
    inner: A,
    ttl: Duration,
    decided: Mutex<HashMap<[u8; 32], (Instant, Decision)>>,
}

impl<A: Authorize> Remembering<A> {
    pub fn new(inner: A, ttl: Duration) -> Self {
        Remembering {
            inner,
            ttl,
            decided: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Decision)>> {
        self.decided
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<A: Authorize> Authorize for Remembering<A> {
    fn decide<'a>(&'a self, token: &'a str) -> Deciding<'a> {
        Box::pin(async move {
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some((at, decision)) = self.lock().get(&key)
                && at.elapsed() < self.ttl
            {
                return Ok(decision.clone());
            }
            let decision = self.inner.decide(token).await?;
            let mut decided = self.lock();
            decided.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if decided.len() >= MAX_REMEMBERED
                && let Some(oldest) = decided
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| *k)
            {
                decided.remove(&oldest);
            }
            decided.insert(key, (Instant::now(), decision.clone()));
            Ok(decision)
        })
    }
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Shared handle of an authorizer.
pub type Authorizer = Arc<dyn Authorize>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Allows "good", refuses "bad", fails on "down"; counts the calls.
    struct Table(AtomicUsize);

    impl Authorize for Table {
        fn decide<'a>(&'a self, token: &'a str) -> Deciding<'a> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match token {
                    "good" => Ok(Decision::Allowed),
                    "bad" => Ok(Decision::Forbidden("no".into())),
                    "down" => Err("unreachable".into()),
                    _ => Ok(Decision::Unauthenticated),
                }
            })
        }
    }

    #[tokio::test]
    async fn decisions_are_remembered_for_their_ttl_and_failures_never() {
        let remembering = Remembering::new(Table(AtomicUsize::new(0)), Duration::from_secs(60));
        let calls = || remembering.inner.0.load(Ordering::Relaxed);
        assert_eq!(remembering.decide("good").await, Ok(Decision::Allowed));
        assert_eq!(remembering.decide("good").await, Ok(Decision::Allowed));
        assert_eq!(calls(), 1);
        assert_eq!(
            remembering.decide("bad").await,
            Ok(Decision::Forbidden("no".into()))
        );
        assert_eq!(remembering.decide("x").await, Ok(Decision::Unauthenticated));
        assert_eq!(calls(), 3);
        assert!(remembering.decide("down").await.is_err());
        assert!(remembering.decide("down").await.is_err());
        assert_eq!(calls(), 5, "a failure is asked again");

        let forgetful = Remembering::new(Table(AtomicUsize::new(0)), Duration::ZERO);
        forgetful.decide("good").await.unwrap();
        forgetful.decide("good").await.unwrap();
        assert_eq!(forgetful.inner.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }
}
