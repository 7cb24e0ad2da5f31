//! What an import tells the user on standard error, grouped per compose
//! service: one line per decision (which part a service became, where its
//! variables went), the warnings, and what a person must still do. The
//! details (every setting not carried over and why, every note) are
//! printed with `--verbose`.

use std::fmt;

use super::sensitive::whole_occurrences;

/// What stands in for a secret value in a message.
pub const REDACTED: &str = "<redacted>";

/// Messages gathered while importing, printed once at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    groups: Vec<Group>,
    warnings: Vec<String>,
    todo: Vec<String>,
    skipped: Vec<Skipped>,
}

/// The lines about one service (or `stack`, for the project as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    subject: String,
    /// The part the service became: `backend`, `database`, ...
    part: Option<String>,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    /// Printed with `--verbose` only.
    detail: bool,
}

/// Something from the compose project that the AppStack does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The service it belongs to (or `project` for top-level keys).
    pub service: String,
    /// What it is: `service`, `ports "8000:8000"`, `volume ./src:/app`...
    pub what: String,
    /// Why, and what to do instead: a short reason, then `:` and the rest.
    pub reason: String,
}

impl Skipped {
    /// The reason up to its first `:`, for the one-line summary.
    fn short_reason(&self) -> &str {
        self.reason
            .split_once(": ")
            .map_or(self.reason.as_str(), |(short, _)| short)
    }
}

impl Report {
    fn group(&mut self, subject: &str) -> &mut Group {
        let index = match self
            .groups
            .iter()
            .position(|group| group.subject == subject)
        {
            Some(index) => index,
            None => {
                self.groups.push(Group {
                    subject: subject.to_string(),
                    part: None,
                    lines: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    fn line(&mut self, subject: &str, text: String, detail: bool) {
        let group = self.group(subject);
        if !group.lines.iter().any(|line| line.text == text) {
            group.lines.push(Line { text, detail });
        }
    }

    /// Records that `service` became `part` of the AppStack.
    pub fn part(&mut self, service: &str, part: impl Into<String>) {
        self.group(service).part = Some(part.into());
    }

    /// One decision about `subject` (a service, or `stack`).
    pub fn decide(&mut self, subject: &str, message: impl Into<String>) {
        self.line(subject, message.into(), false);
    }

    /// A note about `subject` printed with `--verbose` only.
    pub fn detail(&mut self, subject: &str, message: impl Into<String>) {
        self.line(subject, message.into(), true);
    }

    /// Something the user should know before applying.
    pub fn warn(&mut self, message: impl Into<String>) {
        push_once(&mut self.warnings, message.into());
    }

    /// Something a person must still do before the stack runs as it ran
    /// under Compose.
    pub fn todo(&mut self, message: impl Into<String>) {
        push_once(&mut self.todo, message.into());
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

    /// Replaces the `secrets` in the messages wherever one stands whole
    /// (a word, a flag's value, a URL's password), so no secret value
    /// reaches the terminal whatever a message quotes; a longer word that
    /// merely begins like one (`hello_django.wsgi` for `hello_django`) is
    /// left as written.
    pub fn redact(&mut self, secrets: &[&str]) {
        let scrub = |text: &mut String| {
            for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
                for start in whole_occurrences(text, secret).into_iter().rev() {
                    text.replace_range(start..start + secret.len(), REDACTED);
                }
            }
        };
        for group in &mut self.groups {
            group
                .lines
                .iter_mut()
                .for_each(|line| scrub(&mut line.text));
        }
        self.warnings.iter_mut().for_each(scrub);
        self.todo.iter_mut().for_each(scrub);
        for skipped in &mut self.skipped {
            scrub(&mut skipped.what);
            scrub(&mut skipped.reason);
        }
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn todos(&self) -> &[String] {
        &self.todo
    }

    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The services that became a part, in the order they were named:
    /// (service, part).
    pub fn parts(&self) -> Vec<(&str, &str)> {
        self.groups
            .iter()
            .filter_map(|group| Some((group.subject.as_str(), group.part.as_deref()?)))
            .collect()
    }

    /// Every line about `subject`, details too.
    pub fn lines(&self, subject: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|group| group.subject == subject)
            .flat_map(|group| group.lines.iter().map(|line| line.text.as_str()))
            .collect()
    }

    /// The report as printed: `verbose` adds the details and every
    /// setting that was not carried over, each with its reason.
    pub fn render(&self, verbose: bool) -> String {
        let mut output = String::new();
        for group in &self.groups {
            let lines: Vec<&Line> = group
                .lines
                .iter()
                .filter(|line| verbose || !line.detail)
                .collect();
            let heading = match &group.part {
                Some(part) => format!("{} → {part}", group.subject),
                None if lines.is_empty() => continue,
                None => group.subject.clone(),
            };
            match lines.as_slice() {
                [only] if !verbose => output.push_str(&format!("{heading}: {}\n", only.text)),
                _ => {
                    output.push_str(&heading);
                    output.push('\n');
                    for line in lines {
                        output.push_str(&format!("  {}\n", line.text));
                    }
                }
            }
        }
        let left_out: Vec<&Skipped> = self
            .skipped
            .iter()
            .filter(|skipped| skipped.what.starts_with("service"))
            .collect();
        let settings: Vec<&Skipped> = self
            .skipped
            .iter()
            .filter(|skipped| !skipped.what.starts_with("service"))
            .collect();
        if verbose {
            if !self.skipped.is_empty() {
                output.push_str("not carried over:\n");
                for skipped in left_out.iter().chain(&settings) {
                    output.push_str(&format!(
                        "  {}: {}: {}\n",
                        skipped.service, skipped.what, skipped.reason
                    ));
                }
            }
        } else {
            if !left_out.is_empty() {
                let services: Vec<String> = left_out
                    .iter()
                    .map(|skipped| format!("{} ({})", skipped.service, skipped.short_reason()))
                    .collect();
                output.push_str(&format!("left out: {}\n", services.join(", ")));
            }
            if !settings.is_empty() {
                let mut kinds: Vec<&str> = Vec::new();
                for skipped in &settings {
                    let kind = skipped.what.split([' ', '"']).next().unwrap_or_default();
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                output.push_str(&format!(
                    "not carried: {} settings ({}); --verbose says why, one by one\n",
                    settings.len(),
                    kinds.join(", ")
                ));
            }
        }
        if !self.warnings.is_empty() {
            output.push_str("warnings:\n");
            for warning in &self.warnings {
                output.push_str(&format!("  {warning}\n"));
            }
        }
        if !self.todo.is_empty() {
            output.push_str("still to do:\n");
            for (number, todo) in self.todo.iter().enumerate() {
                output.push_str(&format!("  {}. {todo}\n", number + 1));
            }
        }
        output
    }
}

fn push_once(list: &mut Vec<String>, message: String) {
    if !list.contains(&message) {
        list.push(message);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.render(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_message() {
        let mut report = Report::default();
        report.warn("a hunter22 b");
        report.decide("api", "hunter22");
        report.todo("set hunter22");
        report.skip(
            "db",
            "healthcheck \"redis-cli -a hunter22 ping\"",
            "hunter22",
        );
        report.decide("api", "runs hunter22.wsgi:app as hunter22");
        report.redact(&["hunter22"]);
        assert!(!report.render(true).contains("hunter22 "), "{report}");
        assert_eq!(report.warnings()[0], "a <redacted> b");
        assert_eq!(
            report.lines("api"),
            ["<redacted>", "runs hunter22.wsgi:app as <redacted>"]
        );
    }

    #[test]
    fn prints_groups_then_what_was_left_out_then_warnings_and_what_to_do() {
        let mut report = Report::default();
        report.decide("stack", "shop, from --name");
        report.part("api", "backend");
        report.decide("api", "port 8000");
        report.detail("api", "healthcheck becomes the probes' path /health");
        report.part("db", "database");
        report.decide("db", "managed, postgres:16");
        report.decide("db", "managed, postgres:16");
        report.warn("variable TAG is not set");
        report.warn("variable TAG is not set");
        report.todo("push the image");
        report.skip("redis", "service", "a cache: run it separately");
        report.skip(
            "api",
            "ports \"8000:8000\"",
            "host ports are not published: ...",
        );
        report.skip(
            "api",
            "volume ./src:/app",
            "a bind mount: build it into the image",
        );
        assert_eq!(
            report.render(false),
            "stack: shop, from --name\n\
             api → backend: port 8000\n\
             db → database: managed, postgres:16\n\
             left out: redis (a cache)\n\
             not carried: 2 settings (ports, volume); --verbose says why, one by one\n\
             warnings:\n  variable TAG is not set\n\
             still to do:\n  1. push the image\n"
        );
        let verbose = report.render(true);
        assert!(
            verbose.contains(
                "api → backend\n  port 8000\n  healthcheck becomes the probes' path /health\n"
            ),
            "{verbose}"
        );
        assert!(
            verbose.contains("not carried over:\n  redis: service: a cache: run it separately\n"),
            "{verbose}"
        );
    }
}
