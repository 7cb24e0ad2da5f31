//! Writing text from the code into Markdown that mdBook renders as written.

/// `text` as an inline code span, whatever backticks or spaces it holds.
pub fn code(text: &str) -> String {
    let longest_run = text
        .split(|character| character != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let padding = if text.starts_with('`') || text.ends_with('`') || text.trim() != text {
        " "
    } else {
        ""
    };
    if text.is_empty() {
        return "`\"\"`".to_string();
    }
    format!("{fence}{padding}{text}{padding}{fence}")
}

/// Prose from a doc comment or a schema description, as Markdown: code
/// spans kept, and outside them what Markdown would take for HTML or
/// emphasis escaped (`<stack>-db`, `*.example.com`). Hard-wrapped lines are
/// joined; blank lines still separate paragraphs.
pub fn prose(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|paragraph| {
            let joined = paragraph
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            escape_outside_code(&joined)
        })
        .filter(|paragraph| !paragraph.is_empty())
        .collect()
}

fn escape_outside_code(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for (index, part) in text.split('`').enumerate() {
        if index > 0 {
            escaped.push('`');
        }
        if index % 2 == 1 {
            escaped.push_str(part);
            continue;
        }
        for character in part.chars() {
            match character {
                '<' => escaped.push_str("&lt;"),
                '>' => escaped.push_str("&gt;"),
                '*' => escaped.push_str("\\*"),
                '[' => escaped.push_str("\\["),
                ']' => escaped.push_str("\\]"),
                '|' => escaped.push_str("\\|"),
                _ => escaped.push(character),
            }
        }
    }
    escaped
}

/// The anchor mdBook gives a heading: lowercase, letters, digits, `-` and
/// `_` kept, spaces become `-`, everything else dropped.
pub fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|character| match character {
            ' ' => Some('-'),
            '-' | '_' => Some(character),
            _ if character.is_alphanumeric() => Some(character.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_hold_backticks_and_empty_text() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(code(""), "`\"\"`");
    }

    #[test]
    fn prose_escapes_html_and_emphasis_outside_code_spans() {
        assert_eq!(
            prose("https://<host>, `<stack>-db`\nand *.x\n\nnext"),
            ["https://&lt;host&gt;, `<stack>-db` and \\*.x", "next"]
        );
    }

    #[test]
    fn anchors_follow_mdbook() {
        assert_eq!(anchor("`spec.backend.health`"), "specbackendhealth");
        assert_eq!(anchor("appstack import compose"), "appstack-import-compose");
    }
}
