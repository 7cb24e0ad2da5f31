//! The names an import gives and checks: the stack's, the Secret its
//! references point at, and which variable names an AppStack's env takes.

use crate::api::crd::MAX_STACK_NAME_LENGTH;

/// A DNS-1035 label of at most [`MAX_STACK_NAME_LENGTH`] characters made
/// from `text`: lowercase, other characters to `-`.
pub fn sanitize_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "app-");
    }
    name.truncate(MAX_STACK_NAME_LENGTH);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "app".to_string()
    } else {
        name
    }
}

/// The Secret an imported stack references: `<stack>-dotenv`.
pub fn secret_name(stack: &str) -> String {
    format!("{stack}-dotenv")
}

/// Whether `name` can be an AppStack env name.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}
