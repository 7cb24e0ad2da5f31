//! The `appstack` command-line reference, walked from clap's `Command`:
//! every visible subcommand with its usage, description and arguments
//! (flag, value, environment variable, default, accepted values, help).

use std::fmt::Write;

use clap::{Arg, Command, CommandFactory};

use super::markdown::{code, prose};

/// The page for the `appstack` binary and the `kubectl appstack` plugin.
pub fn page() -> String {
    let mut command = crate::cli::Cli::command();
    command.build();
    let mut page = super::generated_notice(
        "the clap definitions in src/cli/, src/import/cli.rs and src/plugin/",
    );
    page.push_str("# The `appstack` command\n\n");
    write_command(&mut page, &command, 1);
    let mut plugin = crate::plugin::Plugin::command();
    plugin.build();
    page.push_str("## The kubectl plugin: `kubectl appstack`\n\n");
    page.push_str(
        "A second binary of the crate, `kubectl-appstack`, which kubectl runs as `kubectl appstack` once it is on `PATH` (see [Read a stack from a terminal](../how-to/kubectl-plugin.md)).\n\n",
    );
    write_command(&mut page, &plugin, 3);
    page
}

fn write_command(page: &mut String, command: &Command, depth: usize) {
    let name = command
        .get_bin_name()
        .unwrap_or(command.get_name())
        .to_string();
    if depth > 1 {
        let _ = writeln!(page, "{} {}\n", "#".repeat(depth.min(4)), code(&name));
    }
    let about = command.get_long_about().or(command.get_about());
    if let Some(about) = about {
        for paragraph in sentences(&about.to_string()) {
            let _ = writeln!(page, "{paragraph}\n");
        }
    }
    let usage = command.clone().render_usage().to_string();
    let _ = writeln!(page, "```text\n{}\n```\n", usage.trim_end());

    let arguments: Vec<&Arg> = command
        .get_arguments()
        .filter(|argument| !argument.is_hide_set() && !is_builtin(argument))
        .collect();
    if !arguments.is_empty() {
        page.push_str("| argument | value | variable | default | description |\n");
        page.push_str("|---|---|---|---|---|\n");
        for argument in arguments {
            let _ = writeln!(page, "{}", row(argument));
        }
        page.push('\n');
    }
    for subcommand in visible_subcommands(command) {
        write_command(page, subcommand, depth + 1);
    }
}

fn visible_subcommands(command: &Command) -> impl Iterator<Item = &Command> {
    command
        .get_subcommands()
        .filter(|subcommand| !subcommand.is_hide_set() && subcommand.get_name() != "help")
}

/// `--help` and `--version`, which every command has.
fn is_builtin(argument: &Arg) -> bool {
    matches!(argument.get_id().as_str(), "help" | "version")
}

fn row(argument: &Arg) -> String {
    let takes_value = argument.get_action().takes_values();
    let value_names: Vec<String> = argument
        .get_value_names()
        .map(|names| names.iter().map(|name| format!("<{name}>")).collect())
        .unwrap_or_else(|| vec![format!("<{}>", argument.get_id().as_str().to_uppercase())]);
    let names = if argument.is_positional() {
        code(&value_names.join(" "))
    } else {
        let mut names = Vec::new();
        if let Some(long) = argument.get_long() {
            names.push(code(&format!("--{long}")));
        }
        if let Some(short) = argument.get_short() {
            names.push(code(&format!("-{short}")));
        }
        names.join(", ")
    };
    let value = if takes_value && !argument.is_positional() {
        code(&value_names.join(" "))
    } else {
        String::new()
    };
    let variable = argument
        .get_env()
        .map(|variable| code(&variable.to_string_lossy()))
        .unwrap_or_default();
    let default = if takes_value {
        argument
            .get_default_values()
            .iter()
            .map(|value| code(&value.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let help = argument
        .get_long_help()
        .or(argument.get_help())
        .map(|help| help.to_string())
        .unwrap_or_default();
    let mut description = sentences(&help);
    if argument.is_required_set() {
        description.push("Required.".to_string());
    }
    if matches!(
        argument.get_action(),
        clap::ArgAction::Append | clap::ArgAction::Count
    ) || argument
        .get_num_args()
        .is_some_and(|range| range.max_values() > 1)
    {
        description.push("Repeatable.".to_string());
    }
    let possible: Vec<String> = if takes_value {
        argument
            .get_possible_values()
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| match value.get_help() {
                Some(help) => format!(
                    "{}: {}",
                    code(value.get_name()),
                    sentences(&help.to_string()).join(" ")
                ),
                None => code(value.get_name()),
            })
            .collect()
    } else {
        Vec::new()
    };
    if !possible.is_empty() {
        description.push(format!("Values:<br>{}", possible.join("<br>")));
    }
    format!(
        "| {} | {} | {} | {} | {} |",
        cell(&names),
        cell(&value),
        cell(&variable),
        cell(&default),
        cell(&description.join("<br><br>"))
    )
}

/// Help text as paragraphs that end as sentences do: clap drops the final
/// period of a one-paragraph doc comment.
fn sentences(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .map(|mut paragraph| {
            if paragraph.ends_with(|end: char| end.is_alphanumeric() || end == '`' || end == ')') {
                paragraph.push('.');
            }
            paragraph
        })
        .collect()
}

/// Text in a table cell: a `|` would end the cell, even in a code span.
fn cell(text: &str) -> String {
    text.replace("\\|", "|").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_and_flag_is_listed() {
        let page = page();
        let mut command = crate::cli::Cli::command();
        command.build();
        fn check(page: &str, command: &Command, count: &mut usize) {
            for argument in command.get_arguments() {
                if argument.is_hide_set() || is_builtin(argument) {
                    continue;
                }
                if let Some(long) = argument.get_long() {
                    assert!(
                        page.contains(&format!("| `--{long}`")),
                        "--{long} of {} is missing",
                        command.get_name()
                    );
                    *count += 1;
                }
            }
            for subcommand in visible_subcommands(command) {
                assert!(
                    page.contains(&format!("Usage: {}", subcommand.get_bin_name().unwrap())),
                    "{} is missing",
                    subcommand.get_name()
                );
                check(page, subcommand, count);
            }
        }
        let mut flags = 0;
        check(&page, &command, &mut flags);
        assert!(flags > 20, "only {flags} flags");
        assert!(
            page.contains("| `--concurrency` | `<CONCURRENCY>` | `APPSTACK_CONCURRENCY` | `16` |")
        );
        assert!(
            !page.contains("appstack docs"),
            "hidden commands stay hidden"
        );
    }
}
