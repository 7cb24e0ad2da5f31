//! Variable interpolation as the Compose Specification defines it
//! (compose-spec `12-interpolation.md`): `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`,
//! nesting inside defaults and `$$` for a literal dollar sign.
//!
//! The same rules apply to compose file values and to unquoted and
//! double-quoted `.env` values.

use std::collections::BTreeSet;

/// Why a value cannot be interpolated. Compose refuses the whole project in
/// both cases, and so does the import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// The fragment is the text from the offending `${`, cut short: the
    /// rest of the value may be a secret.
    #[error("invalid interpolation format at {fragment:?}")]
    Invalid { fragment: String },
    #[error("required variable {variable} is missing a value{}", reason_suffix(.reason))]
    MissingRequired { variable: String, reason: String },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// Where variable values come from, and which names were looked up without
/// a value (Compose warns about each and substitutes an empty string).
pub struct Variables<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: BTreeSet<String>,
}

impl<'a> Variables<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            unset: BTreeSet::new(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Names used without a default while unset, in name order.
    pub fn unset(&self) -> &BTreeSet<String> {
        &self.unset
    }

    pub fn into_unset(self) -> BTreeSet<String> {
        self.unset
    }
}

/// Substitutes every variable in `template`.
pub fn substitute(template: &str, variables: &mut Variables) -> Result<String, InterpolationError> {
    let mut output = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            output.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(close) = closing_brace(braced) else {
                return Err(invalid(&rest[dollar..]));
            };
            output.push_str(&braced_value(&braced[..close], variables)?);
            rest = &braced[close + 1..];
        } else {
            let length = name_length(after);
            if length == 0 {
                // Not a variable: Compose keeps the dollar sign as written.
                output.push('$');
                rest = after;
            } else {
                let name = &after[..length];
                output.push_str(&lookup_or_warn(name, variables));
                rest = &after[length..];
            }
        }
    }
    output.push_str(rest);
    Ok(output)
}

/// Longest fragment of a value an error message quotes.
const FRAGMENT_LENGTH: usize = 24;

fn invalid(fragment: &str) -> InterpolationError {
    let mut fragment: String = fragment.chars().take(FRAGMENT_LENGTH + 1).collect();
    if fragment.chars().count() > FRAGMENT_LENGTH {
        fragment = fragment.chars().take(FRAGMENT_LENGTH).collect::<String>() + "...";
    }
    InterpolationError::Invalid { fragment }
}

fn lookup_or_warn(name: &str, variables: &mut Variables) -> String {
    variables.get(name).unwrap_or_else(|| {
        variables.unset.insert(name.to_string());
        String::new()
    })
}

/// Length of the variable name at the start of `text`: `[_a-zA-Z][_a-zA-Z0-9]*`.
fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, first)) if first == '_' || first.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(text.len(), |(index, _)| index)
}

/// Index of the `}` closing a `${`, counting nested braces.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(index),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The value of `${inner}`.
fn braced_value(inner: &str, variables: &mut Variables) -> Result<String, InterpolationError> {
    let invalid = || invalid(&format!("${{{inner}}}"));
    let length = name_length(inner);
    if length == 0 {
        return Err(invalid());
    }
    let name = &inner[..length];
    let modifier = &inner[length..];
    if modifier.is_empty() {
        return Ok(lookup_or_warn(name, variables));
    }
    let (when_empty_too, operator_and_word) = match modifier.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, modifier),
    };
    let mut chars = operator_and_word.chars();
    let operator = chars.next().ok_or_else(invalid)?;
    let word = chars.as_str();
    let value = variables.get(name);
    // "Set" for the `:` forms means set and not empty.
    let set = match &value {
        Some(value) => !(when_empty_too && value.is_empty()),
        None => false,
    };
    match operator {
        '-' if set => Ok(value.unwrap_or_default()),
        '-' => substitute(word, variables),
        '?' if set => Ok(value.unwrap_or_default()),
        '?' => Err(InterpolationError::MissingRequired {
            variable: name.to_string(),
            reason: substitute(word, variables)?,
        }),
        '+' if set => substitute(word, variables),
        '+' => Ok(value.unwrap_or_default()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    //! Expected results come from the Compose Specification's interpolation
    //! chapter (compose-spec `12-interpolation.md`, cited as "spec") and the
    //! behaviour compose-go's `template` package tests pin down (cited as
    //! "compose-go").
    use super::*;

    fn with(
        pairs: &[(&str, &str)],
        template: &str,
    ) -> (Result<String, InterpolationError>, Vec<String>) {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let lookup = move |name: &str| {
            owned
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut variables = Variables::new(&lookup);
        let result = substitute(template, &mut variables);
        (result, variables.into_unset().into_iter().collect())
    }

    fn ok(pairs: &[(&str, &str)], template: &str) -> String {
        with(pairs, template).0.unwrap()
    }

    const VARS: &[(&str, &str)] = &[("FOO", "first"), ("EMPTY", "")];

    #[test]
    fn braced_and_unbraced_names_are_replaced() {
        // spec: "Both $VARIABLE and ${VARIABLE} syntax is supported."
        assert_eq!(ok(VARS, "This $FOO var"), "This first var");
        assert_eq!(ok(VARS, "This ${FOO} var"), "This first var");
        // compose-go: an unbraced name ends at the first non-name character.
        assert_eq!(ok(VARS, "$FOO-bar"), "first-bar");
    }

    #[test]
    fn soft_default_applies_when_unset_or_empty() {
        // spec: "${VARIABLE:-default} evaluates to default if VARIABLE is
        // unset or empty in the environment."
        assert_eq!(ok(VARS, "${MISSING:-def}"), "def");
        assert_eq!(ok(VARS, "${EMPTY:-def}"), "def");
        assert_eq!(ok(VARS, "${FOO:-def}"), "first");
    }

    #[test]
    fn hard_default_applies_only_when_unset() {
        // spec: "${VARIABLE-default} evaluates to default only if VARIABLE
        // is unset in the environment."
        assert_eq!(ok(VARS, "${MISSING-def}"), "def");
        assert_eq!(ok(VARS, "ok ${EMPTY-def}"), "ok ");
        assert_eq!(ok(VARS, "${FOO-def}"), "first");
    }

    #[test]
    fn required_with_colon_fails_when_unset_or_empty() {
        // spec: "${VARIABLE:?err} exits with an error message containing err
        // if VARIABLE is unset or empty in the environment."
        for template in ["${MISSING:?set it please}", "${EMPTY:?set it please}"] {
            let error = with(VARS, template).0.unwrap_err();
            assert!(error.to_string().contains("set it please"), "{error}");
        }
        assert_eq!(ok(VARS, "${FOO:?err}"), "first");
    }

    #[test]
    fn required_without_colon_fails_only_when_unset() {
        // spec: "${VARIABLE?err} exits with an error message containing err
        // only if VARIABLE is unset in the environment."
        let error = with(VARS, "${MISSING?need it}").0.unwrap_err();
        assert_eq!(
            error,
            InterpolationError::MissingRequired {
                variable: "MISSING".into(),
                reason: "need it".into()
            }
        );
        assert_eq!(ok(VARS, "ok ${EMPTY?err}"), "ok ");
    }

    #[test]
    fn alternative_value_applies_when_set() {
        // compose-go: ${VAR:+alt} when set and non-empty, ${VAR+alt} when set.
        assert_eq!(ok(VARS, "ok ${FOO:+alt}"), "ok alt");
        assert_eq!(ok(VARS, "ok ${EMPTY:+alt}"), "ok ");
        assert_eq!(ok(VARS, "ok ${EMPTY+alt}"), "ok alt");
        assert_eq!(ok(VARS, "ok ${MISSING+alt}"), "ok ");
    }

    #[test]
    fn defaults_nest() {
        // spec: "Interpolation can also be nested: ${VARIABLE:-${FOO}},
        // ${VARIABLE?$FOO}, ${VARIABLE:-${FOO:-default}}".
        assert_eq!(ok(VARS, "${MISSING:-${FOO}}"), "first");
        assert_eq!(ok(VARS, "${MISSING:-${OTHER:-default}}"), "default");
        assert_eq!(ok(VARS, "${MISSING-${FOO} ${FOO}}"), "first first");
        let error = with(VARS, "${MISSING?$FOO}").0.unwrap_err();
        assert!(error.to_string().ends_with(": first"), "{error}");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        // spec: "You can use a $$ (double-dollar sign) when your
        // configuration needs a literal dollar sign."
        assert_eq!(ok(VARS, "$$VAR_NOT_INTERPOLATED"), "$VAR_NOT_INTERPOLATED");
        assert_eq!(ok(VARS, "$${FOO}"), "${FOO}");
        let (_, unset) = with(VARS, "$$VAR_NOT_INTERPOLATED");
        assert!(unset.is_empty(), "no warning for an escaped name");
    }

    #[test]
    fn a_dollar_that_starts_no_variable_is_kept() {
        // spec: "Compose will process any string following a $ sign as long
        // as it makes it a valid variable definition ... In other
        // circumstances, it will be preserved".
        for template in ["a $ string", "^REGEX$", "$}", "$", "cost $5"] {
            assert_eq!(ok(VARS, template), template);
        }
    }

    #[test]
    fn an_unset_variable_is_empty_and_reported() {
        // spec: "If Compose can't resolve a substituted variable and no
        // default value is defined, it displays a warning and substitutes
        // the variable with an empty string."
        let (result, unset) = with(VARS, "This ${MISSING} and $ALSO_MISSING var");
        assert_eq!(result.unwrap(), "This  and  var");
        assert_eq!(unset, ["ALSO_MISSING", "MISSING"]);
        // An empty value is set: no warning.
        assert!(with(VARS, "${EMPTY}").1.is_empty());
    }

    #[test]
    fn unused_defaults_are_not_evaluated() {
        // compose-go: a default that is not used neither warns nor fails.
        let (result, unset) = with(VARS, "${FOO:-${MISSING}}");
        assert_eq!(result.unwrap(), "first");
        assert!(unset.is_empty());
        assert_eq!(ok(VARS, "${FOO?${MISSING:?never}}"), "first");
        // ...and a used one does warn.
        assert_eq!(with(VARS, "${MISSING:-${OTHER}}").1, ["OTHER"]);
    }

    #[test]
    fn malformed_braces_are_errors() {
        // compose-go: these templates are rejected as invalid.
        for template in [
            "${", "${}", "${ }", "${ foo}", "${foo }", "${foo!}", "${FOO",
        ] {
            assert!(
                matches!(
                    with(VARS, template).0,
                    Err(InterpolationError::Invalid { .. })
                ),
                "{template}"
            );
        }
    }

    #[test]
    fn errors_quote_only_the_broken_fragment() {
        let error = with(VARS, "postgres://app:s3cret-pw@db/${DB NAME}")
            .0
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid interpolation format at \"${DB NAME}\""
        );
        let error = with(VARS, "pw=s3cret-pw ${unterminated and a long tail")
            .0
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid interpolation format at \"${unterminated and a lon...\""
        );
    }

    #[test]
    fn defaults_may_hold_operators_and_colons() {
        // compose-go: the default is everything after the first operator.
        assert_eq!(
            ok(VARS, "ok ${EMPTY:-/non:-alphanumeric}"),
            "ok /non:-alphanumeric"
        );
        assert_eq!(
            ok(VARS, "${DB_URL:-postgres://app:pw@db:5432/app}"),
            "postgres://app:pw@db:5432/app"
        );
    }
}
