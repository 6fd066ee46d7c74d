//! The AWS edge shared by all functions: SDK clients built once from the environment (they
//! honour `AWS_ENDPOINT_URL*`, so the same code reaches the local emulators), DynamoDB item
//! helpers, the SQS batch handler with partial batch failures, and logging set-up.

pub mod dynamo;
pub mod retry;
pub mod s3;
pub mod sqs;

pub use aws_config::SdkConfig;
pub use aws_sdk_dynamodb;
pub use aws_sdk_s3;
pub use aws_sdk_sqs;

/// Loads region, credentials and endpoint overrides from the environment (no network call).
/// HTTPS trusts the system's CA bundle file ([`ca_bundle`]) when there is one.
pub async fn load_sdk_config() -> SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match ca_bundle().and_then(https_client) {
        Some(client) => loader.http_client(client).load().await,
        None => loader.load().await,
    }
}

/// The system's CA bundle: the file `SSL_CERT_FILE` names, else the first of Amazon Linux's
/// (the Lambda runtime's) and Debian's bundle files that exists.
///
/// Why not the SDK's default trust store: it loads the native roots with rustls-native-certs,
/// which reads the bundle file and also every file of every certificate directory. That is
/// 440 files on Debian, 5 to 10 ms of each cold start; one bundle file takes about 1 ms.
///
/// A bundle is used only if rustls accepts every certificate in it (the SDK panics on one it
/// cannot add); otherwise the SDK's default trust store is.
pub fn ca_bundle() -> Option<Vec<u8>> {
    const BUNDLES: [&str; 2] = [
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/certs/ca-certificates.crt",
    ];
    let named = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let pem = named
        .into_iter()
        .chain(BUNDLES.iter().map(std::path::PathBuf::from))
        .find_map(|path| std::fs::read(path).ok())?;
    all_trusted_roots(&pem).then_some(pem)
}

/// Whether `pem` holds at least one certificate and rustls takes each as a trust anchor.
fn all_trusted_roots(pem: &[u8]) -> bool {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        match cert.map(|cert| roots.add(cert)) {
            Ok(Ok(())) => count += 1,
            _ => return false,
        }
    }
    count > 0
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxy settings from the environment),
/// trusting the certificates of `pem` only. They are parsed when a client first connects.
fn https_client(pem: Vec<u8>) -> Option<aws_sdk_dynamodb::config::SharedHttpClient> {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    let trust = TrustStore::empty().with_pem_certificate(pem);
    let context = TlsContext::builder().with_trust_store(trust).build().ok()?;
    Some(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut connector = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context.clone());
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        }),
    )
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// Logging: JSON lines in Lambda (CloudWatch), plain text elsewhere; `RUST_LOG` filters.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests, local stack): keep the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_trusted_only_when_rustls_takes_every_certificate() -> Result<(), String> {
        let system = ca_bundle().ok_or("this machine has no CA bundle rustls takes")?;
        assert!(all_trusted_roots(&system));
        assert!(!all_trusted_roots(b""));
        let mut broken = system.clone();
        broken.extend_from_slice(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        );
        assert!(!all_trusted_roots(&broken));
        Ok(())
    }

    /// A CA and a `localhost` server certificate it signed: (CA PEM, server cert PEM, key PEM).
    fn ca_and_server() -> anyhow::Result<(String, String, String)> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["localhost".to_owned()])?
            .signed_by(&server_key, &issuer)?;
        Ok((ca_cert.pem(), server.pem(), server_key.serialize_pem()))
    }

    /// A DynamoDB client through [`https_client`] trusting `ca`, against `endpoint`.
    async fn dynamodb_trusting(
        ca: &str,
        endpoint: &str,
    ) -> anyhow::Result<aws_sdk_dynamodb::Client> {
        let client = https_client(ca.as_bytes().to_vec()).ok_or(anyhow::anyhow!("no client"))?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(client)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "key", "secret", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .load()
            .await;
        Ok(dynamodb(&config))
    }

    #[tokio::test]
    async fn the_https_client_trusts_the_bundle_it_was_given_and_nothing_else() -> anyhow::Result<()>
    {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (ca, cert, key) = ca_and_server()?;
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into(), key.into()).await?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("https://localhost:{}", listener.local_addr()?.port());
        let app = axum::Router::new().fallback(|| async {
            (
                [("content-type", "application/x-amz-json-1.0")],
                r#"{"TableNames":["over-tls"]}"#,
            )
        });
        let server = axum_server::from_tcp_rustls(listener, tls)?;
        let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });

        let trusted = dynamodb_trusting(&ca, &endpoint).await?;
        let tables = trusted.list_tables().send().await?;
        assert_eq!(tables.table_names(), ["over-tls"]);

        let (other_ca, _, _) = ca_and_server()?;
        let untrusted = dynamodb_trusting(&other_ca, &endpoint).await?;
        let refused = untrusted.list_tables().send().await;
        assert!(
            refused.is_err(),
            "a server the bundle does not vouch for was trusted"
        );
        task.abort();
        Ok(())
    }
}
