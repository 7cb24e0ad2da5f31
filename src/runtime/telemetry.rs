//! Logging with `tracing`: JSON lines or text, chosen by `LOG_FORMAT`
//! (JSON when standard output is not a terminal), level from `LOG_LEVEL`,
//! per-target filters from `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let directives = match std::env::var("RUST_LOG") {
        Ok(filters) if !filters.is_empty() => format!("{level},{filters}"),
        _ => level,
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|error| {
        eprintln!("invalid LOG_LEVEL/RUST_LOG {directives:?} ({error}); using info");
        EnvFilter::new("info")
    });
    let terminal = std::io::stdout().is_terminal();
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !terminal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .init();
    }
}

/// An error and its sources, `outer: inner: innermost`, for one log field.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
