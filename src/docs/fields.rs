//! The AppStack field reference, walked from the CRD's OpenAPI schema: one
//! section per object, each field with its type, whether it is required,
//! its default, what the API server validates (OpenAPI rules and CEL rules
//! with their messages) and its description.

use std::collections::BTreeSet;
use std::fmt::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::markdown::{anchor, code, prose};

/// The page for the CRD's (only) version.
pub fn page(crd: &CustomResourceDefinition) -> String {
    let version = &crd.spec.versions[0];
    let names = &crd.spec.names;
    let schema = serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|validation| validation.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema"),
    )
    .expect("a schema serializes");

    let mut page = super::generated_notice("the CRD (`appstack crd`, built from src/api/crd.rs)");
    page.push_str("# AppStack fields\n\n");
    let short_names = names.short_names.clone().unwrap_or_default();
    let _ = writeln!(
        page,
        "{} resource {}, kind {}, plural {}{}. The API server validates \
         every rule below when a stack is created or changed, and refuses the stack \
         with the rule's message naming the field; `kubectl explain appstack.spec` \
         shows the same descriptions.\n",
        crd.spec.scope,
        code(&format!("{}/{}", crd.spec.group, version.name)),
        code(&names.kind),
        code(&names.plural),
        if short_names.is_empty() {
            String::new()
        } else {
            format!(
                ", short name {}",
                short_names
                    .iter()
                    .map(|name| code(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    if let Some(columns) = &version.additional_printer_columns {
        page.push_str("`kubectl get appstacks` prints:\n\n| column | from |\n|---|---|\n");
        for column in columns {
            let _ = writeln!(page, "| {} | {} |", column.name, code(&column.json_path));
        }
        page.push('\n');
    }

    let mut sections = Vec::new();
    collect_sections("AppStack", &schema, &mut sections);
    let mut anchors = BTreeSet::new();
    for section in &sections {
        assert!(
            anchors.insert(anchor(&section.heading())),
            "two sections share the anchor of {}",
            section.path
        );
    }
    for section in sections {
        section.write(&mut page);
    }
    page
}

/// An object of the schema: the root, a nested object, or the items of a
/// list of objects.
struct Section<'a> {
    path: String,
    schema: &'a Value,
}

impl Section<'_> {
    fn heading(&self) -> String {
        code(&self.path)
    }

    fn write(&self, page: &mut String) {
        let _ = writeln!(page, "## {}\n", self.heading());
        if let Some(description) = self.schema["description"].as_str() {
            for paragraph in prose(description) {
                let _ = writeln!(page, "{paragraph}\n");
            }
        }
        let rules = rules(self.schema);
        if !rules.is_empty() {
            page.push_str("Rules on the whole object:\n\n");
            for rule in rules {
                let _ = writeln!(page, "- {rule}");
            }
            page.push('\n');
        }
        let required: BTreeSet<&str> = self.schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let Some(properties) = self.schema["properties"].as_object() else {
            return;
        };
        for (name, field) in properties {
            let path = child_path(&self.path, name);
            let mut kind = type_of(field);
            if let Some(target) = section_of(&path, field) {
                kind = format!(
                    "{kind}, see [{}](#{})",
                    code(&target),
                    anchor(&code(&target))
                );
            }
            let necessity = if required.contains(name.as_str()) {
                "required"
            } else {
                "optional"
            };
            let _ = writeln!(page, "- **{}** ({kind}; {necessity})", code(name));
            // An object's description opens its own section.
            if let Some(description) = field["description"].as_str()
                && !field["properties"].is_object()
            {
                for paragraph in prose(description) {
                    let _ = writeln!(page, "\n  {paragraph}");
                }
            }
            let details = details(field, field["properties"].is_object());
            if !details.is_empty() {
                page.push('\n');
                for detail in details {
                    let _ = writeln!(page, "  - {detail}");
                }
            }
        }
        page.push('\n');
    }
}

/// `spec` under the root, `spec.backend` under `spec`.
fn child_path(parent: &str, name: &str) -> String {
    if parent == "AppStack" {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The section a field's own fields are listed in, if it has any: the
/// field itself for an object, `field[]` for a list of objects.
fn section_of(path: &str, field: &Value) -> Option<String> {
    if field["properties"].is_object() {
        return Some(path.to_string());
    }
    if field["items"]["properties"].is_object() {
        return Some(format!("{path}[]"));
    }
    None
}

fn collect_sections<'a>(path: &str, schema: &'a Value, sections: &mut Vec<Section<'a>>) {
    sections.push(Section {
        path: path.to_string(),
        schema,
    });
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in properties {
        let path = child_path(path, name);
        if field["properties"].is_object() {
            collect_sections(&path, field, sections);
        } else if field["items"]["properties"].is_object() {
            collect_sections(&format!("{path}[]"), &field["items"], sections);
        }
    }
}

/// A field's type as a reader says it: `string`, `integer (int32)`,
/// `list of string`, `map of string to string`, `integer or string`.
fn type_of(field: &Value) -> String {
    if field["x-kubernetes-int-or-string"] == true {
        return "integer or string".to_string();
    }
    let format = field["format"]
        .as_str()
        .map(|format| format!(" ({format})"))
        .unwrap_or_default();
    match field["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&field["items"])),
        Some("object") if field["additionalProperties"].is_object() => {
            format!(
                "map of string to {}",
                type_of(&field["additionalProperties"])
            )
        }
        Some(other) => format!("{other}{format}"),
        None if field["x-kubernetes-preserve-unknown-fields"] == true => "any".to_string(),
        None => "any".to_string(),
    }
}

/// What the API server checks of a field, its default, and, for a list or
/// a map, what it checks of each item. The rules of an object with a
/// section of its own are listed there.
fn details(field: &Value, has_section: bool) -> Vec<String> {
    let mut details = Vec::new();
    if let Some(default) = field.get("default") {
        details.push(format!("default {}", value(default)));
    }
    details.extend(checks(field, ""));
    for (items, label) in [
        (&field["items"], "each item"),
        (&field["additionalProperties"], "each value"),
    ] {
        if items.is_object() && !items["properties"].is_object() {
            details.extend(checks(items, label));
        }
    }
    if !has_section {
        details.extend(rules(field));
    }
    details
}

/// The OpenAPI checks on one schema, each prefixed with `whose` (for the
/// items of a list or the values of a map).
fn checks(schema: &Value, whose: &str) -> Vec<String> {
    let prefix = if whose.is_empty() {
        String::new()
    } else {
        format!("{whose}: ")
    };
    let mut checks = Vec::new();
    if let Some(values) = schema["enum"].as_array() {
        checks.push(format!(
            "one of {}",
            values.iter().map(value).collect::<Vec<_>>().join(", ")
        ));
    }
    let unit_range = |min: &Value, max: &Value, unit: &str| -> Option<String> {
        match (min.as_i64(), max.as_i64()) {
            (Some(min), Some(max)) if min == max => Some(format!("exactly {min} {unit}")),
            (Some(min), Some(max)) => Some(format!("{min} to {max} {unit}")),
            (Some(min), None) => Some(format!("at least {min} {unit}")),
            (None, Some(max)) => Some(format!("at most {max} {unit}")),
            (None, None) => None,
        }
    };
    checks.extend(unit_range(
        &schema["minLength"],
        &schema["maxLength"],
        "characters",
    ));
    checks.extend(unit_range(
        &schema["minItems"],
        &schema["maxItems"],
        "items",
    ));
    checks.extend(unit_range(
        &schema["minProperties"],
        &schema["maxProperties"],
        "entries",
    ));
    let bound = |key: &str, exclusive: &str, inclusive_word: &str, exclusive_word: &str| {
        schema[key].as_f64().map(|number| {
            let word = if schema[exclusive] == true {
                exclusive_word
            } else {
                inclusive_word
            };
            format!("{word} {}", number_text(number))
        })
    };
    checks.extend(bound(
        "minimum",
        "exclusiveMinimum",
        "at least",
        "more than",
    ));
    checks.extend(bound("maximum", "exclusiveMaximum", "at most", "less than"));
    if let Some(pattern) = schema["pattern"].as_str() {
        checks.push(format!("matches {}", code(pattern)));
    }
    if schema["uniqueItems"] == true {
        checks.push("no item twice".to_string());
    }
    match schema["x-kubernetes-list-type"].as_str() {
        Some("map") => {
            let keys: Vec<String> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(code)
                .collect();
            checks.push(format!(
                "a list keyed by {}: no two items with the same {}",
                keys.join(" and "),
                keys.join(" and ")
            ));
        }
        Some("set") => checks.push("a set: no item twice".to_string()),
        _ => {}
    }
    checks
        .into_iter()
        .map(|check| format!("{prefix}{check}"))
        .collect()
}

/// The CEL rules (`x-kubernetes-validations`) on one schema, each with the
/// message the API server answers when it fails.
fn rules(schema: &Value) -> Vec<String> {
    schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let cel = rule["rule"].as_str().unwrap_or_default();
            let message = rule["message"]
                .as_str()
                .map(|message| format!(": {}", prose(message).join(" ")))
                .unwrap_or_default();
            let field = rule["fieldPath"]
                .as_str()
                .map(|path| format!(" (reported on {})", code(path)))
                .unwrap_or_default();
            format!("rule {}{field}{message}", code(cel))
        })
        .collect()
}

/// A default or enum value as YAML would show it.
fn value(value: &Value) -> String {
    match value {
        Value::String(text) => code(text),
        other => code(&other.to_string()),
    }
}

fn number_text(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        number.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> String {
        page(&crate::api::crd::definition())
    }

    #[test]
    fn every_field_of_the_schema_is_listed_in_its_section() {
        let schema = serde_json::to_value(crate::api::crd::definition()).unwrap();
        let root = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut sections = Vec::new();
        collect_sections("AppStack", root, &mut sections);
        let page = reference();
        let mut fields = 0;
        for section in &sections {
            let start = page
                .find(&format!("## {}\n", section.heading()))
                .unwrap_or_else(|| panic!("no section for {}", section.path));
            let body = &page[start..];
            let end = body[3..].find("\n## ").map_or(body.len(), |end| end + 3);
            for name in section.schema["properties"].as_object().unwrap().keys() {
                assert!(
                    body[..end].contains(&format!("- **{}** (", code(name))),
                    "{}.{name} is missing",
                    section.path
                );
                fields += 1;
            }
        }
        assert!(fields > 100, "only {fields} fields");
    }

    #[test]
    fn defaults_validation_and_rule_messages_are_shown() {
        let page = reference();
        for expected in [
            "- **`interval`** (string; optional)",
            "default `30s`",
            "1 to 512 characters",
            "matches `^[!-~]+$`",
            "one of `Retain`, `Delete`",
            "metadata.name must be at most 44 characters",
            "a list keyed by `name`",
            "- **`database`** (object, see [`spec.database`](#specdatabase); required)",
        ] {
            assert!(page.contains(expected), "the page lacks {expected:?}");
        }
    }
}
