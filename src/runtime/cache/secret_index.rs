//! Which stacks read which user Secrets. Users' Secrets carry no label of
//! the operator's: the index tells the Secret watch whose data to keep and
//! which stacks a change wakes.

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;

use crate::api::crd::AppStack;

/// Which stacks read which user Secrets: (namespace, Secret name) → stack
/// names, and each stack's current list, so an update replaces it.
#[derive(Default)]
pub struct SecretIndex {
    readers: HashMap<(String, String), BTreeSet<String>>,
    read_by: HashMap<(String, String), Vec<String>>,
}

impl SecretIndex {
    /// Records the Secrets `stack` reads now.
    pub fn update(&mut self, stack: &AppStack) {
        let namespace = stack.namespace().unwrap_or_default();
        let name = stack.name_any();
        self.remove(&namespace, &name);
        let secrets: Vec<String> = stack
            .spec
            .referenced_secrets()
            .into_iter()
            .map(String::from)
            .collect();
        for secret in &secrets {
            self.readers
                .entry((namespace.clone(), secret.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.read_by.insert((namespace, name), secrets);
    }

    /// Forgets a deleted stack.
    pub fn remove(&mut self, namespace: &str, stack: &str) {
        let key = (namespace.to_string(), stack.to_string());
        for secret in self.read_by.remove(&key).unwrap_or_default() {
            let secret_key = (namespace.to_string(), secret);
            if let Some(readers) = self.readers.get_mut(&secret_key) {
                readers.remove(stack);
                if readers.is_empty() {
                    self.readers.remove(&secret_key);
                }
            }
        }
    }

    /// The stacks reading Secret `name` in `namespace`.
    pub fn readers(&self, namespace: &str, name: &str) -> Vec<String> {
        self.readers
            .get(&(namespace.to_string(), name.to_string()))
            .map(|readers| readers.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_each_stacks_references() {
        let stack = |secret: &str| -> AppStack {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
                "metadata": {"namespace": "a", "name": "shop"},
                "spec": {"database": {"external": {"urlSecretRef": {"name": secret, "key": "url"}}},
                         "backend": {"image": "x"}}
            }))
            .unwrap()
        };
        let mut index = SecretIndex::default();
        index.update(&stack("one"));
        assert_eq!(index.readers("a", "one"), ["shop"]);
        index.update(&stack("two"));
        assert!(
            index.readers("a", "one").is_empty(),
            "the old reference is gone"
        );
        assert_eq!(index.readers("a", "two"), ["shop"]);
        index.remove("a", "shop");
        assert!(index.readers("a", "two").is_empty());
    }
}
