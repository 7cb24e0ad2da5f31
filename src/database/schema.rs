//! The schema revision a migration left in the database: Alembic's
//! `alembic_version` by default, or what the user's
//! `spec.migrations.revisionQuery` returns (Django, Flyway, golang-migrate,
//! sqlx keep theirs elsewhere).
//!
//! The query runs on a connection of its own, in a read-only transaction
//! with a statement timeout (see [`super::probe::connect`]), wrapped so that
//! its first column is read as text whatever its type, and with a bounded
//! number of rows.

use sqlx::{Executor, Row};

use super::probe::{self, Failure, Limits};
use super::url::DatabaseUrl;

/// Alembic's revision table, read when the spec names no query.
pub const DEFAULT_REVISION_QUERY: &str = "SELECT version_num FROM alembic_version";
/// Rows read at most (Alembic keeps one per head; branches make several).
const MAX_ROWS: usize = 16;
/// Longest revision published; longer ones are cut with `...`.
const MAX_LENGTH: usize = 256;

/// What the revision query found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaRevision {
    /// The revision (several rows sorted and joined with `, `).
    Found(String),
    /// The query ran and returned no rows (or only NULLs).
    Empty,
    /// The table the query reads does not exist (yet): the server's words.
    NoTable(String),
    /// The query failed otherwise: the server's words.
    QueryFailed(String),
}

impl SchemaRevision {
    /// Why the revision is unknown, or `None` when it was found. `query`
    /// is the one that ran, so the default's table can be named.
    pub fn unknown_because(&self, query: &str) -> Option<String> {
        let default = query == DEFAULT_REVISION_QUERY;
        match self {
            Self::Found(_) => None,
            Self::Empty if default => Some("table alembic_version is empty".into()),
            Self::Empty => Some("spec.migrations.revisionQuery returned no rows".into()),
            Self::NoTable(_) if default => Some(
                "table alembic_version does not exist; set spec.migrations.revisionQuery if \
                 the migrations are not Alembic's"
                    .into(),
            ),
            Self::NoTable(server) | Self::QueryFailed(server) => {
                Some(format!("the revision query failed: {server}"))
            }
        }
    }
}

/// Reads the schema revision with `query` (see [`DEFAULT_REVISION_QUERY`]).
/// `Err` when the database cannot be reached at all.
pub async fn read(
    url: &DatabaseUrl,
    query: &str,
    limits: Limits,
) -> Result<SchemaRevision, Failure> {
    if query.contains(';') {
        // The CRD rejects this; a query from elsewhere must not smuggle a
        // second statement past the read-only wrapper either.
        return Ok(SchemaRevision::QueryFailed(
            "the query holds ';': one statement only".into(),
        ));
    }
    let mut connection = probe::connect(url, limits).await?;
    let wrapped = wrap(query);
    let answered = tokio::time::timeout(
        limits.statement,
        // Through `Executor`, as in [`probe::check`].
        Executor::fetch_all(&mut connection, sqlx::raw_sql(&wrapped)),
    )
    .await;
    probe::close(connection).await;
    let rows = match answered {
        Ok(Ok(rows)) => rows,
        Ok(Err(sqlx::Error::Database(error))) => {
            let server = url.redact(error.message());
            // undefined_table
            return Ok(if error.code().as_deref() == Some("42P01") {
                SchemaRevision::NoTable(server)
            } else {
                SchemaRevision::QueryFailed(server)
            });
        }
        Ok(Err(error)) => return Err(probe::classify(url, &error)),
        Err(_) => {
            return Ok(SchemaRevision::QueryFailed(format!(
                "no answer within {} s",
                limits.statement.as_secs_f64()
            )));
        }
    };
    let mut values: Vec<String> = rows
        .iter()
        .filter_map(|row| row.try_get::<Option<String>, _>(0).ok().flatten())
        .collect();
    values.sort();
    values.dedup();
    if values.is_empty() {
        return Ok(SchemaRevision::Empty);
    }
    Ok(SchemaRevision::Found(bounded(values.join(", "))))
}

/// The user's query as a subquery whose first column is cast to text, at
/// most [`MAX_ROWS`] rows. The newlines keep a trailing `--` comment from
/// swallowing the wrapper.
fn wrap(query: &str) -> String {
    format!("SELECT (q.r)::text FROM (\n{query}\n) AS q(r) LIMIT {MAX_ROWS}")
}

fn bounded(mut revision: String) -> String {
    if revision.len() > MAX_LENGTH {
        let mut cut = MAX_LENGTH - 3;
        while !revision.is_char_boundary(cut) {
            cut -= 1;
        }
        revision.truncate(cut);
        revision.push_str("...");
    }
    revision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_becomes_a_bounded_text_subquery() {
        assert_eq!(
            wrap("SELECT version FROM schema_migrations -- golang-migrate"),
            "SELECT (q.r)::text FROM (\nSELECT version FROM schema_migrations -- golang-migrate\n) AS q(r) LIMIT 16"
        );
    }

    #[test]
    fn long_revisions_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("abc".into()), "abc");
        let long = bounded("é".repeat(200));
        assert!(long.len() <= MAX_LENGTH && long.ends_with("..."));
    }

    #[test]
    fn unknown_revisions_say_why() {
        let default = DEFAULT_REVISION_QUERY;
        assert_eq!(
            SchemaRevision::Found("abc".into()).unknown_because(default),
            None
        );
        assert_eq!(
            SchemaRevision::Empty.unknown_because(default).unwrap(),
            "table alembic_version is empty"
        );
        assert!(
            SchemaRevision::NoTable("relation \"alembic_version\" does not exist".into())
                .unknown_because(default)
                .unwrap()
                .starts_with("table alembic_version does not exist")
        );
        assert_eq!(
            SchemaRevision::NoTable("relation \"flyway_schema_history\" does not exist".into())
                .unknown_because("SELECT version FROM flyway_schema_history")
                .unwrap(),
            "the revision query failed: relation \"flyway_schema_history\" does not exist"
        );
    }
}
