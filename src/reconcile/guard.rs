//! The rollback guard: what the target migration revision needs of the
//! database, decided from the schema each applied revision left
//! (`status.migration.history`) and the schema the database holds now.
//! Pure: the pass reads the database's schema revision when
//! [`needs_current`] says the decision depends on it.
//!
//! A revision is *behind* when the schema it left comes before the
//! database's in the history (or the database holds a schema no revision of
//! the stack left): moving the backend back to it would run code older than
//! the schema. What happens then is `spec.migrations.rollback`'s to say.

use sha2::{Digest, Sha256};

use crate::api::crd::{MIGRATION_HASH_LENGTH, RevisionRecord, RollbackPolicy};
use crate::api::stack::hex;

/// The most revisions `status.migration.history` remembers.
pub const MAX_HISTORY: usize = 10;

/// What the target revision needs before the backend runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// It is the applied revision: nothing.
    Applied,
    /// Its migration Job runs: a revision never applied, or one whose
    /// schema is ahead of the database's (`again`: after a downgrade).
    Migrate { again: bool },
    /// The database already holds the schema it left: nothing runs.
    Current { schema: String },
    /// Behind, under `rollback: Block`: the backend stays.
    Blocked { target: String, current: String },
    /// Behind, under `rollback: Downgrade`: `from`'s image takes the
    /// schema back to `target`. `None` when no applied revision is known to
    /// have left the current schema.
    Downgrade {
        from: Option<RevisionRecord>,
        target: String,
        current: String,
    },
    /// Behind, under `rollback: AllowSchemaAhead`: the backend moves back,
    /// the schema stays.
    Ahead { target: String, current: String },
    /// The decision needs the database's schema revision, which could not
    /// be read.
    Unknown { because: String },
}

impl Step {
    /// Whether the step runs a Job that changes the schema: what approval
    /// and backups gate.
    pub fn migrates(&self) -> bool {
        matches!(
            self,
            Step::Migrate { .. } | Step::Downgrade { from: Some(_), .. }
        )
    }

    /// The suffix of the names of the Jobs (and snapshot) of this step
    /// towards `target_revision`: the revision itself for its migration, a
    /// hash of both ends for a downgrade.
    pub fn id(&self, target_revision: &str) -> String {
        match self {
            Step::Downgrade {
                from: Some(from),
                target,
                ..
            } => downgrade_id(&from.revision, target_revision, target),
            _ => target_revision.to_string(),
        }
    }
}

/// The id of a downgrade from revision `from` to revision `to`, whose
/// schema is `schema`.
pub fn downgrade_id(from: &str, to: &str, schema: &str) -> String {
    let mut hasher = Sha256::new();
    for part in ["downgrade", from, to, schema] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())[..MIGRATION_HASH_LENGTH].to_string()
}

/// The schema the target left, looked up by its revision, else (only to
/// tell a rollback) by its migration image.
struct Known<'a> {
    by_revision: Option<&'a str>,
    by_image: Option<&'a str>,
}

fn known<'a>(target: &str, image: &str, history: &'a [RevisionRecord]) -> Known<'a> {
    let schema_where = |matches: &dyn Fn(&RevisionRecord) -> bool| {
        history
            .iter()
            .rev()
            .find(|record| matches(record))
            .and_then(|record| record.schema_revision.as_deref())
    };
    Known {
        by_revision: schema_where(&|record| record.revision == target),
        by_image: schema_where(&|record| record.image == image),
    }
}

/// Whether deciding for `target` (migrating with `image`) needs the
/// database's current schema revision.
pub fn needs_current(
    target: &str,
    image: &str,
    applied: Option<&str>,
    history: &[RevisionRecord],
) -> bool {
    let known = known(target, image, history);
    applied != Some(target) && (known.by_revision.is_some() || known.by_image.is_some())
}

/// Where a revision's schema stands against the database's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Equal,
    /// The revision's schema came after the database's (the database was
    /// taken back since).
    Ahead,
    /// It came before, or the database holds a schema no revision left.
    Behind,
}

/// Where `schema` stands against `current`, by the order revisions first
/// left them in `history`.
pub fn direction(history: &[RevisionRecord], schema: &str, current: &str) -> Direction {
    if schema == current {
        return Direction::Equal;
    }
    let first = |wanted: &str| {
        history
            .iter()
            .position(|record| record.schema_revision.as_deref() == Some(wanted))
    };
    match (first(schema), first(current)) {
        (Some(revision), Some(database)) if revision > database => Direction::Ahead,
        _ => Direction::Behind,
    }
}

/// What the target revision needs. `current` is the database's schema
/// revision when [`needs_current`] asked for it (and it could be read),
/// `unknown_because` why it is not known otherwise.
pub fn decide(
    target: &str,
    image: &str,
    applied: Option<&str>,
    history: &[RevisionRecord],
    current: Option<&str>,
    unknown_because: &str,
    policy: RollbackPolicy,
) -> Step {
    if applied == Some(target) {
        return Step::Applied;
    }
    let known = known(target, image, history);
    let Some(recorded) = known.by_revision.or(known.by_image) else {
        return Step::Migrate { again: false };
    };
    let Some(current) = current else {
        return Step::Unknown {
            because: unknown_because.to_string(),
        };
    };
    let behind = || {
        let (target, current) = (recorded.to_string(), current.to_string());
        match policy {
            RollbackPolicy::Block => Step::Blocked { target, current },
            RollbackPolicy::AllowSchemaAhead => Step::Ahead { target, current },
            RollbackPolicy::Downgrade => Step::Downgrade {
                from: downgrade_from(history, &current, applied),
                target,
                current,
            },
        }
    };
    // A schema no revision of the stack left (migrated by hand, or read by
    // another revisionQuery) tells nothing of a revision the guard knows
    // only by its image: that one migrates as any new revision does.
    let current_known = history
        .iter()
        .any(|record| record.schema_revision.as_deref() == Some(current));
    match (
        known.by_revision.is_some(),
        direction(history, recorded, current),
    ) {
        (true, Direction::Equal) => Step::Current {
            schema: current.to_string(),
        },
        (true, Direction::Ahead) => Step::Migrate { again: true },
        (false, Direction::Behind) if !current_known => Step::Migrate { again: false },
        (_, Direction::Behind) => behind(),
        // Another revision of the same image left this schema: run the
        // target's own migration, as any new revision does.
        (false, Direction::Equal | Direction::Ahead) => Step::Migrate { again: false },
    }
}

/// The revision whose image knows the current schema: the newest that left
/// it, else the applied one.
fn downgrade_from(
    history: &[RevisionRecord],
    current: &str,
    applied: Option<&str>,
) -> Option<RevisionRecord> {
    history
        .iter()
        .rev()
        .find(|record| record.schema_revision.as_deref() == Some(current))
        .or_else(|| {
            history
                .iter()
                .rev()
                .find(|record| Some(record.revision.as_str()) == applied)
        })
        .cloned()
}

/// `history` with `revision` recorded as leaving `schema` (run with
/// `image`): updated in place when known, else appended, the oldest
/// dropped beyond [`MAX_HISTORY`].
pub fn record(
    history: &[RevisionRecord],
    revision: &str,
    schema: Option<&str>,
    image: &str,
) -> Vec<RevisionRecord> {
    let mut history = history.to_vec();
    let entry = RevisionRecord {
        revision: revision.to_string(),
        schema_revision: schema.map(str::to_string),
        image: image.to_string(),
    };
    match history.iter_mut().find(|known| known.revision == revision) {
        Some(known) => *known = entry,
        None => history.push(entry),
    }
    let excess = history.len().saturating_sub(MAX_HISTORY);
    history.drain(..excess);
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: &str, schema: &str, image: &str) -> RevisionRecord {
        RevisionRecord {
            revision: revision.into(),
            schema_revision: Some(schema.into()),
            image: image.into(),
        }
    }

    /// r1 (:1) left 0001, r2 (:2) left 0002, r3 (:2 with other env) 0002.
    fn history() -> Vec<RevisionRecord> {
        vec![
            entry("r1", "0001", "app:1"),
            entry("r2", "0002", "app:2"),
            entry("r3", "0002", "app:2"),
        ]
    }

    fn step(
        target: &str,
        image: &str,
        applied: &str,
        current: &str,
        policy: RollbackPolicy,
    ) -> Step {
        let history = history();
        let current = (!current.is_empty()).then_some(current);
        decide(
            target,
            image,
            Some(applied),
            &history,
            current,
            "the database does not answer",
            policy,
        )
    }

    #[test]
    fn the_guard_decides_every_forward_backward_and_equal_case() {
        use RollbackPolicy::{AllowSchemaAhead, Block, Downgrade};
        let blocked = Step::Blocked {
            target: "0001".into(),
            current: "0002".into(),
        };
        let ahead = Step::Ahead {
            target: "0001".into(),
            current: "0002".into(),
        };
        let down_from_r3 = Step::Downgrade {
            from: Some(entry("r3", "0002", "app:2")),
            target: "0001".into(),
            current: "0002".into(),
        };
        let current = |schema: &str| Step::Current {
            schema: schema.into(),
        };
        let first = Step::Migrate { again: false };
        let again = Step::Migrate { again: true };
        // (case, target, image, applied, database's schema) -> step under
        // Block, Downgrade, AllowSchemaAhead.
        type Case<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, [Step; 3]);
        #[rustfmt::skip]
        let table: Vec<Case> = vec![
            ("the applied revision", "r2", "app:2", "r2", "0002",
                [Step::Applied, Step::Applied, Step::Applied]),
            ("forward: a revision never applied", "r4", "app:3", "r2", "0002",
                [first.clone(), first.clone(), first.clone()]),
            ("forward: a new revision of the applied image", "r4", "app:2", "r2", "0002",
                [first.clone(), first.clone(), first.clone()]),
            ("equal: back to a revision that left the current schema", "r2", "app:2", "r3", "0002",
                [current("0002"), current("0002"), current("0002")]),
            ("backward: back to r1 after r2", "r1", "app:1", "r3", "0002",
                [blocked.clone(), down_from_r3.clone(), ahead.clone()]),
            ("backward: a new revision of an image that left an older schema", "r5", "app:1", "r3", "0002",
                [blocked.clone(), down_from_r3.clone(), ahead.clone()]),
            ("forward again: r2 after a downgrade to 0001", "r2", "app:2", "r1", "0001",
                [again.clone(), again.clone(), again.clone()]),
            ("equal: r1 after a downgrade to 0001", "r1", "app:1", "r2", "0001",
                [current("0001"), current("0001"), current("0001")]),
            ("equal: back to r2 after r1 kept the schema ahead", "r2", "app:2", "r1", "0002",
                [current("0002"), current("0002"), current("0002")]),
            ("forward: a new revision of an image, on a schema no revision left", "r6", "app:1", "r3", "0009",
                [first.clone(), first.clone(), first.clone()]),
        ];
        for (case, target, image, applied, database, expected) in table {
            for (policy, expected) in [Block, Downgrade, AllowSchemaAhead]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(
                    step(target, image, applied, database, policy),
                    expected,
                    "{case} under {policy:?}"
                );
            }
        }
    }

    #[test]
    fn a_schema_no_revision_left_counts_as_ahead_of_every_record() {
        // Someone migrated the database by hand to 0009.
        assert_eq!(
            step("r1", "app:1", "r2", "0009", RollbackPolicy::Block),
            Step::Blocked {
                target: "0001".into(),
                current: "0009".into()
            }
        );
        assert_eq!(
            step("r1", "app:1", "r2", "0009", RollbackPolicy::Downgrade),
            Step::Downgrade {
                from: Some(entry("r2", "0002", "app:2")),
                target: "0001".into(),
                current: "0009".into()
            },
            "the applied revision's image is the newest known"
        );
    }

    #[test]
    fn an_unreadable_schema_holds_only_decisions_that_need_it() {
        assert_eq!(
            step("r1", "app:1", "r2", "", RollbackPolicy::Downgrade),
            Step::Unknown {
                because: "the database does not answer".into()
            }
        );
        assert_eq!(
            step("r4", "app:3", "r2", "", RollbackPolicy::Block),
            Step::Migrate { again: false },
            "a revision never seen migrates as always"
        );
        assert!(!needs_current("r4", "app:3", Some("r2"), &history()));
        assert!(needs_current("r1", "app:1", Some("r2"), &history()));
        assert!(!needs_current("r2", "app:2", Some("r2"), &history()));
        assert!(
            !needs_current(
                "r1",
                "app:1",
                None,
                &[RevisionRecord {
                    schema_revision: None,
                    ..entry("r1", "", "app:1")
                }]
            ),
            "a record without a schema says nothing"
        );
    }

    #[test]
    fn only_migrations_and_downgrades_are_gated_and_each_has_its_id() {
        let down = Step::Downgrade {
            from: Some(entry("r2", "0002", "app:2")),
            target: "0001".into(),
            current: "0002".into(),
        };
        assert!(Step::Migrate { again: false }.migrates());
        assert!(down.migrates());
        for quiet in [
            Step::Applied,
            Step::Current { schema: "1".into() },
            Step::Blocked {
                target: "1".into(),
                current: "2".into(),
            },
            Step::Ahead {
                target: "1".into(),
                current: "2".into(),
            },
            Step::Downgrade {
                from: None,
                target: "1".into(),
                current: "2".into(),
            },
        ] {
            assert!(!quiet.migrates(), "{quiet:?}");
        }
        assert_eq!(Step::Migrate { again: false }.id("abc"), "abc");
        let id = down.id("r1");
        assert_eq!(id.len(), MIGRATION_HASH_LENGTH);
        assert_ne!(id, downgrade_id("r3", "r1", "0001"));
    }

    #[test]
    fn the_history_is_updated_in_place_and_bounded() {
        let updated = record(&history(), "r2", Some("0003c"), "app:2c");
        assert_eq!(updated.len(), 3);
        assert_eq!(updated[1], entry("r2", "0003c", "app:2c"));
        let mut long = Vec::new();
        for index in 0..MAX_HISTORY + 3 {
            long = record(&long, &format!("r{index}"), Some("s"), "i");
        }
        assert_eq!(long.len(), MAX_HISTORY);
        assert_eq!(long[0].revision, "r3", "the oldest go first");
    }
}
