//! One report per stage, once its writes are sent: what the caches show of
//! its children ([`super::observe`]), completed where a stage says more
//! than the caches hold — generated values lost and made anew, the database
//! answering ([`super::probe`]), the schema revision a migration left.

use super::context::Context;
use super::guard::{self, Step};
use super::observe::{self, View};
use super::probe;
use super::status::Report;
use crate::api::crd::AppStack;
use crate::api::stack::ValidatedStack;
use crate::database::{Failure, Located};
use crate::stages::Stage;

/// What the stages of one pass report on.
pub struct Pass<'a> {
    pub context: &'a Context,
    pub stack: &'a AppStack,
    pub validated: &'a ValidatedStack,
    /// Where the database is, or why it cannot be used.
    pub located: &'a Result<Located, Failure>,
    /// The migration revision the spec asks for against the located
    /// database.
    pub target_revision: Option<&'a str>,
    /// Generated values this pass found lost and made anew.
    pub lost: &'a [String],
}

/// The report of `stage`; `view` holds the migration status as the stages
/// before it left it.
pub async fn report(pass: &Pass<'_>, stage: Stage, view: &View<'_>) -> Report {
    let previous = pass.stack.status.as_ref();
    let previous_migration = previous.and_then(|status| status.migration.as_ref());
    let observed = observe::check(stage, pass.validated, &pass.context.caches, view);
    match stage {
        Stage::Secrets => {
            observe::generated_lost(observed.check, pass.validated, pass.lost, previous).into()
        }
        Stage::Database => {
            let migration_pending = pass.target_revision.is_some()
                && pass.target_revision
                    != previous_migration
                        .and_then(|migration| migration.applied_revision.as_deref());
            probe::database(
                pass.context,
                pass.stack,
                pass.validated,
                pass.located,
                observed.check,
                migration_pending,
            )
            .await
            .into()
        }
        Stage::Migrations | Stage::PostDeploy => {
            let (mut report, read) =
                probe::schema(pass.context, pass.validated, pass.located, observed).await;
            // What the applied revision left, once read after its migration
            // (or its post-deploy step), is what the rollback guard goes by.
            if read
                && matches!(view.step, Some(Step::Migrate { .. } | Step::Applied))
                && let (Some(migration), Some(status), Some(target)) = (
                    &pass.validated.migration,
                    report.migration.as_mut(),
                    pass.target_revision,
                )
                && status.applied_revision.as_deref() == Some(target)
                && let Some(schema) = status.schema_revision.clone()
            {
                status.history =
                    guard::record(&status.history, target, Some(&schema), &migration.image);
            }
            report
        }
        Stage::Approval | Stage::Backup => observed,
        Stage::Backend | Stage::Frontend | Stage::Expose | Stage::Monitoring => observed,
    }
}
