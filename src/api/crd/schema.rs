//! The patterns and schemas several of the AppStack's types share: names,
//! label and annotation maps, label selectors. They live apart from the
//! types so that `crd` and its submodules (`expose`, `network`) all read
//! them from here rather than from each other.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

/// Text the operator copies into a child: anything but the characters the
/// API server's YAML decoder refuses even in a quoted string (DEL, the C1
/// controls but NEL, U+FFFE and U+FFFF), since children are written by
/// server-side apply, whose body the API server decodes as YAML.
pub(super) const APPLICABLE_TEXT: &str = r"^[^\x7f-\x84\x86-\x9f\x{fffe}\x{ffff}]*$";

/// A DNS-1123 subdomain, as Secret and StorageClass names are.
pub(super) const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A label value (at most 63 characters, checked beside it).
const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A CEL check that map key `k` is a qualified name, as label and
/// annotation keys are: an optional DNS subdomain prefix of at most 253
/// characters and '/', then a name of at most 63.
const QUALIFIED_KEY_RULE: &str = r"k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$') && (!k.contains('/') || k.indexOf('/') <= 253)";

/// The most characters of keys and values the user may put in a pod's
/// annotations: the API server allows 256 KiB, a character takes up to 4
/// bytes in UTF-8, and the operator adds annotations of its own.
pub const MAX_POD_ANNOTATION_CHARACTERS: usize = 64_000;

/// Reads an emptied map as empty. Server-side apply turns a map emptied by
/// its manager (`podLabels: {}` after `podLabels: {a: b}`) into null, so
/// the schema marks optional maps nullable and null reads as empty.
pub(super) fn empty_if_null<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Labels the operator puts on a child: keys qualified names, values label
/// values, at most 64.
pub(super) fn label_map(_: &mut SchemaGenerator) -> Schema {
    let keys = format!("self.all(k, {QUALIFIED_KEY_RULE})");
    json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
        "x-kubernetes-validations": [{
            "rule": keys,
            "message": "label keys must be qualified names: an optional DNS subdomain prefix of at most 253 characters and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        }],
    })
}

/// A label selector (`matchLabels`, `matchExpressions`) whose keys and
/// values a NetworkPolicy can hold.
pub(super) fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    let key = format!("[self].all(k, {QUALIFIED_KEY_RULE})");
    let mut match_labels = label_map(generator);
    match_labels.remove("nullable");
    match_labels.insert(
        "description".into(),
        "Labels the selected objects carry, each key with this value.".into(),
    );
    json_schema!({
        "type": "object",
        "description": "Objects by label: those carrying every label of matchLabels and meeting every requirement of matchExpressions.",
        "properties": {
            "matchLabels": match_labels,
            "matchExpressions": {
                "type": "array",
                "maxItems": 32,
                "description": "Requirements on labels: key, operator (In, NotIn, Exists, DoesNotExist) and, for In and NotIn, values.",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "maxLength": 317,
                            "x-kubernetes-validations": [{
                                "rule": key,
                                "message": "label keys must be qualified names: an optional DNS subdomain prefix of at most 253 characters and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                            }],
                        },
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
                        },
                    },
                    "x-kubernetes-validations": [{
                        "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                        "message": "In and NotIn need values; Exists and DoesNotExist take none",
                    }],
                },
            },
        },
    })
}

/// Annotations the operator puts on an Ingress: keys qualified names,
/// values any text a child can hold, within the API server's size limit.
pub(super) fn annotation_map(_: &mut SchemaGenerator) -> Schema {
    let keys = format!("self.all(k, {QUALIFIED_KEY_RULE})");
    let size =
        format!("self.map(k, k.size() + self[k].size()).sum() <= {MAX_POD_ANNOTATION_CHARACTERS}");
    let size_message = format!(
        "annotations may hold at most {MAX_POD_ANNOTATION_CHARACTERS} characters of keys and values together"
    );
    json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": MAX_POD_ANNOTATION_CHARACTERS, "pattern": APPLICABLE_TEXT},
        "x-kubernetes-validations": [
            {
                "rule": keys,
                "message": "annotation keys must be qualified names: an optional DNS subdomain prefix of at most 253 characters and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            },
            {"rule": size, "message": size_message},
        ],
    })
}

/// Annotations the operator puts on a pod: those of [`annotation_map`],
/// but no seccomp or AppArmor profile (pods run with the RuntimeDefault
/// seccomp profile, as Pod Security `restricted` asks).
pub(super) fn pod_annotation_map(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = annotation_map(generator);
    if let Some(serde_json::Value::Array(rules)) = schema.get_mut("x-kubernetes-validations") {
        rules.insert(1, serde_json::json!({
            "rule": "self.all(k, !k.startsWith('seccomp.security.alpha.kubernetes.io/') && !k.startsWith('container.seccomp.security.alpha.kubernetes.io/') && !k.startsWith('container.apparmor.security.beta.kubernetes.io/'))",
            "message": "pod annotations must not set seccomp or AppArmor profiles: the operator's pods run with the RuntimeDefault seccomp profile that Pod Security restricted asks for",
        }));
    }
    schema
}
