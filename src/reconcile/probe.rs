//! Probe: what the stack's database says when asked — `SELECT 1` before
//! anything migrates it, and the schema revision a migration left — where
//! the operator reaches it (`--database-checks`). The only step that talks
//! to something other than the API server.

use super::context::Context;
use super::status::Report;
use crate::api::conditions::Check;
use crate::api::crd::AppStack;
use crate::api::stack::{Database, ValidatedStack};
use crate::database::{self, Failure, Located};

/// `DatabaseReady`: for the managed database, once its StatefulSet is ready
/// (`cached`), and for an external one, whether it answers. A stack Ready
/// for this generation with nothing to migrate is not connected to again.
pub async fn database(
    context: &Context,
    stack: &AppStack,
    validated: &ValidatedStack,
    located: &Result<Located, Failure>,
    cached: Check,
    migration_pending: bool,
) -> Check {
    if let Database::Managed(_) = validated.database
        && !cached.ok
    {
        return cached;
    }
    let settled = database::settled(
        stack.status.as_ref(),
        validated.generation,
        migration_pending,
    );
    context.databases.readiness(located, settled).await
}

/// A stage of the migrations once done, with the schema revision the
/// database holds: kept from the status when known, read from the database
/// otherwise (`true` when read now).
pub async fn schema(
    context: &Context,
    validated: &ValidatedStack,
    located: &Result<Located, Failure>,
    report: Report,
) -> (Report, bool) {
    let Report {
        check,
        migration: Some(mut status),
        holds,
        recheck,
    } = report
    else {
        return (report, false);
    };
    let (true, Ok(located)) = (check.ok, located) else {
        return (
            Report {
                check,
                migration: Some(status),
                holds,
                recheck,
            },
            false,
        );
    };
    let (note, read) = match &status.schema_revision {
        Some(known) => (database::schema_note(known), false),
        None => {
            let (read, note) = context
                .databases
                .schema_revision(located, revision_query(validated))
                .await;
            status.schema_revision = read;
            (note, true)
        }
    };
    (
        Report {
            check: Check {
                message: format!("{}; {note}", check.message),
                ..check
            },
            migration: Some(status),
            holds,
            recheck,
        },
        read,
    )
}

/// The database's schema revision now, for the rollback guard; why it is
/// unknown otherwise.
pub async fn current_schema(
    context: &Context,
    validated: &ValidatedStack,
    located: &Result<Located, Failure>,
) -> Result<String, String> {
    let located = located
        .as_ref()
        .map_err(|failure| failure.message.clone())?;
    match context
        .databases
        .schema_revision(located, revision_query(validated))
        .await
    {
        (Some(revision), _) => Ok(revision),
        (None, note) => Err(note),
    }
}

fn revision_query(validated: &ValidatedStack) -> Option<&str> {
    validated
        .migration
        .as_ref()
        .and_then(|migration| migration.spec.revision_query.as_deref())
}
