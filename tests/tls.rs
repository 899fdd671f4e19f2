#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! TLS: with `server.tls_cert_path` and `server.tls_key_path` set, REST and gRPC are served over TLS only.

mod support;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::json;
use support::{Daemon, Fresh, Kind};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// A self-signed certificate for `localhost`, written into the backend's directory: (it, cert path, key path).
fn certificate(fresh: &Fresh) -> (rcgen::CertifiedKey<rcgen::KeyPair>, String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (fresh.dir.path().join("cert.pem"), fresh.dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (certified, cert.display().to_string(), key.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_are_served_over_tls() {
    let fresh = Fresh::new(Kind::Embedded);
    let (certified, cert, key) = certificate(&fresh);
    let cert_pem = certified.cert.pem();
    let mut d = Daemon::start_with(
        fresh,
        &[("LEDGER__SERVER__TLS_CERT_PATH", cert.as_str()), ("LEDGER__SERVER__TLS_KEY_PATH", key.as_str())],
    )
    .await;
    let plain = d.base.clone();
    assert!(d.output().contains("\"tls\":true"), "{}", d.output());

    // Plain HTTP on the TLS port is not served.
    let refused = reqwest::Client::new().get(format!("{plain}/health")).send().await;
    assert!(refused.map(|r| r.status() != 200).unwrap_or(true), "plain HTTP was answered");

    d.use_tls(cert_pem.as_bytes());
    assert_eq!(d.get("/health", None).await.status, 200);
    let (_, _, api_key) = d.tenant("ada@example.com").await;
    let accepted = d.ingest(&api_key, json!({"message": "over https"})).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    d.stored(&api_key, accepted.body["ids"][0].as_str().unwrap()).await;

    // gRPC over TLS, the certificate checked against the test's CA.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert_pem)).domain_name("localhost");
    let endpoint = d.grpc.replace("localhost", "127.0.0.1");
    let channel = Channel::from_shared(endpoint).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut client = IngestServiceClient::new(channel);
    let mut call = tonic::Request::new(pb::IngestRequest {
        logs: vec![pb::LogRecord { message: "over grpc+tls".into(), level: "info".into(), ..Default::default() }],
    });
    call.metadata_mut().insert("authorization", format!("Bearer {api_key}").parse().unwrap());
    assert_eq!(client.ingest(call).await.unwrap().into_inner().accepted, 1);

    // And SIGTERM still ends it cleanly.
    let status = tokio::task::block_in_place(|| d.terminate());
    assert!(status.success(), "exit status {status}: {}", d.output());
}

#[test]
fn a_bad_certificate_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let output = std::process::Command::new(support::ledger_binary())
        .args(["--config", &support::config_path(), "serve"])
        .env("LEDGER__BACKEND__DATA_DIR", dir.path())
        .env("LEDGER__SERVER__HTTP_ADDR", "127.0.0.1:0")
        .env("LEDGER__SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("LEDGER__SERVER__TLS_CERT_PATH", &cert)
        .env("LEDGER__SERVER__TLS_KEY_PATH", &cert)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.tls_cert_path"), "{stderr}");

    let only_one = std::process::Command::new(support::ledger_binary())
        .args(["--config", &support::config_path(), "check-config"])
        .env("LEDGER__SERVER__TLS_CERT_PATH", &cert)
        .output()
        .unwrap();
    assert!(!only_one.status.success());
    assert!(String::from_utf8_lossy(&only_one.stderr).contains("go together"));
}

/// `[syslog] tls = true`: the syslog listener speaks TLS with the server's certificate; a message sent over
/// it (octet-counted RFC 5424, the key in our structured data) is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_is_served_over_tls() {
    use tokio::io::AsyncWriteExt;
    let fresh = Fresh::new(Kind::Embedded);
    let (certified, cert, key) = certificate(&fresh);
    let cert_pem = certified.cert.pem();
    let mut d = Daemon::start_with(
        fresh,
        &[
            ("LEDGER__SERVER__TLS_CERT_PATH", cert.as_str()),
            ("LEDGER__SERVER__TLS_KEY_PATH", key.as_str()),
            ("LEDGER__SYSLOG__TCP_ADDR", "127.0.0.1:0"),
            ("LEDGER__SYSLOG__TLS", "true"),
        ],
    )
    .await;
    d.use_tls(cert_pem.as_bytes());
    let (_, _, api_key) = d.tenant("syslog-tls@example.com").await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&d.syslog).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let message = format!("<11>1 - tls-host tls-app - - [ledger@41058 key=\"{api_key}\"] syslog over tls");
    tls.write_all(format!("{} {message}", message.len()).as_bytes()).await.unwrap();
    tls.shutdown().await.unwrap();

    let logs = support::eventually(std::time::Duration::from_secs(20), "the syslog message is stored", || async {
        let logs = d.all_logs(&api_key, 100).await;
        (!logs.is_empty()).then_some(logs)
    })
    .await;
    assert_eq!(logs[0]["message"], "syslog over tls");
    assert_eq!(logs[0]["service"], "tls-app");
    assert_eq!(logs[0]["level"], "ERROR");
}

/// A client that finishes the TLS handshake and then says nothing is closed once the handshake timeout
/// passes, on both listeners: quiet TLS connections cannot hold the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_goes_quiet_after_its_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let fresh = Fresh::new(Kind::Embedded);
    let (certified, cert, key) = certificate(&fresh);
    let d = Daemon::start_with(
        fresh,
        &[
            ("LEDGER__SERVER__TLS_CERT_PATH", cert.as_str()),
            ("LEDGER__SERVER__TLS_KEY_PATH", key.as_str()),
            ("LEDGER__SERVER__HEADER_READ_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    for addr in [d.http_addr(), d.grpc_addr()] {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("the handshake completes");
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a quiet TLS connection to {addr} was still open after 10 s");
    }
}
