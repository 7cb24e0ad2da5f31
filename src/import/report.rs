//! What an import tells the user on standard error: warnings, notes on
//! where things went, and the list of what was not carried over.

use std::fmt;

/// What stands in for a secret value in a message.
pub const REDACTED: &str = "<redacted>";

/// Messages gathered while importing, printed once at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    warnings: Vec<String>,
    notes: Vec<String>,
    skipped: Vec<Skipped>,
}

/// Something from the compose project that the AppStack does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The service it belongs to (or `project` for top-level keys).
    pub service: String,
    /// What it is: `service`, `ports "8000:8000"`, `volume ./src:/app`...
    pub what: String,
    /// One line: why, and what to do instead.
    pub reason: String,
}

impl Report {
    /// Something the user should act on or at least know before applying.
    pub fn warn(&mut self, message: impl Into<String>) {
        push_once(&mut self.warnings, message.into());
    }

    /// Where something went, or a default that was chosen.
    pub fn note(&mut self, message: impl Into<String>) {
        push_once(&mut self.notes, message.into());
    }

    /// Something that has no place in an AppStack.
    pub fn skip(
        &mut self,
        service: impl Into<String>,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) {
        let skipped = Skipped {
            service: service.into(),
            what: what.into(),
            reason: reason.into(),
        };
        if !self.skipped.contains(&skipped) {
            self.skipped.push(skipped);
        }
    }

    /// Replaces every occurrence of the `secrets` in the messages, so no
    /// secret value reaches the terminal whatever a message quotes.
    pub fn redact(&mut self, secrets: &[&str]) {
        let scrub = |text: &mut String| {
            for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
                if text.contains(secret) {
                    *text = text.replace(secret, REDACTED);
                }
            }
        };
        self.warnings.iter_mut().for_each(scrub);
        self.notes.iter_mut().for_each(scrub);
        for skipped in &mut self.skipped {
            scrub(&mut skipped.what);
            scrub(&mut skipped.reason);
        }
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }
}

fn push_once(list: &mut Vec<String>, message: String) {
    if !list.contains(&message) {
        list.push(message);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for warning in &self.warnings {
            writeln!(formatter, "warning: {warning}")?;
        }
        for note in &self.notes {
            writeln!(formatter, "note: {note}")?;
        }
        if !self.skipped.is_empty() {
            writeln!(formatter, "not carried over:")?;
            for Skipped {
                service,
                what,
                reason,
            } in &self.skipped
            {
                writeln!(formatter, "  {service}: {what}: {reason}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_message() {
        let mut report = Report::default();
        report.warn("a hunter22 b");
        report.note("hunter22");
        report.skip(
            "db",
            "healthcheck \"redis-cli -a hunter22 ping\"",
            "hunter22",
        );
        report.redact(&["hunter22"]);
        assert!(!report.to_string().contains("hunter22"), "{report}");
        assert_eq!(report.warnings()[0], "a <redacted> b");
    }

    #[test]
    fn prints_warnings_then_notes_then_what_was_left_out_once_each() {
        let mut report = Report::default();
        report.note("storage is 10Gi");
        report.warn("variable TAG is not set");
        report.warn("variable TAG is not set");
        report.skip("redis", "service", "a cache");
        report.skip("redis", "service", "a cache");
        assert_eq!(
            report.to_string(),
            "warning: variable TAG is not set\nnote: storage is 10Gi\n\
             not carried over:\n  redis: service: a cache\n"
        );
    }
}
