//! Credentials as every HTTP-borne front reads them (gRPC's metadata included): the API key of an ingestion
//! request or a shipper's, and the project a read may see.

use axum::http::{HeaderMap, header};
use ledger_stages::auth::ApiKey;
use uuid::Uuid;

use crate::accounts::Accounts;
use crate::error::ApiError;

/// The bearer credential of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim())
}

/// The API key a request carries: `Authorization: Bearer ledger_…` or `X-API-Key: ledger_…` (the first wins).
/// Every HTTP-borne front and gRPC (its metadata as headers) read it here.
pub(crate) fn credential(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// The API key of a shipper's request (API.md, "Compatibility fronts"): what [`credential`] reads, or the
/// password of `Authorization: Basic` (any user name: shippers that only know user and password), or, when
/// `api_key_scheme` (the Elasticsearch front), `Authorization: ApiKey` with the key or base64 of `id:key`.
pub(crate) fn shipper_credential(headers: &HeaderMap, api_key_scheme: bool) -> Option<String> {
    use base64::Engine;
    if let Some(key) = credential(headers) {
        return Some(key.to_owned());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    let decoded = || {
        let bytes = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.split_once(':').map(|(_, key)| key.to_owned())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        decoded()
    } else if api_key_scheme && scheme.eq_ignore_ascii_case("apikey") {
        if ApiKey::looks_like_key(rest) { Some(rest.to_owned()) } else { decoded() }
    } else {
        None
    }
}

/// The project a read is for: from an API key with the `query` scope (`Authorization: Bearer ledger_…` or
/// `X-API-Key`), or a session and the owner's `project_id`. gRPC reads its metadata through this too.
pub(crate) async fn read_access(
    headers: &HeaderMap,
    accounts: &Accounts,
    project: Option<&str>,
) -> Result<Uuid, ApiError> {
    let key = bearer(headers)
        .filter(|c| ApiKey::looks_like_key(c))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    accounts.read_access(key, bearer(headers), project).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shippers_send_keys_as_basic_passwords_and_elasticsearch_api_keys() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let with = |value: String| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            headers
        };
        let key = "ledger_abc";
        assert_eq!(
            shipper_credential(&with(format!("Basic {}", b64(&format!("user:{key}")))), false).as_deref(),
            Some(key)
        );
        assert_eq!(shipper_credential(&with(format!("Bearer {key}")), false).as_deref(), Some(key));
        assert_eq!(
            shipper_credential(&with(format!("ApiKey {}", b64(&format!("id:{key}")))), true).as_deref(),
            Some(key)
        );
        assert_eq!(shipper_credential(&with(format!("ApiKey {}", b64(&format!("id:{key}")))), false), None);
        assert_eq!(shipper_credential(&with("Basic !!!".into()), false), None);
    }
}
