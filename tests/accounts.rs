#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Accounts, projects and API keys over HTTP against the real daemon, on both backends (API.md's
//! Accounts, Projects and API keys sections).

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use support::Daemon;

on_both_backends!(
    register_login_me_logout,
    register_refuses_bad_input_with_every_problem,
    failed_logins_are_limited_per_email,
    forged_tampered_and_unsigned_tokens_are_refused,
    projects_crud_with_partial_settings,
    one_user_sees_nothing_of_anothers_projects,
    api_keys_are_shown_once_listed_without_secret_and_revoked,
    request_ids_are_echoed_or_made,
);

async fn register_login_me_logout(d: Daemon) {
    let r = d.post("/v1/register", None, json!({"email": "Ada@Example.com", "password": "correct horse"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["user"]["email"], "ada@example.com");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    let created_at = r.body["user"]["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == "2026-11-27T08:00:00.123456Z".len(), "{created_at}");

    // The e-mail is compared case-insensitively.
    let again = d.post("/v1/register", None, json!({"email": "ADA@example.com", "password": "another one"})).await;
    again.assert_error(409, "email_taken");

    let login = d.post("/v1/login", None, json!({"email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(login.body["user"]["id"], r.body["user"]["id"]);
    let token = login.body["token"].as_str().unwrap();

    let wrong_password =
        d.post("/v1/login", None, json!({"email": "ada@example.com", "password": "wrong horse"})).await;
    let unknown_email =
        d.post("/v1/login", None, json!({"email": "bob@example.com", "password": "correct horse"})).await;
    wrong_password.assert_error(401, "unauthorized");
    unknown_email.assert_error(401, "unauthorized");
    assert_eq!(wrong_password.body["error"]["message"], unknown_email.body["error"]["message"]);

    let me = d.get("/v1/me", Some(token)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body, r.body["user"]);

    // Logging out one session leaves the other alive.
    let first = r.body["token"].as_str().unwrap();
    let out = d.call(Method::POST, "/v1/logout", Some(token), None).await;
    assert_eq!(out.status, 204, "{out:?}");
    d.get("/v1/me", Some(token)).await.assert_error(401, "unauthorized");
    d.call(Method::POST, "/v1/logout", Some(token), None).await.assert_error(401, "unauthorized");
    assert_eq!(d.get("/v1/me", Some(first)).await.status, 200);

    d.get("/v1/me", None).await.assert_error(401, "unauthorized");
}

async fn register_refuses_bad_input_with_every_problem(d: Daemon) {
    let r = d.post("/v1/register", None, json!({})).await;
    r.assert_error(422, "validation_failed");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "password"]);

    for (body, field) in [
        (json!({"email": "not-an-email", "password": "correct horse"}), "email"),
        (json!({"email": "a@b.co", "password": "7 bytes"}), "password"),
        (json!({"email": "a@b.co", "password": "x".repeat(73)}), "password"),
        (json!({"email": 5, "password": "correct horse"}), "email"),
        (json!({"email": "a@b.co", "password": "correct horse", "admin": true}), "admin"),
    ] {
        let r = d.post("/v1/register", None, body.clone()).await;
        r.assert_error(422, "validation_failed");
        let details = r.body["error"]["details"].as_array().unwrap();
        assert!(details.iter().any(|p| p["field"].as_str().unwrap().contains(field)), "{body}: {r:?}");
    }
    // 72 bytes is the longest password bcrypt takes whole, and is accepted.
    let r = d.post("/v1/register", None, json!({"email": "long@b.co", "password": "x".repeat(72)})).await;
    assert_eq!(r.status, 201, "{r:?}");

    let malformed = d
        .client()
        .post(d.url("/v1/register"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    Daemon::reply(malformed).await.assert_error(400, "bad_request");
    let form = d
        .client()
        .post(d.url("/v1/register"))
        .header("content-type", "text/plain")
        .body("email=a")
        .send()
        .await
        .unwrap();
    Daemon::reply(form).await.assert_error(415, "unsupported_media_type");
    let huge = d
        .client()
        .post(d.url("/v1/register"))
        .header("content-type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    Daemon::reply(huge).await.assert_error(413, "payload_too_large");

    // Nothing was stored by the failed attempts.
    let r = d.post("/v1/login", None, json!({"email": "a@b.co", "password": "correct horse"})).await;
    r.assert_error(401, "unauthorized");
}

async fn failed_logins_are_limited_per_email(d: Daemon) {
    d.signup("ada@example.com").await;
    d.signup("bob@example.com").await;
    for _ in 0..10 {
        let r = d.post("/v1/login", None, json!({"email": "ada@example.com", "password": "wrong horse"})).await;
        r.assert_error(401, "unauthorized");
    }
    // Locked now, even with the right password, and told for how long.
    let r = d.post("/v1/login", None, json!({"email": "ada@example.com", "password": "correct horse"})).await;
    r.assert_error(429, "too_many_login_attempts");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Another e-mail is not affected.
    let r = d.post("/v1/login", None, json!({"email": "bob@example.com", "password": "correct horse"})).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn jwt_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

async fn forged_tampered_and_unsigned_tokens_are_refused(d: Daemon) {
    let token = d.signup("ada@example.com").await;
    assert_eq!(d.get("/v1/me", Some(&token)).await.status, 200);
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    // Signed with another secret.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-0123456789abcdef"),
    )
    .unwrap();
    // The payload changed under the original signature (another user id).
    let mut other = claims.clone();
    other["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let tampered = format!("{}.{}.{}", parts[0], jwt_part(&other), parts[2]);
    // `alg: none`, no signature.
    let unsigned = format!("{}.{}.", jwt_part(&json!({"alg": "none", "typ": "JWT"})), parts[1]);
    // Expired, but otherwise valid in form (signed with the wrong key too, since tests do not know it).
    let mut expired = claims.clone();
    expired["exp"] = json!(1);
    let expired = format!("{}.{}.{}", parts[0], jwt_part(&expired), parts[2]);

    for bad in [forged.as_str(), &tampered, &unsigned, &expired, "garbage", ""] {
        d.get("/v1/me", Some(bad)).await.assert_error(401, "unauthorized");
    }
    // An API key is not a session.
    let project = d.project(&token, "p").await;
    let (_, key) = d.key(&token, &project, &["ingest", "query"]).await;
    d.get("/v1/me", Some(&key)).await.assert_error(401, "unauthorized");
    d.get("/v1/projects", Some(&key)).await.assert_error(401, "unauthorized");
    let via_header = d.client().get(d.url("/v1/projects")).header("x-api-key", &key).send().await.unwrap();
    Daemon::reply(via_header).await.assert_error(401, "unauthorized");
}

async fn projects_crud_with_partial_settings(d: Daemon) {
    let token = d.signup("ada@example.com").await;
    let t = Some(token.as_str());
    let r = d.post("/v1/projects", t, json!({"name": "shop"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body["settings"],
        json!({"rate_limit_per_minute": 1000, "rate_limit_per_hour": 50000, "daily_quota": 10000000,
               "retention_days": 30, "max_queue_depth": 100000})
    );
    let id = r.body["id"].as_str().unwrap().to_owned();
    let custom =
        d.post("/v1/projects", t, json!({"name": "api", "settings": {"daily_quota": 5, "retention_days": 7}})).await;
    assert_eq!(custom.status, 201, "{custom:?}");
    assert_eq!(custom.body["settings"]["daily_quota"], 5);
    assert_eq!(custom.body["settings"]["rate_limit_per_minute"], 1000);

    let list = d.get("/v1/projects", t).await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> =
        list.body["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shop", "api"]);

    let got = d.get(&format!("/v1/projects/{id}"), t).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r.body);

    let patched = d.patch(&format!("/v1/projects/{id}"), t, json!({"settings": {"rate_limit_per_minute": 10}})).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["name"], "shop");
    assert_eq!(patched.body["settings"]["rate_limit_per_minute"], 10);
    assert_eq!(patched.body["settings"]["rate_limit_per_hour"], 50000);
    let renamed = d.patch(&format!("/v1/projects/{id}"), t, json!({"name": "store"})).await;
    assert_eq!(renamed.body["name"], "store");
    assert_eq!(renamed.body["settings"]["rate_limit_per_minute"], 10);

    for bad in [
        json!({"name": ""}),
        json!({"settings": {"daily_quota": 0}}),
        json!({"settings": {"retention_days": 100000}}),
        json!({"settings": {"rate_limit_per_minute": -1}}),
        json!({"settings": {"burst": 3}}),
        json!({"owner": "me"}),
    ] {
        d.patch(&format!("/v1/projects/{id}"), t, bad).await.assert_error(422, "validation_failed");
    }
    // A failed PATCH changed nothing.
    assert_eq!(d.get(&format!("/v1/projects/{id}"), t).await.body, renamed.body);
    d.post("/v1/projects", t, json!({})).await.assert_error(422, "validation_failed");
    d.post("/v1/projects", t, json!({"name": "x".repeat(129)})).await.assert_error(422, "validation_failed");

    let deleted = d.delete(&format!("/v1/projects/{id}"), t).await;
    assert_eq!(deleted.status, 204);
    d.get(&format!("/v1/projects/{id}"), t).await.assert_error(404, "not_found");
    d.delete(&format!("/v1/projects/{id}"), t).await.assert_error(404, "not_found");
    d.get("/v1/projects/not-a-uuid", t).await.assert_error(404, "not_found");
    d.get("/v1/projects", None).await.assert_error(401, "unauthorized");
}

async fn one_user_sees_nothing_of_anothers_projects(d: Daemon) {
    let ada = d.signup("ada@example.com").await;
    let bob = d.signup("bob@example.com").await;
    let project = d.project(&ada, "secret").await;
    let (key_id, _) = d.key(&ada, &project, &["ingest"]).await;
    let b = Some(bob.as_str());

    assert_eq!(d.get("/v1/projects", b).await.body, json!({"projects": []}));
    d.get(&format!("/v1/projects/{project}"), b).await.assert_error(404, "not_found");
    d.patch(&format!("/v1/projects/{project}"), b, json!({"name": "mine"})).await.assert_error(404, "not_found");
    d.delete(&format!("/v1/projects/{project}"), b).await.assert_error(404, "not_found");
    d.get(&format!("/v1/projects/{project}/keys"), b).await.assert_error(404, "not_found");
    d.post(&format!("/v1/projects/{project}/keys"), b, json!({})).await.assert_error(404, "not_found");
    d.delete(&format!("/v1/projects/{project}/keys/{key_id}"), b).await.assert_error(404, "not_found");

    // A key id of another project, even one's own, is not found under this project.
    let bobs = d.project(&bob, "mine").await;
    d.delete(&format!("/v1/projects/{bobs}/keys/{key_id}"), b).await.assert_error(404, "not_found");

    // Ada's project is untouched.
    let r = d.get(&format!("/v1/projects/{project}"), Some(&ada)).await;
    assert_eq!(r.body["name"], "secret");
    let keys = d.get(&format!("/v1/projects/{project}/keys"), Some(&ada)).await;
    assert!(keys.body["keys"][0]["revoked_at"].is_null(), "{keys:?}");
}

async fn api_keys_are_shown_once_listed_without_secret_and_revoked(d: Daemon) {
    let token = d.signup("ada@example.com").await;
    let t = Some(token.as_str());
    let project = d.project(&token, "shop").await;
    let keys_path = format!("/v1/projects/{project}/keys");

    // No body at all: the defaults.
    let plain = d.call(Method::POST, &keys_path, t, None).await;
    assert_eq!(plain.status, 201, "{plain:?}");
    assert_eq!(plain.body["scopes"], json!(["ingest"]));
    let key = plain.body["key"].as_str().unwrap();
    assert!(key.starts_with("ledger_") && key.len() == 39, "{key}");
    assert!(key[7..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    assert!(key.starts_with(plain.body["prefix"].as_str().unwrap()));

    let both = d.post(&keys_path, t, json!({"name": "ci", "scopes": ["query", "ingest", "query"]})).await;
    assert_eq!(both.status, 201, "{both:?}");
    assert_eq!(both.body["scopes"], json!(["ingest", "query"]));
    assert_eq!(both.body["name"], "ci");

    d.post(&keys_path, t, json!({"scopes": ["admin"]})).await.assert_error(422, "validation_failed");
    d.post(&keys_path, t, json!({"scopes": []})).await.assert_error(422, "validation_failed");

    let list = d.get(&keys_path, t).await;
    assert_eq!(list.status, 200);
    let keys = list.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        assert!(k.get("key").is_none(), "a listing shows a secret: {k}");
        assert!(!k.to_string().contains(&key[15..]), "a listing shows a secret: {k}");
        assert!(k["revoked_at"].is_null());
        assert!(k.get("last_used_at").is_some());
    }

    let key_id = plain.body["id"].as_str().unwrap();
    assert_eq!(d.delete(&format!("{keys_path}/{key_id}"), t).await.status, 204);
    // Revoking twice is harmless.
    assert_eq!(d.delete(&format!("{keys_path}/{key_id}"), t).await.status, 204);
    let list = d.get(&keys_path, t).await;
    let revoked = list.body["keys"].as_array().unwrap().iter().find(|k| k["id"] == key_id).unwrap().clone();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    d.delete(&format!("{keys_path}/{}", uuid::Uuid::now_v7()), t).await.assert_error(404, "not_found");
}

async fn request_ids_are_echoed_or_made(d: Daemon) {
    let with = d.client().get(d.url("/v1/me")).header("x-request-id", "client-id-42").send().await.unwrap();
    let r = Daemon::reply(with).await;
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));
    r.assert_error(401, "unauthorized");
    assert_eq!(r.body["error"]["request_id"], "client-id-42");

    let a = d.get("/health", None).await;
    let b = d.get("/health", None).await;
    let (a, b) = (a.header("x-request-id").unwrap().to_owned(), b.header("x-request-id").unwrap().to_owned());
    assert!(!a.is_empty() && a != b);

    let unknown = d.get("/v2/nothing", None).await;
    unknown.assert_error(404, "not_found");
    let wrong_method = d.call(Method::PUT, "/v1/register", None, None).await;
    wrong_method.assert_error(405, "method_not_allowed");
    // The daemon's log lines carry the request id.
    assert!(d.output().contains("client-id-42"), "no log line with the request id");
}
