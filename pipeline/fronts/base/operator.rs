//! The operator token: when `server.operator_token` is set, `/metrics`, `/health/deep` and gRPC server
//! reflection answer only requests bearing it. `/health` stays open for load balancers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger_stages::auth::KeyDigest;

use super::credential::bearer;
use crate::error::ApiError;

/// The token's SHA-256, compared in constant time; `None` = open.
#[derive(Clone, Default)]
pub struct OperatorToken(Option<Arc<KeyDigest>>);

impl OperatorToken {
    pub(crate) fn new(token: &str) -> OperatorToken {
        OperatorToken((!token.is_empty()).then(|| Arc::new(KeyDigest::of(token))))
    }

    /// Whether a request with these headers may use the operations endpoints.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        match &self.0 {
            None => true,
            Some(expected) => bearer(headers).is_some_and(|given| KeyDigest::of(given).ct_eq(expected)),
        }
    }
}

/// Guards an operations route.
pub(crate) async fn required(State(token): State<OperatorToken>, request: Request, next: Next) -> Response {
    if token.allows(request.headers()) { next.run(request).await } else { ApiError::Unauthorized.into_response() }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_token_opens_a_closed_endpoint() {
        let mut headers = HeaderMap::new();
        assert!(OperatorToken::new("").allows(&headers), "no token set: open");
        let token = OperatorToken::new("0123456789abcdef");
        assert!(!token.allows(&headers));
        headers.insert("authorization", HeaderValue::from_static("Bearer wrong-token-here"));
        assert!(!token.allows(&headers));
        headers.insert("authorization", HeaderValue::from_static("Bearer 0123456789abcdef"));
        assert!(token.allows(&headers));
    }
}
