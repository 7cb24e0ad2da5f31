//! The examples of the docs as a reader would use them: every YAML block of
//! the README and the book is sent to the API server as a server-side dry
//! run with strict field validation, and every AppStack among them is
//! rendered by `appstack render`'s code. A block that only shows part of a
//! stack (`spec:` and what is under it) is merged into the smallest stack
//! first. A block fenced as ```` ```yaml abridged ```` is left out: it
//! shows a file cut short or something that is not a Kubernetes object (a
//! docker-compose file), and says so to the reader.

use std::path::{Path, PathBuf};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{TEST_MANAGER, TestNamespace, client, install_crd};

/// A fenced YAML block: where it is and what it holds.
struct Block {
    file: PathBuf,
    line: usize,
    abridged: bool,
    text: String,
}

impl Block {
    fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The Markdown files a reader reads: the README and every page of the book.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut directories = vec![root.join("docs/src")];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|extension| extension == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
}

/// The fenced blocks whose info string starts with `yaml`, indented ones
/// (inside a list item) included.
fn yaml_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let relative = file
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .to_path_buf();
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String, bool)> = None;
    let mut body = String::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split([' ', ',']).filter(|word| !word.is_empty());
                    let language = words.next().unwrap_or_default().to_string();
                    let abridged = words.any(|word| word == "abridged");
                    open = Some((index + 1, indent, language, abridged));
                    body.clear();
                }
            }
            Some((start, fence_indent, language, abridged)) => {
                if trimmed.starts_with("```") {
                    if language == "yaml" {
                        blocks.push(Block {
                            file: relative.clone(),
                            line: *start,
                            abridged: *abridged,
                            text: body.clone(),
                        });
                    }
                    open = None;
                } else {
                    let cut = indent.min(*fence_indent);
                    body.push_str(&line[cut..]);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// The smallest stack the API server accepts; a `spec:` fragment is merged
/// into it.
fn smallest_stack() -> Value {
    json!({
        "apiVersion": "appstack.dev/v1alpha1",
        "kind": "AppStack",
        "metadata": {"name": "fragment"},
        "spec": {
            "database": {"managed": {}},
            "backend": {"image": "ghcr.io/acme/shop-backend:1.4.2", "port": 8000},
        },
    })
}

/// `patch` merged into `base`: objects merge key by key, anything else
/// replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// The objects a block stands for, or why it stands for none.
fn objects(block: &Block) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&block.text) {
        let value = Value::deserialize(document).map_err(|error| error.to_string())?;
        match &value {
            Value::Null => {}
            Value::Object(map) if map.contains_key("apiVersion") && map.contains_key("kind") => {
                objects.push(value);
            }
            Value::Object(map) if map.len() == 1 && map.contains_key("spec") => {
                let mut stack = smallest_stack();
                merge(&mut stack, &value);
                objects.push(stack);
            }
            _ => {
                return Err("neither a Kubernetes object nor a `spec:` fragment of an \
                     AppStack: fence it as ```yaml abridged if it is not meant to be applied"
                    .to_string());
            }
        }
    }
    if objects.is_empty() {
        return Err("holds no object".to_string());
    }
    Ok(objects)
}

/// Server-side applies `object` into `namespace` as a dry run, with strict
/// field validation; the API server's message when it refuses.
async fn dry_run(client: &Client, namespace: &str, object: &Value) -> Result<(), String> {
    let mut object: DynamicObject =
        serde_json::from_value(object.clone()).map_err(|error| error.to_string())?;
    let types = object.types.clone().ok_or("no apiVersion or kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|error| error.to_string())?;
    let (resource, capabilities): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|error| {
            format!(
                "{}/{} is not served by the local control plane ({error}): \
                 only kinds the suite can check belong in a yaml block",
                types.api_version, types.kind
            )
        })?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            object.metadata.namespace = Some(namespace.to_string());
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().ok_or("no metadata.name")?;
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER)
            .force()
            .dry_run()
            .validation_strict(),
        &Patch::Apply(&object),
    )
    .await
    .map(|_| ())
    .map_err(|error| format!("{}/{name}: {error}", types.kind))
}

#[test]
fn yaml_blocks_are_found_with_their_place_and_fence() {
    let blocks = yaml_blocks(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/how-to/docker-compose.md"),
    );
    assert!(
        blocks.iter().any(|block| block.abridged),
        "the compose file is abridged"
    );
    assert!(
        blocks.iter().any(|block| !block.abridged),
        "the imported stack is whole"
    );
    let mut base = smallest_stack();
    merge(
        &mut base,
        &json!({"spec": {"expose": {"host": "a.example.com"}}}),
    );
    assert_eq!(base["spec"]["expose"]["host"], "a.example.com");
    assert_eq!(base["spec"]["backend"]["port"], 8000);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_yaml_example_in_the_docs_is_accepted_by_the_api_server() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "docs").await;
    let ns = namespace.name.as_str();

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut stacks = 0;
    let mut abridged = 0;
    for page in pages() {
        for block in yaml_blocks(&page) {
            if block.abridged {
                abridged += 1;
                continue;
            }
            let objects = match objects(&block) {
                Ok(objects) => objects,
                Err(why) => {
                    failures.push(format!("{}: {why}", block.place()));
                    continue;
                }
            };
            // The same objects as `appstack render -f` would read them.
            let as_file = objects
                .iter()
                .map(|object| serde_yaml::to_string(object).unwrap())
                .collect::<Vec<_>>()
                .join("---\n");
            if objects.iter().any(|object| object["kind"] == "AppStack") {
                stacks += 1;
                if let Err(error) = appstack::cli::render::render(&as_file, ns) {
                    failures.push(format!("{}: appstack render: {error}", block.place()));
                }
            }
            for object in &objects {
                checked += 1;
                if let Err(why) = dry_run(&client, ns, object).await {
                    failures.push(format!("{}: {why}", block.place()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "YAML in the docs the API server or render refuses:\n{}",
        failures.join("\n")
    );
    println!(
        "{checked} objects in {stacks} blocks with AppStacks accepted; {abridged} abridged blocks"
    );
    assert!(
        checked >= 10 && stacks >= 8,
        "only {checked} objects and {stacks} stacks found: is the extraction broken?"
    );
}
