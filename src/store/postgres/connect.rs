//! From a `--database postgres://…` URL to connections: the URL's own
//! options (`sslmode`, `sslrootcert`), TLS over rustls, the timeouts every
//! connection gets, and the pool. Nothing here ever formats the URL itself:
//! errors name the server as `host:port/database`, never the password.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// Connections per instance: the dispatcher's claims and finishes, ingest,
/// the heartbeat and admin reads share them.
pub const POOL_SIZE: usize = 16;
/// How long a request waits for a connection (a free one, or a new one to
/// be made) before the store answers unavailable (SPEC §7: 5 s, then 503).
pub(super) const WAIT: Duration = Duration::from_secs(5);
/// A statement that runs longer is cancelled by the server.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection left inside a transaction this long is closed by the server,
/// so that a stuck client cannot hold back vacuum (dead rows slow claims).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `sslmode`, as libpq names it; `prefer` when the URL says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS, with the certificate checked against the roots and the host name.
    VerifyFull,
}

impl Tls {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "disable" => Tls::Disable,
            "prefer" => Tls::Prefer,
            "require" => Tls::Require,
            "verify-full" => Tls::VerifyFull,
            other => {
                return Err(StoreError::Database(format!(
                    "sslmode={other} is not supported: use disable, prefer, require or verify-full"
                )));
            }
        })
    }
}

/// A parsed `postgres://` URL: what tokio-postgres connects with, and what
/// hookwire reads from it itself.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    /// `sslrootcert`: a PEM file of the roots `verify-full` trusts; without
    /// it (or with `system`), the Mozilla roots (webpki-roots).
    root_cert: Option<String>,
    /// `host:port/database`, for messages.
    pub name: String,
}

impl Target {
    /// Reads a `postgres://` or `postgresql://` URL. Its password is
    /// registered as a secret first, so it is masked in every log line
    /// even where a library prints it.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        register_secrets(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut rest = url::form_urlencoded::Serializer::new(String::new());
        let (mut tls, mut root_cert) = (Tls::Prefer, None);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "sslmode" => tls = Tls::parse(&v)?,
                "sslrootcert" => root_cert = Some(v.into_owned()).filter(|v| v != "system"),
                _ => {
                    rest.append_pair(&k, &v);
                }
            }
        }
        let rest = rest.finish();
        let without = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{rest}")
        };
        // tokio-postgres's own messages name the option, never its value.
        let mut config = tokio_postgres::Config::from_str(&without).map_err(|e| {
            StoreError::Database(format!("invalid PostgreSQL URL: {}", super::DriverError(e)))
        })?;
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Require | Tls::VerifyFull => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(WAIT);
        }
        // Data the server does not acknowledge within this fails the
        // connection, rather than hanging it on a dead network path.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(STATEMENT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hookwire");
        }
        // Startup options: set before the first statement, no round trip.
        let limits = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            STATEMENT_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {limits}"),
            _ => limits,
        };
        config.options(options);
        let name = name(&config);
        Ok(Self {
            config,
            tls,
            root_cert,
            name,
        })
    }

    /// The TLS connector for this target's `sslmode`.
    pub fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Database(format!("cannot set up TLS: {e}")))?;
        let config = match self.tls {
            Tls::VerifyFull => builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth(),
            // libpq does not check the certificate below verify-ca either.
            Tls::Disable | Tls::Prefer | Tls::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let Some(path) = &self.root_cert else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        let unreadable =
            |e: &dyn std::fmt::Display| StoreError::Database(format!("sslrootcert {path}: {e}"));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
            roots
                .add(cert.map_err(|e| unreadable(&e))?)
                .map_err(|e| unreadable(&e))?;
        }
        if roots.is_empty() {
            return Err(unreadable(&"no certificate in the file"));
        }
        Ok(roots)
    }

    /// A pool of up to `size` connections; none is made before the first use.
    pub fn pool(&self, size: usize) -> Result<Pool, StoreError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.connector()?,
            ManagerConfig {
                // A closed connection is dropped when it comes back; one that
                // fails mid-use fails that use, and the next one is new.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot make the connection pool: {e}")))
    }
}

/// The URL's password (decoded, from the user info or a `password=`
/// option) is a secret, and so is the whole URL when it holds one. The user
/// name is not: it is often `postgres` or `hookwire`, and masking those
/// words would make log lines unreadable while hiding nothing.
fn register_secrets(url: &str) {
    let mut secrets = Vec::new();
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
    {
        secrets.push(
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned(),
        );
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "password" {
            secrets.push(v.into_owned());
        }
    }
    if !secrets.is_empty() {
        secrets.push(url.to_owned());
        crate::redact::register(secrets);
    }
}

/// `host:port/database` of a configuration, for messages.
fn name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{host}:{port}/{db}")
}

/// Accepts any server certificate (but still checks that the server holds
/// its key): what `sslmode=prefer` and `require` promise, as in libpq.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookwire_reads_its_options_and_passes_the_rest_on() {
        let t = Target::parse(
            "postgresql://app:s3cr%40t@db.example:6432/hooks?sslmode=require&application_name=x&sslrootcert=system",
        )
        .unwrap();
        assert_eq!(t.tls, Tls::Require);
        assert_eq!(t.root_cert, None);
        assert_eq!(t.name, "db.example:6432/hooks");
        assert_eq!(t.config.get_password(), Some(&b"s3cr@t"[..]));
        assert_eq!(t.config.get_application_name(), Some("x"));
        let options = t.config.get_options().unwrap();
        assert!(options.contains("statement_timeout=30000"), "{options}");
        assert!(
            options.contains("idle_in_transaction_session_timeout=60000"),
            "{options}"
        );
        assert_eq!(
            Target::parse("postgres://h/d").unwrap().tls,
            Tls::Prefer,
            "libpq's default"
        );
    }

    #[test]
    fn a_url_is_shown_with_its_password_masked_and_the_rest_as_given() {
        use crate::store::shown_url;
        assert_eq!(
            shown_url("postgres://app:s3cr%40t@db:6432/hooks?sslmode=require"),
            "postgres://app:[redacted]@db:6432/hooks?sslmode=require"
        );
        assert_eq!(
            shown_url("postgresql://app@db/hooks?password=s3cret&sslmode=disable"),
            "postgresql://app@db/hooks?password=[redacted]&sslmode=disable"
        );
        for plain in [
            "sqlite://data/hookwire.db",
            "postgres://db/hooks",
            "not a url",
        ] {
            assert_eq!(shown_url(plain), plain);
        }
    }

    #[test]
    fn unknown_ssl_modes_and_bad_urls_are_refused_without_the_password() {
        for url in [
            "postgres://u:hunter2-secret@h/d?sslmode=verify-ca",
            "postgres://u:hunter2-secret@h/d?sslmode=sometimes",
            "postgres://u:hunter2-secret@h:notaport/d",
            "postgres://u:hunter2-secret@h/d?frobnicate=1",
        ] {
            let Err(e) = Target::parse(url) else {
                panic!("{url} was accepted");
            };
            let e = e.to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let Err(e) = Target::parse("postgres://h/d?sslmode=verify-ca") else {
            panic!("verify-ca was accepted");
        };
        assert!(e.to_string().contains("verify-full"), "{e}");
    }
}
