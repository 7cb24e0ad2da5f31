//! The connection check: connect with bounded timeouts, honouring the URL's
//! `sslmode`, run `SELECT 1`, close. No connection outlives a check, so a
//! thousand stacks hold no connections between reconciles.
//!
//! A failure is classified into a `DatabaseReady` reason with a message a
//! user can act on. Messages are built from the URL's identity and the
//! driver's or server's error text, passed through
//! [`DatabaseUrl::redact`]: never the password, never the whole URL.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

use super::url::DatabaseUrl;
use crate::api::conditions::reasons;

/// Upper bounds of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Resolving the host, TCP, TLS and authentication together.
    pub connect: Duration,
    /// One statement; also the server-side `statement_timeout`.
    pub statement: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(5),
        }
    }
}

/// Why a database could not be used: a `DatabaseReady` reason and a message
/// without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Connects, runs `SELECT 1` and closes.
pub async fn check(url: &DatabaseUrl, limits: Limits) -> Result<(), Failure> {
    let mut connection = connect(url, limits).await?;
    // Through `Executor`, whose boxed future is `Send` for every lifetime,
    // as a reconcile future must be (the query builder's is not provably).
    let answered = tokio::time::timeout(
        limits.statement,
        Executor::execute(&mut connection, sqlx::raw_sql("SELECT 1")),
    )
    .await;
    let result = match answered {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(classify(url, &error)),
        Err(_) => Err(timed_out(url, "SELECT 1", limits.statement)),
    };
    close(connection).await;
    result
}

/// A connection within `limits.connect`, every statement on it bounded by
/// `limits.statement` on the server, in read-only transactions. The caller
/// closes it with [`close`].
pub(crate) async fn connect(url: &DatabaseUrl, limits: Limits) -> Result<PgConnection, Failure> {
    let statement_timeout = limits.statement.as_millis().to_string();
    let options = url.connect_options().options([
        ("statement_timeout", statement_timeout.as_str()),
        ("default_transaction_read_only", "on"),
    ]);
    let connecting = async {
        if !url.is_socket() {
            resolve(url).await?;
        }
        PgConnection::connect_with(&options)
            .await
            .map_err(|error| classify(url, &error))
    };
    tokio::time::timeout(limits.connect, connecting)
        .await
        .unwrap_or_else(|_| Err(timed_out(url, "connecting", limits.connect)))
}

/// Ends the session politely; a server that does not answer in a second
/// gets the socket closed instead.
pub(crate) async fn close(connection: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
}

/// Resolves the host first, so an unknown name is told apart from a
/// refused connection.
async fn resolve(url: &DatabaseUrl) -> Result<(), Failure> {
    let found = tokio::net::lookup_host((url.host(), url.port()))
        .await
        .map(|mut addresses| addresses.next().is_some());
    match found {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(Failure::new(
            reasons::HOST_NOT_FOUND,
            format!(
                "host {:?} does not resolve; check the host of the database URL",
                url.host()
            ),
        )),
    }
}

fn timed_out(url: &DatabaseUrl, what: &str, limit: Duration) -> Failure {
    Failure::new(
        reasons::TIMEOUT,
        format!(
            "{} did not answer within {} s ({what}); check that the host and port are \
             PostgreSQL's and that a firewall lets the operator through",
            url.endpoint(),
            limit.as_secs_f64()
        ),
    )
}

/// The reason and message for a driver error.
pub(crate) fn classify(url: &DatabaseUrl, error: &sqlx::Error) -> Failure {
    let endpoint = url.endpoint();
    let detail = url.redact(&error.to_string());
    match error {
        sqlx::Error::Database(database) => {
            let server = url.redact(database.message());
            match database.code().as_deref() {
                // invalid_password, invalid_authorization_specification
                // (no pg_hba.conf entry, unknown role)
                Some("28P01" | "28000") => Failure::new(
                    reasons::AUTHENTICATION_FAILED,
                    format!(
                        "{endpoint} rejected user {:?}: {server}; check the user and password \
                         in the database URL",
                        url.user()
                    ),
                ),
                // invalid_catalog_name
                Some("3D000") => Failure::new(
                    reasons::DATABASE_MISSING,
                    format!(
                        "database {:?} does not exist on {endpoint}; create it or fix the \
                         database name in the URL",
                        url.database()
                    ),
                ),
                Some("57014") => Failure::new(
                    reasons::TIMEOUT,
                    format!("{endpoint} cancelled a statement at the statement timeout: {server}"),
                ),
                code => Failure::new(
                    reasons::CONNECTION_FAILED,
                    format!(
                        "{endpoint} answered with an error (SQLSTATE {}): {server}",
                        code.unwrap_or("unknown")
                    ),
                ),
            }
        }
        sqlx::Error::Tls(_) => tls_failed(url, &detail),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::new(
            reasons::CONNECTION_REFUSED,
            format!(
                "{endpoint} refused the connection; check that PostgreSQL listens on that \
                 host and port"
            ),
        ),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            timed_out(url, "connecting", Limits::default().connect)
        }
        // rustls reports a failed handshake (an untrusted certificate, a
        // name mismatch) as an I/O error wrapping its own.
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            tls_failed(url, &detail)
        }
        sqlx::Error::Io(io)
            if io.kind() == std::io::ErrorKind::NotFound && url.ssl_mode().verifies() =>
        {
            tls_failed(url, &detail)
        }
        sqlx::Error::Protocol(_) => Failure::new(
            reasons::CONNECTION_FAILED,
            format!(
                "{endpoint} did not speak the PostgreSQL protocol as expected ({detail}); \
                 check that the port is PostgreSQL's"
            ),
        ),
        _ => Failure::new(
            reasons::CONNECTION_FAILED,
            format!("connecting to {endpoint} failed: {detail}"),
        ),
    }
}

fn tls_failed(url: &DatabaseUrl, detail: &str) -> Failure {
    let hint = if url.ssl_mode().verifies() {
        "the operator verifies the server certificate against Mozilla's root CAs, or the \
         sslrootcert file named in the URL; use sslmode=require to encrypt without verifying"
    } else {
        "the server does not offer TLS; enable ssl on the server or use sslmode=prefer"
    };
    Failure::new(
        reasons::TLS_FAILED,
        format!(
            "TLS with {} failed (sslmode={}): {detail}; {hint}",
            url.endpoint(),
            url.ssl_mode().as_str()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> DatabaseUrl {
        DatabaseUrl::parse(text.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // Bind, note the port, release it: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let failure = check(
            &url(&format!("postgresql://app:hunter2@127.0.0.1:{port}/shop")),
            Limits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(failure.reason, reasons::CONNECTION_REFUSED, "{failure:?}");
        assert!(failure.message.contains(&format!("127.0.0.1:{port}")));
        assert!(!failure.message.contains("hunter2"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts TCP connections (the kernel's backlog) and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits {
            connect: Duration::from_millis(300),
            statement: Duration::from_millis(300),
        };
        let failure = check(
            &url(&format!(
                "postgresql://app:hunter2@127.0.0.1:{port}/shop?sslmode=disable"
            )),
            limits,
        )
        .await
        .unwrap_err();
        assert_eq!(failure.reason, reasons::TIMEOUT, "{failure:?}");
        drop(listener);
    }
}
