//! PostgreSQL connection URLs, as applications keep them in `DATABASE_URL`:
//! `postgresql://user:password@host:5432/database?sslmode=require`.
//!
//! Parsing yields the database's identity (host, port, database: what a
//! migration revision covers), the connect options the operator uses, and a
//! display that never shows the password. The libpq rules apply where an
//! application would rely on them: port 5432 and `sslmode=prefer` by default,
//! the database named after the user when the URL names none, and the
//! `host`, `port`, `dbname`, `user`, `password` and `sslmode` query
//! parameters overriding the URL's parts. Parameters the operator does not
//! need for a connection check (`connect_timeout`, `target_session_attrs`,
//! ...) are ignored, and their values are never echoed.

use std::fmt;

use percent_encoding::percent_decode_str;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::api::stack::DatabaseIdentity;
use crate::secrets::SecretValue;

/// Port of a URL that names none.
pub const DEFAULT_PORT: u16 = 5432;
/// `application_name` of the operator's connections, as `pg_stat_activity`
/// shows them.
pub const APPLICATION_NAME: &str = "appstack-operator";

/// libpq's `sslmode`: whether and how a connection uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The values `sslmode` accepts, for messages.
    pub const ACCEPTED: &str = "disable, allow, prefer, require, verify-ca or verify-full";

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against trusted roots.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Allow => PgSslMode::Allow,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// Why a value is not a usable PostgreSQL URL. No variant carries any part
/// of the value: it may hold a password anywhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it is not a URL ({0})")]
    Malformed(url::ParseError),
    #[error("its scheme is not postgresql:// or postgres://")]
    Scheme,
    #[error("it names no host")]
    NoHost,
    #[error("it names no user")]
    NoUser,
    #[error("its {part} is not valid percent-encoded UTF-8")]
    Encoding { part: &'static str },
    #[error("its {name} parameter is invalid; expected {expected}")]
    Parameter {
        name: &'static str,
        expected: &'static str,
    },
}

/// A parsed PostgreSQL URL. It holds the password for connecting; its
/// `Debug` and `Display` show the URL without it.
#[derive(Clone)]
pub struct DatabaseUrl {
    host: String,
    port: u16,
    user: String,
    password: Option<Password>,
    database: String,
    ssl_mode: SslMode,
    ssl_root_cert: Option<String>,
}

/// The password as it is used (decoded) and as it was written (the URL's
/// percent-encoded form), both kept out of messages by
/// [`DatabaseUrl::redact`].
#[derive(Clone)]
struct Password {
    decoded: SecretValue,
    encoded: SecretValue,
}

impl DatabaseUrl {
    /// Parses a URL read from a Secret. Surrounding whitespace (a trailing
    /// newline from `echo ... | kubectl create secret`) is ignored.
    pub fn parse(value: &[u8]) -> Result<Self, UrlError> {
        let text = std::str::from_utf8(value).map_err(|_| UrlError::NotUtf8)?;
        let url = url::Url::parse(text.trim()).map_err(UrlError::Malformed)?;
        if !matches!(url.scheme(), "postgresql" | "postgres") {
            return Err(UrlError::Scheme);
        }
        let decode = |part: &'static str, raw: &str| {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| UrlError::Encoding { part })
        };
        let mut host = decode("host", url.host_str().unwrap_or_default())?;
        let mut port = url.port().unwrap_or(DEFAULT_PORT);
        let mut user = decode("user", url.username())?;
        let mut password = url
            .password()
            .map(|raw| {
                Ok::<_, UrlError>(Password {
                    decoded: SecretValue::new(decode("password", raw)?),
                    encoded: SecretValue::new(raw),
                })
            })
            .transpose()?;
        let mut database = decode("database", url.path().trim_start_matches('/'))?;
        let mut ssl_mode = SslMode::Prefer;
        let mut ssl_root_cert = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "host" => host = value.into_owned(),
                "port" => {
                    port = value.parse().map_err(|_| UrlError::Parameter {
                        name: "port",
                        expected: "a port number",
                    })?;
                }
                "user" => user = value.into_owned(),
                "password" => {
                    password = Some(Password {
                        decoded: SecretValue::new(value.as_bytes()),
                        encoded: SecretValue::new(
                            url::form_urlencoded::byte_serialize(value.as_bytes())
                                .collect::<String>(),
                        ),
                    });
                }
                "dbname" => database = value.into_owned(),
                "sslmode" => {
                    ssl_mode = SslMode::parse(&value).ok_or(UrlError::Parameter {
                        name: "sslmode",
                        expected: SslMode::ACCEPTED,
                    })?;
                }
                "sslrootcert" => ssl_root_cert = Some(value.into_owned()),
                _ => {}
            }
        }
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if user.is_empty() {
            return Err(UrlError::NoUser);
        }
        if database.is_empty() {
            database = user.clone();
        }
        Ok(Self {
            host,
            port,
            user,
            password,
            database,
            ssl_mode,
            ssl_root_cert,
        })
    }

    /// Which database this URL names: host (lower-cased: DNS names are
    /// case-insensitive), port and database name. No credentials.
    pub fn identity(&self) -> DatabaseIdentity {
        DatabaseIdentity::External {
            host: self.host.to_lowercase(),
            port: self.port,
            database: self.database.clone(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Whether the host is a Unix socket directory rather than a network
    /// host.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The options the operator connects with: everything from the URL,
    /// nothing from a `.pgpass` file, and the operator's application name.
    pub fn connect_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass();
        let options = if self.is_socket() {
            options.socket(&self.host)
        } else {
            options.host(&self.host)
        };
        let mut options = options
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .ssl_mode(self.ssl_mode.to_sqlx())
            .application_name(APPLICATION_NAME);
        if let Some(password) = &self.password {
            options = options.password(&String::from_utf8_lossy(password.decoded.expose()));
        }
        if let Some(path) = &self.ssl_root_cert {
            options = options.ssl_root_cert(path);
        }
        options
    }

    /// `text` with this URL's password, in every form the URL holds it,
    /// replaced by `<redacted>`. Error texts from drivers and servers pass
    /// through this before they reach a log line, an Event or the status.
    pub fn redact(&self, text: &str) -> String {
        let Some(password) = &self.password else {
            return text.to_string();
        };
        let mut text = text.to_string();
        for form in [&password.decoded, &password.encoded] {
            let form = String::from_utf8_lossy(form.expose());
            if !form.is_empty() {
                text = text.replace(form.as_ref(), "<redacted>");
            }
        }
        text
    }
}

impl fmt::Display for DatabaseUrl {
    /// `postgresql://user:<redacted>@host:port/database?sslmode=...`: the
    /// password is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_some() {
            ":<redacted>"
        } else {
            ""
        };
        write!(
            f,
            "postgresql://{}{password}@{}/{}?sslmode={}",
            self.user,
            self.endpoint(),
            self.database,
            self.ssl_mode.as_str()
        )
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatabaseUrl, UrlError> {
        DatabaseUrl::parse(text.as_bytes())
    }

    fn external(host: &str, port: u16, database: &str) -> DatabaseIdentity {
        DatabaseIdentity::External {
            host: host.into(),
            port,
            database: database.into(),
        }
    }

    #[test]
    fn identity_is_host_port_and_database_with_libpq_defaults() {
        let url =
            parse("postgresql://app:s3cret@DB.Example.com:6432/shop?sslmode=require").unwrap();
        assert_eq!(url.identity(), external("db.example.com", 6432, "shop"));
        assert_eq!(
            (url.user(), url.ssl_mode()),
            ("app", SslMode::Require),
            "user and sslmode"
        );
        let defaults = parse("postgres://app@db.example.com\n").unwrap();
        assert_eq!(
            defaults.identity(),
            external("db.example.com", 5432, "app"),
            "port 5432, database named after the user, trailing newline ignored"
        );
        assert_eq!(defaults.ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn query_parameters_override_the_url_parts() {
        let url = parse(
            "postgresql://ignored@placeholder/ignored?host=db.internal&port=5433&dbname=orders&user=app&password=p%40ss&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(url.identity(), external("db.internal", 5433, "orders"));
        assert_eq!(url.user(), "app");
        assert_eq!(url.redact("p@ss and p%40ss"), "<redacted> and <redacted>");
        let socket = parse("postgresql://app@localhost/shop?host=/var/run/postgresql").unwrap();
        assert!(socket.is_socket());
    }

    #[test]
    fn a_rotated_password_keeps_the_identity() {
        let before = parse("postgresql://app:one@db:5432/shop").unwrap();
        let after = parse("postgresql://app:two@db:5432/shop").unwrap();
        assert_eq!(before.identity(), after.identity());
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let url = parse("postgresql://app:p%2Fss%3Aw0rd@db.example.com/shop?sslmode=verify-full")
            .unwrap();
        let shown = format!("{url} {url:?}");
        assert_eq!(
            url.to_string(),
            "postgresql://app:<redacted>@db.example.com:5432/shop?sslmode=verify-full"
        );
        assert!(!shown.contains("p/ss:w0rd") && !shown.contains("p%2Fss%3Aw0rd"));
        assert_eq!(
            url.redact("failed for p/ss:w0rd (p%2Fss%3Aw0rd)"),
            "failed for <redacted> (<redacted>)"
        );
        let ipv6 = parse("postgresql://app@[::1]:5433/shop").unwrap();
        assert_eq!(ipv6.endpoint(), "[::1]:5433");
    }

    #[test]
    fn invalid_urls_are_explained_without_their_content() {
        let cases = [
            (
                "not a url hunter2",
                UrlError::Malformed(url::ParseError::RelativeUrlWithoutBase),
            ),
            ("mysql://app:hunter2@db/shop", UrlError::Scheme),
            (
                "postgresql://app:hunter2@db:notaport/shop",
                UrlError::Malformed(url::ParseError::InvalidPort),
            ),
            (
                "postgresql://app:hunter2@db/shop?sslmode=hunter2",
                UrlError::Parameter {
                    name: "sslmode",
                    expected: SslMode::ACCEPTED,
                },
            ),
            ("postgresql://:hunter2@db/shop", UrlError::NoUser),
            (
                "postgresql:///shop?user=app&password=hunter2",
                UrlError::NoHost,
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error, expected, "{text}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert_eq!(
            DatabaseUrl::parse(&[0xff, 0xfe]).unwrap_err(),
            UrlError::NotUtf8
        );
    }

    #[test]
    fn connect_options_carry_the_url() {
        let options =
            parse("postgresql://app:pw@db.example.com:6432/shop?sslmode=verify-full").unwrap();
        let options = options.connect_options();
        assert_eq!(options.get_host(), "db.example.com");
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("shop"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(options.get_application_name(), Some(APPLICATION_NAME));
    }
}
