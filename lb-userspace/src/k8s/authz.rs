//! The API server decides who may read `/metrics`, as kube-rbac-proxy has it decide for
//! MetalLB: a TokenReview authenticates the bearer token, a SubjectAccessReview asks whether
//! its user may `get` the path (a `nonResourceURLs` rule). Needs the `system:auth-delegator`
//! ClusterRole (create tokenreviews and subjectaccessreviews).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use std::sync::Arc;

use crate::daemon::MetricsAccess;
use crate::daemon::authz::{Authorize, DECISION_TTL, Deciding, Decision, Remembering};
use crate::daemon::http::{PROTECTED, Security};
use crate::daemon::tls::{self, TlsError};

/// The endpoints' [`Security`] for `access`: the TLS files read now, and the API server as the
/// authorizer of `/metrics` (its decisions remembered for a minute).
pub fn security(access: &MetricsAccess, client: &Client) -> Result<Security, TlsError> {
    let tls = match &access.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let authorizer = access.authz.then(|| {
        Arc::new(Remembering::new(
            ApiAuthorizer::new(client.clone(), PROTECTED),
            DECISION_TTL,
        )) as crate::daemon::authz::Authorizer
    });
    Ok(Security { tls, authorizer })
}

/// Asks the API server about each token (wrap it in `daemon::authz::Remembering`).
pub struct ApiAuthorizer {
    client: Client,
    path: String,
}

impl ApiAuthorizer {
    /// Decides for `get` on `path`.
    pub fn new(client: Client, path: &str) -> Self {
        ApiAuthorizer {
            client,
            path: path.to_string(),
        }
    }

    async fn ask(&self, token: &str) -> Result<Decision, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(self.path.clone()),
                    verb: Some("get".into()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answered = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let status = answered.status.unwrap_or_default();
        Ok(if status.allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden(
                status
                    .reason
                    .unwrap_or_else(|| "no RBAC rule allows it".into()),
            )
        })
    }
}

impl Authorize for ApiAuthorizer {
    fn decide<'a>(&'a self, token: &'a str) -> Deciding<'a> {
        Box::pin(async move { self.ask(token).await.map_err(|e| e.to_string()) })
    }
}
