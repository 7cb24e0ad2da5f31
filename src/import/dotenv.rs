//! `.env` files as Docker Compose reads them: the env-file format of the
//! Compose Specification (`05-services.md`, "Env_file format") and Docker's
//! "Syntax for environment files" page, with compose-go's dotenv parser as
//! the reference for the corners those pages leave open (escapes inside
//! double quotes, multi-line values, `KEY: value`, inherited keys).

use std::collections::BTreeSet;

use indexmap::IndexMap;

use super::interpolate::{self, InterpolationError, Variables};

/// Variables in file order; a key set twice keeps its first position and
/// its last value.
pub type EnvMap = IndexMap<String, String>;

/// Why a `.env` file cannot be read. Compose refuses such a file too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("line {line}: {source}")]
    Interpolation {
        line: usize,
        source: InterpolationError,
    },
}

/// Parses `source` and adds its variables to `values`. Interpolation looks a
/// name up in `outside` first (the process environment wins, as in
/// Compose), then in `values` (earlier lines and earlier files). Returns the
/// names that were interpolated while unset.
pub fn parse_into(
    source: &str,
    values: &mut EnvMap,
    outside: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeSet<String>, DotenvError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut parser = Parser {
        source,
        position: 0,
    };
    let mut unset = BTreeSet::new();
    while let Some(statement) = parser.next_statement()? {
        let Statement { key, line, value } = statement;
        let known = values.clone();
        let lookup = |name: &str| outside(name).or_else(|| known.get(name).cloned());
        match value {
            RawValue::Inherited => {
                if let Some(value) = lookup(&key) {
                    values.insert(key, value);
                }
            }
            RawValue::Literal(value) => {
                values.insert(key, value);
            }
            RawValue::Interpolated(template) => {
                let mut variables = Variables::new(&lookup);
                let value = interpolate::substitute(&template, &mut variables)
                    .map_err(|source| DotenvError::Interpolation { line, source })?;
                unset.extend(variables.into_unset());
                values.insert(key, value);
            }
        }
    }
    Ok(unset)
}

/// Parses one file with no outside variables.
pub fn parse(source: &str) -> Result<EnvMap, DotenvError> {
    let mut values = EnvMap::new();
    parse_into(source, &mut values, &|_| None)?;
    Ok(values)
}

struct Statement {
    key: String,
    line: usize,
    value: RawValue,
}

enum RawValue {
    /// `KEY` alone: the value comes from the environment, if set there.
    Inherited,
    /// Single-quoted: used as written.
    Literal(String),
    /// Unquoted or double-quoted (escapes already expanded): interpolated.
    Interpolated(String),
}

struct Parser<'a> {
    source: &'a str,
    position: usize,
}

/// Blanks that separate tokens on one line (not the line break itself).
fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.source[self.position..]
    }

    fn line(&self) -> usize {
        self.line_at(self.position)
    }

    fn line_at(&self, position: usize) -> usize {
        1 + self.source[..position].matches('\n').count()
    }

    fn error(&self, message: impl Into<String>) -> DotenvError {
        DotenvError::Syntax {
            line: self.line(),
            message: message.into(),
        }
    }

    /// Skips blank lines and comment lines; `None` at the end.
    fn next_statement(&mut self) -> Result<Option<Statement>, DotenvError> {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.position += rest.len() - trimmed.len();
            if trimmed.is_empty() {
                return Ok(None);
            }
            if trimmed.starts_with('#') {
                self.position += trimmed.find('\n').unwrap_or(trimmed.len());
                continue;
            }
            return self.statement().map(Some);
        }
    }

    fn statement(&mut self) -> Result<Statement, DotenvError> {
        let line = self.line();
        if let Some(after) = self.rest().strip_prefix("export")
            && after.starts_with(char::is_whitespace)
        {
            let trimmed = after.trim_start_matches(is_blank);
            self.position += self.rest().len() - trimmed.len();
        }
        let rest = self.rest();
        let mut separator = None;
        for (index, c) in rest.char_indices() {
            match c {
                '=' | ':' | '\n' => {
                    separator = Some((index, c));
                    break;
                }
                c if is_blank(c) => {}
                '_' | '.' | '-' | '[' | ']' => {}
                c if c.is_alphanumeric() => {}
                other => {
                    // The name so far only: the rest of the line may be a secret.
                    let name = &rest[..index + other.len_utf8()];
                    return Err(self.error(format!(
                        "unexpected character {other:?} in variable name {name:?}"
                    )));
                }
            }
        }
        // A name alone on the last line inherits, like one alone on any line.
        let (key_end, value_start, inherited) = match separator {
            Some((index, c)) => (index, index + c.len_utf8(), c == '\n'),
            None => (rest.len(), rest.len(), true),
        };
        let key = rest[..key_end].trim_end().to_string();
        if key.contains(' ') {
            return Err(self.error("a variable name cannot contain a space"));
        }
        self.position += value_start;
        if inherited {
            return Ok(Statement {
                key,
                line,
                value: RawValue::Inherited,
            });
        }
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start_matches(is_blank).len();
        let value = self.value(&key)?;
        Ok(Statement { key, line, value })
    }

    fn value(&mut self, key: &str) -> Result<RawValue, DotenvError> {
        let rest = self.rest();
        let quote = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => quote,
            _ => {
                let end = rest.find('\n').unwrap_or(rest.len());
                let mut value = &rest[..end];
                // An inline comment needs a blank before its '#'.
                if let Some(comment) = value.find(" #") {
                    value = &value[..comment];
                }
                let value = value.trim_end().to_string();
                self.position += end;
                return Ok(RawValue::Interpolated(value));
            }
        };
        let start_line = self.line();
        let mut value = String::new();
        let mut escaped = false;
        for (index, c) in rest.char_indices().skip(1) {
            if c != quote {
                if !escaped && c == '\\' {
                    escaped = true;
                    continue;
                }
                if escaped {
                    escaped = false;
                    value.push('\\');
                }
                value.push(c);
                continue;
            }
            if escaped {
                // An escaped quote of the kind that opened the value.
                escaped = false;
                value.push(c);
                continue;
            }
            self.position += index + c.len_utf8();
            return Ok(if quote == '"' {
                RawValue::Interpolated(expand_escapes(&value))
            } else {
                RawValue::Literal(value)
            });
        }
        Err(DotenvError::Syntax {
            line: start_line,
            message: format!("unterminated quoted value of {key}: no closing {quote}"),
        })
    }
}

/// Expands the shell escapes double-quoted values support: `\a \b \f \n \r
/// \t \v \\ \"`, `\$` (a literal dollar sign, kept from interpolation as
/// `$$`) and XSI octal `\0NNN`. Any other backslash stays as written.
fn expand_escapes(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if c != '\\' {
            output.push(c);
            continue;
        }
        let Some(&(_, next)) = chars.peek() else {
            output.push(c);
            continue;
        };
        let simple = match next {
            'a' => Some("\u{7}"),
            'b' => Some("\u{8}"),
            'f' => Some("\u{c}"),
            'n' => Some("\n"),
            'r' => Some("\r"),
            't' => Some("\t"),
            'v' => Some("\u{b}"),
            '\\' => Some("\\"),
            '"' => Some("\""),
            '$' => Some("$$"),
            _ => None,
        };
        if let Some(replacement) = simple {
            chars.next();
            output.push_str(replacement);
            continue;
        }
        if next == '0' {
            let digits: String = text[index + 2..]
                .chars()
                .take_while(char::is_ascii_digit)
                .take(3)
                .collect();
            let octal = (digits.len() == 3)
                .then(|| u8::from_str_radix(&digits, 8).ok())
                .flatten();
            // `\0` and the digits it took go together, expanded or not.
            chars.next();
            for _ in 0..digits.len() {
                chars.next();
            }
            match octal {
                Some(byte) => output.push(char::from(byte)),
                None => {
                    output.push_str("\\0");
                    output.push_str(&digits);
                }
            }
            continue;
        }
        output.push(c);
    }
    output
}

#[cfg(test)]
mod tests {
    //! Expected results come from the env-file rules of the Compose
    //! Specification (`05-services.md`, "Env_file format", cited as "spec"),
    //! which Docker's "Syntax for environment files" page repeats, and where
    //! those are silent from compose-go's dotenv tests (cited as
    //! "compose-go"), the parser Compose itself uses.
    use super::*;

    fn one(source: &str, key: &str) -> String {
        let values = parse(source).unwrap_or_else(|error| panic!("{source:?}: {error}"));
        values
            .get(key)
            .unwrap_or_else(|| panic!("{source:?} sets no {key}: {values:?}"))
            .clone()
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        // spec: "Lines beginning with # are processed as comments and
        // ignored." "Blank lines are ignored."
        let values = parse("# a comment\n\n   \n\t # indented comment\r\nA=1\n\n").unwrap();
        assert_eq!(values, EnvMap::from([("A".into(), "1".into())]));
    }

    #[test]
    fn values_may_be_quoted() {
        // spec: "VAR=VAL -> VAL", "VAR=\"VAL\" -> VAL", "VAR='VAL' -> VAL".
        assert_eq!(one("VAR=VAL", "VAR"), "VAL");
        assert_eq!(one("VAR=\"VAL\"", "VAR"), "VAL");
        assert_eq!(one("VAR='VAL'", "VAR"), "VAL");
    }

    #[test]
    fn inline_comments_on_unquoted_values_need_a_space() {
        // spec: "VAR=VAL # comment -> VAL", "VAR=VAL# not a comment ->
        // VAL# not a comment".
        assert_eq!(one("VAR=VAL # comment", "VAR"), "VAL");
        assert_eq!(one("VAR=VAL# not a comment", "VAR"), "VAL# not a comment");
        // compose-go: "FOO=123#not-an-inline-comment", trailing blanks cut.
        assert_eq!(
            one("FOO=123#not-an-inline-comment", "FOO"),
            "123#not-an-inline-comment"
        );
        assert_eq!(one("FOO=bar   ", "FOO"), "bar");
    }

    #[test]
    fn inline_comments_on_quoted_values_follow_the_closing_quote() {
        // spec: "VAR=\"VAL # not a comment\" -> VAL # not a comment",
        // "VAR=\"VAL\" # comment -> VAL".
        assert_eq!(
            one("VAR=\"VAL # not a comment\"", "VAR"),
            "VAL # not a comment"
        );
        assert_eq!(one("VAR=\"VAL\" # comment", "VAR"), "VAL");
        // compose-go: `FOO='bar#baz' # comment` and `FOO="bar#baz"#`.
        assert_eq!(one("FOO='bar#baz' # comment", "FOO"), "bar#baz");
        assert_eq!(one("FOO=\"bar#baz\"#", "FOO"), "bar#baz");
    }

    #[test]
    fn single_quoted_values_are_literal() {
        // spec: "VAR='$OTHER' -> $OTHER", "VAR='${OTHER}' -> ${OTHER}",
        // "VAR='some\tvalue' -> some\tvalue".
        let values = parse("OTHER=x\nA='$OTHER'\nB='${OTHER}'\nC='some\\tvalue'").unwrap();
        assert_eq!(values["A"], "$OTHER");
        assert_eq!(values["B"], "${OTHER}");
        assert_eq!(values["C"], "some\\tvalue");
    }

    #[test]
    fn quotes_are_escaped_with_a_backslash() {
        // spec: "VAR='Let\'s go!' -> Let's go!",
        // "VAR=\"{\\\"hello\\\": \\\"json\\\"}\" -> {\"hello\": \"json\"}".
        assert_eq!(one(r"VAR='Let\'s go!'", "VAR"), "Let's go!");
        assert_eq!(
            one(r#"VAR="{\"hello\": \"json\"}""#, "VAR"),
            r#"{"hello": "json"}"#
        );
    }

    #[test]
    fn shell_escapes_are_expanded_in_double_quotes_only() {
        // spec: "Common shell escape sequences including \n, \r, \t, and \\
        // are supported in double-quoted values": "VAR=\"some\tvalue\" ->
        // some<tab>value", "VAR=some\tvalue -> some\tvalue".
        assert_eq!(one(r#"VAR="some\tvalue""#, "VAR"), "some\tvalue");
        assert_eq!(one(r"VAR=some\tvalue", "VAR"), r"some\tvalue");
        assert_eq!(one(r#"VAR="a\nb\rc\\d""#, "VAR"), "a\nb\rc\\d");
        // compose-go: the XSI echo escapes, octal `\0NNN`, and nothing else.
        assert_eq!(
            one(r#"KEY="Z\aZ\bZ\fZ\nZ\rZ\tZ\vZ\\Z\0123Z""#, "KEY"),
            "Z\u{7}Z\u{8}Z\u{c}Z\nZ\rZ\tZ\u{b}Z\\ZSZ"
        );
        assert_eq!(one(r#"KEY="\x07""#, "KEY"), r"\x07");
        assert_eq!(one(r#"KEY="\u12e4""#, "KEY"), r"\u12e4");
        assert_eq!(one(r#"FOO="bar\nbaz\\""#, "FOO"), "bar\nbaz\\");
    }

    #[test]
    fn double_quoted_values_span_lines() {
        // compose-go: a quoted value runs to its closing quote, line breaks
        // included (fixtures/quoted.env, OPTION_J).
        let source = "OPTION_J = 'first line\nsecond line\nthird line\nand so on'\nNEXT=1";
        let values = parse(source).unwrap();
        assert_eq!(
            values["OPTION_J"],
            "first line\nsecond line\nthird line\nand so on"
        );
        assert_eq!(values["NEXT"], "1");
        let key = "KEY=\"-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n\"";
        assert_eq!(
            one(key, "KEY"),
            "-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n"
        );
    }

    #[test]
    fn interpolation_applies_to_unquoted_and_double_quoted_values() {
        // spec: "Unquoted and double-quoted (\") values have Interpolation
        // applied."
        let values =
            parse("FOO=test\nA=$FOO\nB=\"quote ${FOO}\"\nC='quote $FOO'\nD=${FOO}_${FOO}").unwrap();
        assert_eq!(values["A"], "test");
        assert_eq!(values["B"], "quote test");
        assert_eq!(values["C"], "quote $FOO");
        assert_eq!(values["D"], "test_test");
    }

    #[test]
    fn escaped_dollars_are_not_interpolated() {
        // compose-go: `FOO="foo\$BAR"` and `FOO=$$BAR` both keep `$BAR`.
        assert_eq!(one(r#"FOO="foo\$BAR""#, "FOO"), "foo$BAR");
        assert_eq!(one(r#"FOO="foo\${BAR}""#, "FOO"), "foo${BAR}");
        assert_eq!(one("FOO=$$BAR", "FOO"), "$BAR");
    }

    #[test]
    fn the_process_environment_wins_during_interpolation() {
        // compose-go (TestSubstitutionsWithEnvFilePrecedence): OPTION_A=1 in
        // the file and 5 in the environment: the file keeps 1, and
        // ${OPTION_A} elsewhere in the file reads 5.
        let mut values = EnvMap::new();
        let outside = |name: &str| (name == "OPTION_A").then(|| "5".to_string());
        parse_into("OPTION_A=1\nOPTION_B=${OPTION_A}", &mut values, &outside).unwrap();
        assert_eq!(values["OPTION_A"], "1");
        assert_eq!(values["OPTION_B"], "5");
    }

    #[test]
    fn unset_variables_are_empty_and_reported() {
        // spec (interpolation): an unresolved variable is replaced by an
        // empty string with a warning.
        let mut values = EnvMap::new();
        let unset = parse_into("A=${NOPE}\nB=${NOPE:-fallback}", &mut values, &|_| None).unwrap();
        assert_eq!(values["A"], "");
        assert_eq!(values["B"], "fallback");
        assert_eq!(unset, BTreeSet::from(["NOPE".to_string()]));
    }

    #[test]
    fn required_variables_fail_with_their_line() {
        let error = parse("A=1\nB=${SECRET:?set SECRET first}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 2: required variable SECRET is missing a value: set SECRET first"
        );
    }

    #[test]
    fn export_prefixes_are_dropped() {
        // compose-go: "export OPTION_A=2", "export OPTION_B='\n'", but
        // "exportFOO=2" is a variable of that name.
        assert_eq!(one("export OPTION_A=2", "OPTION_A"), "2");
        assert_eq!(one("  export\tOPTION_A=2", "OPTION_A"), "2");
        assert_eq!(one("export OPTION_B='\\n'", "OPTION_B"), "\\n");
        assert_eq!(one("exportFOO=2", "exportFOO"), "2");
        assert_eq!(one("export OPTION_A=\"export A\"", "OPTION_A"), "export A");
    }

    #[test]
    fn empty_values_are_empty_strings() {
        // spec: "VAL may be omitted, in such cases the variable value is an
        // empty string."
        let values = parse("A=\nB=''\nC=\"\"\nD=   ").unwrap();
        for key in ["A", "B", "C", "D"] {
            assert_eq!(values[key], "", "{key}");
        }
    }

    #[test]
    fn a_name_alone_is_taken_from_the_environment() {
        // spec: "=VAL may be omitted, in such cases the variable is unset"
        // (compose-go fills it from the environment when set there).
        let mut values = EnvMap::new();
        let outside = |name: &str| (name == "FROM_SHELL").then(|| "shell".to_string());
        parse_into("FROM_SHELL\nNOT_SET\nAFTER=1", &mut values, &outside).unwrap();
        assert_eq!(values.get("FROM_SHELL").map(String::as_str), Some("shell"));
        assert!(!values.contains_key("NOT_SET"));
        assert_eq!(values["AFTER"], "1");
    }

    #[test]
    fn spaces_around_the_separator_and_yaml_style_colons() {
        // compose-go: "FOO =bar", "FOO= bar", "OPTION_A: 1",
        // "OPTION_A: Foo=bar", "OPTION_A=1:B".
        assert_eq!(one("FOO =bar", "FOO"), "bar");
        assert_eq!(one("FOO= bar", "FOO"), "bar");
        assert_eq!(one("OPTION_A: 1", "OPTION_A"), "1");
        assert_eq!(one("OPTION_A: Foo=bar", "OPTION_A"), "Foo=bar");
        assert_eq!(one("OPTION_A=1:B", "OPTION_A"), "1:B");
        assert_eq!(one("FOO=foobar=", "FOO"), "foobar=");
        assert_eq!(
            one("URL=postgres://u:p@h:5432/db?sslmode=disable", "URL"),
            "postgres://u:p@h:5432/db?sslmode=disable"
        );
    }

    #[test]
    fn a_later_assignment_wins_in_place() {
        let values = parse("A=1\nB=2\nA=3").unwrap();
        assert_eq!(
            values.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_string(), "3".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn malformed_files_are_errors_with_a_line() {
        // compose-go: an unterminated quote, a space in a name and a
        // character no name may hold are errors.
        for source in [
            "KEY=\"",
            "KEY=\"value",
            "KEY=\"value\\\"",
            "KEY='value",
            "KEY='value\\'",
        ] {
            let error = parse(source).unwrap_err().to_string();
            assert!(
                error.starts_with("line 1: unterminated quoted value of KEY: no closing"),
                "{source}: {error}"
            );
            assert!(
                !error.contains("value\\"),
                "the value is not quoted back: {error}"
            );
        }
        assert_eq!(
            parse("# c\nfoo=\"\n  a\n\"\nINVALID LINE\nzot=qix").unwrap_err(),
            DotenvError::Syntax {
                line: 5,
                message: "a variable name cannot contain a space".into()
            }
        );
        assert_eq!(
            parse("lol$wut=s3cret").unwrap_err().to_string(),
            "line 1: unexpected character '$' in variable name \"lol$\""
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        // compose-go: fixtures/utf8-bom.env.
        assert_eq!(one("\u{feff}OPTION_A=1", "OPTION_A"), "1");
    }

    #[test]
    fn windows_line_endings_are_read() {
        let values = parse("A=1\r\nB=\"two\"\r\n").unwrap();
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "two");
    }
}
