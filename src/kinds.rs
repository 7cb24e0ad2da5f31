//! The kinds of children, declared once. [`for_each_kind!`] holds the
//! table; every place that needs one arm, field or call per kind expands it:
//! the [`Object`] and [`Kind`] enums and the [`ChildKind`] markers here, the
//! cache fields (`runtime::cache`), the watches (`runtime::watches`), and
//! the dispatch of apply, delete and the orphan sweep (`reconcile`). A kind
//! added to the table is cached, watched, written, deleted and swept;
//! one left out of an expansion does not compile.
//!
//! Each row reads: the kind; the Rust type of its objects and the kind's
//! name as the API spells it; the field of `Caches` holding them; the
//! dynamic type of its API; how it is watched (`labelled`: the operator's
//! children by label; `everything`: every object in scope, for Secrets that
//! stacks reference; `discovered`: once its API is served; `pods`: the pods
//! of the operator's workloads, which say why a component cannot run); and
//! what the
//! orphan sweep does with objects no longer desired (`owned`: deleted when
//! the stack owns them; `superseded_jobs`: older finished ones beyond the
//! last few of each component, and older ones whose pods never got to
//! run; `snapshots`: backups beyond the `keep` newest; `kept`: never).

use kube::api::DynamicObject;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::reconcile::compare::Hashed;
use crate::runtime::cache::packed::Settle;
use crate::runtime::cache::slim::Slim;

/// Calls `$callback! { ($args) <table> }` with the table of child kinds.
macro_rules! for_each_kind {
    ($($callback:ident)::+ $(, $($args:tt)*)?) => {
        $($callback)::+! { ($($($args)*)?)
            Secret: k8s_openapi::api::core::v1::Secret = "Secret" in secrets,
                dyntype (), watch everything, sweep owned;
            ConfigMap: k8s_openapi::api::core::v1::ConfigMap = "ConfigMap" in config_maps,
                dyntype (), watch labelled, sweep owned;
            Service: k8s_openapi::api::core::v1::Service = "Service" in services,
                dyntype (), watch labelled, sweep owned;
            StatefulSet: k8s_openapi::api::apps::v1::StatefulSet = "StatefulSet" in statefulsets,
                dyntype (), watch labelled, sweep owned;
            Job: k8s_openapi::api::batch::v1::Job = "Job" in jobs,
                dyntype (), watch labelled, sweep superseded_jobs;
            Deployment: k8s_openapi::api::apps::v1::Deployment = "Deployment" in deployments,
                dyntype (), watch labelled, sweep owned;
            PersistentVolumeClaim: k8s_openapi::api::core::v1::PersistentVolumeClaim =
                "PersistentVolumeClaim" in volumes,
                dyntype (), watch labelled, sweep kept;
            NetworkPolicy: k8s_openapi::api::networking::v1::NetworkPolicy =
                "NetworkPolicy" in network_policies,
                dyntype (), watch labelled, sweep owned;
            PodDisruptionBudget: k8s_openapi::api::policy::v1::PodDisruptionBudget =
                "PodDisruptionBudget" in disruption_budgets,
                dyntype (), watch labelled, sweep owned;
            Ingress: k8s_openapi::api::networking::v1::Ingress = "Ingress" in ingresses,
                dyntype (), watch labelled, sweep owned;
            ServiceMonitor: kube::api::DynamicObject = "ServiceMonitor" in service_monitors,
                dyntype (crate::children::monitoring::service_monitor_resource()),
                watch discovered, sweep owned;
            HttpRoute: kube::api::DynamicObject = "HTTPRoute" in http_routes,
                dyntype (crate::children::expose::http_route_resource()),
                watch discovered, sweep owned;
            VolumeSnapshot: kube::api::DynamicObject = "VolumeSnapshot" in volume_snapshots,
                dyntype (crate::children::backup::volume_snapshot_resource()),
                watch discovered, sweep snapshots;
            Pod: k8s_openapi::api::core::v1::Pod = "Pod" in pods,
                dyntype (), watch pods, sweep kept;
        }
    };
}
pub(crate) use for_each_kind;

/// A kind of child: the type of its objects, how its API is reached, and
/// the policies every cached kind follows (what the cache keeps, what a
/// settled object keeps, what its desired hash covers).
pub trait ChildKind: Send + Sync + 'static {
    type Object: Resource<DynamicType: Clone + Send + Sync>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned
        + Slim
        + Settle
        + Hashed
        + Send
        + Sync
        + 'static;
    const KIND: Kind;
    /// Whether its API may be missing: it is watched and written only
    /// while served.
    const DISCOVERED: bool;
    fn dynamic_type() -> <Self::Object as Resource>::DynamicType;
    /// The API of its objects in `namespace`.
    fn api(
        client: Client,
        namespace: &str,
        dyntype: &<Self::Object as Resource>::DynamicType,
    ) -> Api<Self::Object>;
    fn wrap(object: Self::Object) -> Object;
}

/// The API of a kind the API server always serves.
fn typed<K>(client: Client, namespace: &str, _: &()) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(client, namespace)
}

/// The API of a kind known by its discovered resource.
fn dynamic(
    client: Client,
    namespace: &str,
    resource: &kube::api::ApiResource,
) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, resource)
}

macro_rules! discovered {
    (discovered) => {
        true
    };
    ($other:ident) => {
        false
    };
}

macro_rules! api_of {
    (()) => {
        typed
    };
    ($resource:expr) => {
        dynamic
    };
}

macro_rules! define_kinds {
    (() $(
        $kind:ident: $object:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        /// The kinds of children, as the API spells them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            /// Every kind, in the table's order.
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }
        }

        /// A child of any kind.
        // A pass holds a dozen of these for its duration; boxing buys nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug)]
        pub enum Object {
            $($kind($object),)*
        }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$kind(_) => Kind::$kind,)*
                }
            }

            pub fn name(&self) -> String {
                match self {
                    $(Object::$kind(object) => object.name_any(),)*
                }
            }

            /// The object with its desired hash set, as it is applied and
            /// compared (see [`Hashed`]).
            pub fn with_desired_hash(self) -> Self {
                match self {
                    $(Object::$kind(object) => Object::$kind(object.with_desired_hash()),)*
                }
            }

            /// Which step of the migrations the object is, by its label.
            pub fn step(&self) -> Option<crate::children::JobStep> {
                crate::children::JobStep::of(match self {
                    $(Object::$kind(object) => object.labels(),)*
                })
            }

            /// The object as YAML-ready JSON, for `appstack render`.
            pub fn to_value(&self) -> serde_json::Value {
                match self {
                    $(Object::$kind(object) => serde_json::to_value(object),)*
                }
                .expect("children always serialize")
            }
        }

        /// One marker type per kind, implementing [`ChildKind`].
        pub mod markers {
            $(
                #[doc = concat!("The ", $name, " kind.")]
                pub struct $kind;
            )*
        }

        $(
            impl ChildKind for markers::$kind {
                type Object = $object;
                const KIND: Kind = Kind::$kind;
                const DISCOVERED: bool = discovered!($watch);

                fn dynamic_type() -> <$object as Resource>::DynamicType {
                    $dyntype
                }

                fn api(
                    client: Client,
                    namespace: &str,
                    dyntype: &<$object as Resource>::DynamicType,
                ) -> Api<$object> {
                    api_of!($dyntype)(client, namespace, dyntype)
                }

                fn wrap(object: $object) -> Object {
                    Object::$kind(object)
                }
            }
        )*
    };
}
for_each_kind!(define_kinds);

/// Matches an [`Object`], giving each arm its object as `$inner` and its
/// kind's marker type as `$marker`: `match_object!(object, K, inner =>
/// apply::<K>(inner))`.
macro_rules! match_object {
    (($object:expr, $marker:ident, $inner:ident => $body:expr) $(
        $kind:ident: $type:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        match $object {
            $($crate::kinds::Object::$kind($inner) => {
                #[allow(dead_code)]
                type $marker = $crate::kinds::markers::$kind;
                $body
            })*
        }
    };
    ($object:expr, $marker:ident, $inner:ident => $body:expr) => {
        $crate::kinds::for_each_kind!(
            $crate::kinds::match_object, $object, $marker, $inner => $body
        )
    };
}
pub(crate) use match_object;

/// Matches a [`Kind`], giving each arm its marker type as `$marker`:
/// `match_kind!(kind, K => delete::<K>(name))`.
macro_rules! match_kind {
    (($value:expr, $marker:ident => $body:expr) $(
        $kind:ident: $type:ty = $name:literal in $field:ident,
            dyntype $dyntype:tt, watch $watch:ident, sweep $sweep:ident;
    )*) => {
        match $value {
            $($crate::kinds::Kind::$kind => {
                type $marker = $crate::kinds::markers::$kind;
                $body
            })*
        }
    };
    ($value:expr, $marker:ident => $body:expr) => {
        $crate::kinds::for_each_kind!($crate::kinds::match_kind, $value, $marker => $body)
    };
}
pub(crate) use match_kind;

// Only the kinds of optional APIs wait for discovery.
const _: () = assert!(
    markers::ServiceMonitor::DISCOVERED
        && markers::HttpRoute::DISCOVERED
        && markers::VolumeSnapshot::DISCOVERED
        && !markers::Deployment::DISCOVERED
        && !markers::Secret::DISCOVERED
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_as_the_api_spells_it() {
        let names: std::collections::BTreeSet<_> =
            Kind::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(names.len(), Kind::ALL.len());
        assert!(names.contains("HTTPRoute"));
    }
}
