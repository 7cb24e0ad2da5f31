//! YAML that every reader takes as written. What `appstack import` prints
//! is read by kubectl, whose decoder follows YAML 1.1 (`no`, `on`, `y` are
//! booleans there, `1_000` and `0777` numbers, `12:30` a base-60 number),
//! and by YAML 1.2 tools, which disagree with it on those words. A string
//! is written plain only when it starts with a letter, `/` or `_` and no
//! reader can take it for anything but a string; every other string is
//! double-quoted, with escapes for what is not printable.

use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// Words some YAML reader takes for a boolean or null (any case).
const NOT_STRINGS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// `value` as a YAML document in block style.
pub fn to_string<T: Serialize>(value: &T) -> String {
    let value = serde_yaml::to_value(value).expect("import output serializes to YAML");
    let mut output = String::new();
    match &value {
        Value::Mapping(mapping) if !mapping.is_empty() => write_mapping(&mut output, mapping, 0),
        Value::Sequence(items) if !items.is_empty() => write_sequence(&mut output, items, 0),
        other => {
            output.push_str(&scalar(other));
            output.push('\n');
        }
    }
    output
}

/// Whether `text` can be written without quotes for every reader.
pub fn plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && text.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !NOT_STRINGS.contains(&text.to_ascii_lowercase().as_str())
}

/// `text` double-quoted: `"` and `\` escaped, and every character that
/// is not printable in YAML (controls, DEL, the C1 range, the line and
/// paragraph separators, the byte-order mark) as a `\u` escape.
pub fn double_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(boolean) => boolean.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) if plain(text) => text.clone(),
        Value::String(text) => double_quoted(text),
        Value::Mapping(_) => "{}".into(),
        Value::Sequence(_) => "[]".into(),
        Value::Tagged(tagged) => scalar(&tagged.value),
    }
}

fn indent(output: &mut String, width: usize) {
    output.extend(std::iter::repeat_n(' ', width));
}

/// The value after `key:`, at the key's indentation.
fn write_value(output: &mut String, value: &Value, width: usize) {
    match value {
        Value::Mapping(mapping) if !mapping.is_empty() => {
            output.push('\n');
            write_mapping(output, mapping, width + 2);
        }
        Value::Sequence(items) if !items.is_empty() => {
            output.push('\n');
            write_sequence(output, items, width);
        }
        other => {
            output.push(' ');
            output.push_str(&scalar(other));
            output.push('\n');
        }
    }
}

fn write_entry(output: &mut String, key: &Value, value: &Value, width: usize) {
    output.push_str(&scalar(key));
    output.push(':');
    write_value(output, value, width);
}

fn write_mapping(output: &mut String, mapping: &Mapping, width: usize) {
    for (key, value) in mapping {
        indent(output, width);
        write_entry(output, key, value, width);
    }
}

/// Items as `- `, at the indentation of the key that holds them.
fn write_sequence(output: &mut String, items: &[Value], width: usize) {
    for item in items {
        indent(output, width);
        output.push('-');
        if !matches!(item, Value::Sequence(inner) if !inner.is_empty()) {
            output.push(' ');
        }
        match item {
            Value::Mapping(mapping) if !mapping.is_empty() => {
                for (index, (key, value)) in mapping.iter().enumerate() {
                    if index > 0 {
                        indent(output, width + 2);
                    }
                    write_entry(output, key, value, width + 2);
                }
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                output.push('\n');
                write_sequence(output, inner, width + 2);
            }
            other => {
                output.push_str(&scalar(other));
                output.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn words_and_numbers_of_yaml_1_1_are_quoted() {
        for text in [
            "no",
            "No",
            "NO",
            "yes",
            "Yes",
            "on",
            "ON",
            "off",
            "Off",
            "y",
            "Y",
            "n",
            "N",
            "true",
            "False",
            "null",
            "~",
            "1_000",
            "0777",
            "0o17",
            "0x1F",
            "0b101",
            "12:30",
            "1e3",
            "+1",
            "-1",
            ".5",
            ".inf",
            ".NaN",
            "2024-01-31",
            "1.0",
            "=",
            "<<",
            "",
        ] {
            assert!(!plain(text), "{text:?} must be quoted");
        }
        for text in [
            "info",
            "postgres:16-alpine",
            "http://backend:8000/api",
            "app.main:app",
            "/api/v1/health",
            "django.db.backends.postgresql",
            "Full Stack FastAPI Project",
            "noreply@example.com",
            "nope",
            "yesterday",
        ] {
            assert!(plain(text), "{text:?} may be plain");
        }
        for text in [
            "- item",
            "a: b",
            "ends:",
            "a #comment",
            " lead",
            "tail ",
            "tab\there",
        ] {
            assert!(!plain(text), "{text:?} must be quoted");
        }
    }

    #[test]
    fn quoting_escapes_what_is_not_printable() {
        assert_eq!(
            double_quoted("a\"b\\c\nd\te\u{7f}\u{85}\u{2028}é"),
            r#""a\"b\\c\nd\te\u007f\u0085\u2028é""#
        );
    }

    #[test]
    fn documents_read_back_as_written() {
        let mut env = BTreeMap::new();
        for (key, value) in [
            ("N", "no"),
            ("FLAG", "on"),
            ("COUNT", "1_000"),
            ("KEY", "-----BEGIN KEY-----\nabc\n-----END KEY-----"),
            ("EMPTY", ""),
            ("QUOTE", "say \"hi\": now # not a comment"),
        ] {
            env.insert(key.to_string(), value.to_string());
        }
        let document = serde_json::json!({
            "kind": "Test",
            "list": [{"name": "N", "value": "y"}, {"name": "b", "args": ["--port", "8000"]}],
            "empty": {},
            "none": [],
            "nested": [["a", "b"]],
            "env": env,
            "number": 3,
            "flag": true,
        });
        let text = to_string(&document);
        assert!(text.contains("- name: \"N\"\n  value: \"y\"\n"), "{text}");
        assert!(text.contains("  \"N\": \"no\"\n"), "{text}");
        assert!(text.contains("nested:\n-\n  - a\n"), "{text}");
        let read: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(read, document, "{text}");
    }
}
