//! Arbitrary AppStack specs, as JSON: mostly within what the CRD's schema
//! says, near its limits (names of 44 characters, label values of 63,
//! Unicode text, the largest numbers allowed), and now and then outside it,
//! so what the schema lets through but a child cannot hold shows up.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// An object of the fields that are present.
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .collect::<Map<_, _>>(),
    )
}

/// Mostly `usual`, sometimes `unusual` (about one in twenty).
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    usual: impl Strategy<Value = T> + 'static,
    unusual: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![19 => usual, 1 => unusual].boxed()
}

/// Mostly `usual`, rarely `unusual` (about one in a hundred): for what is
/// drawn many times in one stack, such as list items and map entries.
fn rarely<T: std::fmt::Debug + Clone + 'static>(
    usual: impl Strategy<Value = T> + 'static,
    unusual: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![99 => usual, 1 => unusual].boxed()
}

/// A long text of `length` characters, cheap to draw: one character
/// (ASCII, or from the astral planes, four bytes in UTF-8) repeated.
fn long(length: std::ops::RangeInclusive<usize>, wide: bool) -> BoxedStrategy<String> {
    let character = if wide {
        proptest::char::range('\u{10000}', '\u{10ffff}').boxed()
    } else {
        proptest::char::range('a', 'z').boxed()
    };
    (character, length)
        .prop_map(|(character, length)| std::iter::repeat_n(character, length).collect())
        .boxed()
}

/// Text: mostly printable Unicode (now and then empty or long), rarely
/// anything at all (control characters, noncharacters).
pub fn text() -> BoxedStrategy<String> {
    rarely(
        prop_oneof![
            8 => "\\PC{0,24}",
            1 => Just(String::new()),
            1 => long(200..=600, false),
        ],
        prop_oneof![
            any::<String>(),
            vec(any::<char>(), 0..80).prop_map(String::from_iter),
        ],
    )
}

/// A DNS-1035 label of 1 to `max` characters, often exactly `max`.
fn dns_label(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[a-z]([-a-z0-9]{{0,{}}}[a-z0-9])?", max - 2)).unwrap(),
        1 => proptest::string::string_regex(&format!("[a-z][-a-z0-9]{{{}}}[a-z0-9]", max - 2)).unwrap(),
    ]
    .boxed()
}

/// A DNS subdomain such as a Secret or StorageClass name.
fn dns_subdomain() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![
            4 => "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,2}",
            1 => "[a-z0-9]{63}(\\.[a-z0-9]{63}){2}\\.[a-z0-9]{1,61}",
        ],
        prop_oneof![text(), "[A-Za-z0-9_.-]{1,40}", long(254..=260, false)],
    )
}

/// A label or annotation key: a qualified name, with or without a prefix.
fn qualified_name() -> BoxedStrategy<String> {
    let name = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
    rarely(
        prop_oneof![
            3 => name.prop_map(String::from),
            2 => (
                "[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?(\\.[a-z0-9]{1,12}){0,2}",
                name
            )
                .prop_map(|(prefix, name)| format!("{prefix}/{name}")),
            1 => ("[a-z]{63}\\.[a-z]{63}\\.[a-z]{63}\\.[a-z]{61}", name)
                .prop_map(|(prefix, name)| format!("{prefix}/{name}")),
        ],
        prop_oneof![
            text(),
            "[a-z]{64}",
            "[a-z]{2}/[a-z]{2}/[a-z]{2}",
            "[a-z]{254}/a",
            "kubernetes\\.io/[a-z]{1,8}"
        ],
    )
}

fn label_value() -> BoxedStrategy<String> {
    rarely(
        prop_oneof![
            3 => "(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?",
            1 => "[A-Za-z0-9][-A-Za-z0-9_.]{61}[A-Za-z0-9]",
        ],
        prop_oneof![text(), "[a-z]{64,80}", "-[a-z]{1,5}"],
    )
}

fn labels() -> BoxedStrategy<Value> {
    mostly(
        btree_map(qualified_name(), label_value(), 0..6).prop_map(|map| json!(map)),
        prop_oneof![
            Just(Value::Null),
            btree_map(qualified_name(), label_value(), 20..70).prop_map(|map| json!(map)),
        ],
    )
}

fn annotations() -> BoxedStrategy<Value> {
    let value = prop_oneof![
        6 => text(),
        1 => long(4000..=4096, false),
        1 => long(1000..=1024, true),
        1 => Just("unconfined".to_string()),
        1 => Just("runtime/default".to_string()),
        1 => Just("localhost/profile".to_string()),
    ];
    let key = rarely(
        qualified_name(),
        prop_oneof![
            "container\\.apparmor\\.security\\.beta\\.kubernetes\\.io/(backend|frontend|migrate|other)",
            Just("seccomp.security.alpha.kubernetes.io/pod".to_string()),
        ],
    );
    mostly(
        btree_map(key, value, 0..6).prop_map(|map| json!(map)),
        prop_oneof![
            Just(Value::Null),
            btree_map(qualified_name(), long(4000..=4096, false), 60..70)
                .prop_map(|map| json!(map)),
        ],
    )
}

/// A container image reference.
fn image() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![
            4 => "[a-z0-9]{1,10}(\\.[a-z]{2,5}(:[0-9]{2,5})?/)?([a-z0-9]{1,12}/){0,2}[a-z0-9._-]{1,20}(:[A-Za-z0-9_.-]{1,20})?",
            1 => "[a-z0-9]{1,20}@sha256:[0-9a-f]{64}",
            1 => "[!-~]{1,512}",
        ],
        prop_oneof![
            vec(any::<char>(), 1..20).prop_map(String::from_iter),
            "[!-~]{1,10}[\u{a0}\u{85}\u{2028}\u{3000}\u{0b}][!-~]{0,10}",
            "[!-~]{1,5}",
        ],
    )
}

/// A Kubernetes quantity, mostly as text, now and then as a JSON number.
fn quantity() -> BoxedStrategy<Value> {
    mostly(
        prop_oneof![
            4 => "([0-9]{1,4}(\\.[0-9]{0,3})?|\\.[0-9]{1,3})(m|k|M|G|T|Ki|Mi|Gi|Ti)?".prop_map(Value::from),
            1 => "[0-9]{1,3}e[0-9]{1,2}".prop_map(Value::from),
            1 => (0i64..100_000).prop_map(Value::from),
        ],
        prop_oneof![
            "[+-]?[0-9]{1,40}(\\.[0-9]{0,40})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,4})?"
                .prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0.0f64..1e6).prop_map(Value::from),
            text().prop_map(Value::from),
        ],
    )
}

/// A whole number of bytes, as memory and storage are given.
fn bytes() -> BoxedStrategy<Value> {
    mostly(
        prop_oneof![
            4 => "[1-9][0-9]{0,3}(Ki|Mi|Gi|Ti|k|M|G|T)?".prop_map(Value::from),
            1 => (1i64..1_000_000_000).prop_map(Value::from),
            1 => prop_oneof![Just(json!("8191Ti")), Just(json!("8Pi")), Just(json!("9040Ti"))],
        ],
        quantity(),
    )
}

fn resources() -> BoxedStrategy<Value> {
    let quantities = vec(
        rarely(
            prop_oneof![
                (Just("cpu".to_string()), quantity()),
                (Just("memory".to_string()), bytes()),
                (Just("ephemeral-storage".to_string()), bytes()),
            ],
            (
                prop_oneof![
                    Just("hugepages-2Mi".to_string()),
                    Just("example.com/gpu".to_string()),
                    Just("pods".to_string()),
                    text(),
                ],
                quantity(),
            ),
        ),
        0..4,
    )
    .prop_map(|entries| json!(entries.into_iter().collect::<BTreeMap<_, _>>()));
    prop_oneof![
        3 => quantities.clone().prop_map(|requests| json!({"requests": requests})),
        3 => quantities.clone().prop_map(|limits| json!({"limits": limits})),
        2 => quantities.clone().prop_map(|both| json!({"requests": both, "limits": both})),
        1 => (quantities.clone(), quantities).prop_map(|(requests, limits)| json!({"requests": requests, "limits": limits})),
        1 => Just(json!({"requests": null, "limits": {}})),
    ]
    .boxed()
}

fn command() -> BoxedStrategy<Value> {
    vec(text(), 1..6).prop_map(|items| json!(items)).boxed()
}

fn http_path() -> BoxedStrategy<String> {
    mostly(
        "/[-a-zA-Z0-9_./~%]{0,40}",
        prop_oneof![
            "/\\PC{0,40}".prop_filter("no whitespace, ? or #", |path: &String| !path
                .contains(|c: char| c.is_ascii_whitespace() || c == '?' || c == '#')),
            long(1000..=1023, false).prop_map(|path| format!("/{path}")),
            text(),
        ],
    )
}

fn run_as_user() -> BoxedStrategy<Value> {
    mostly(
        prop_oneof![
            (1i64..70_000).prop_map(Value::from),
            Just(json!(2_147_483_647))
        ],
        prop_oneof![Just(json!(0)), any::<i64>().prop_map(Value::from)],
    )
}

fn replicas() -> BoxedStrategy<Value> {
    mostly(
        (0i64..=100).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    )
}

fn port() -> BoxedStrategy<Value> {
    mostly(
        prop_oneof![(1i64..=65535).prop_map(Value::from), Just(json!(65535))],
        any::<i64>().prop_map(Value::from),
    )
}

fn database() -> BoxedStrategy<Value> {
    let managed = (
        option::of(image().prop_map(Value::from)),
        option::of(bytes()),
        option::of(dns_subdomain().prop_map(Value::from)),
        option::of(prop_oneof![Just("Retain"), Just("Delete")].prop_map(Value::from)),
        option::of(resources()),
    )
        .prop_map(|(image, size, class, policy, resources)| {
            let storage = (size.is_some() || class.is_some())
                .then(|| object(vec![("size", size), ("storageClassName", class)]));
            json!({"managed": object(vec![
                ("image", image),
                ("storage", storage),
                ("deletionPolicy", policy),
                ("resources", resources),
            ])})
        });
    let external = (dns_subdomain(), "[-._a-zA-Z0-9]{1,40}")
        .prop_map(|(name, key)| json!({"external": {"urlSecretRef": {"name": name, "key": key}}}));
    let name = mostly(
        "[a-z_][a-z0-9_]{0,62}".prop_map(Value::from),
        text().prop_map(Value::from),
    );
    let pool = (1i64..=10_000, 1i64..=3600)
        .prop_map(|(size, timeout)| json!({"size": size, "timeoutSeconds": timeout}));
    (
        prop_oneof![3 => managed, 1 => external],
        option::of(name),
        option::of(pool),
    )
        .prop_map(|(mut database, name, pool)| {
            let fields = database.as_object_mut().unwrap();
            for (key, value) in [("name", name), ("pool", pool)] {
                if let Some(value) = value {
                    fields.insert(key.into(), value);
                }
            }
            database
        })
        .boxed()
}

fn migrations() -> BoxedStrategy<Value> {
    (
        (
            option::of(image().prop_map(Value::from)),
            option::of(command()),
            option::of(vec(text(), 0..4).prop_map(|args| json!(args))),
            option::of((0i64..=20).prop_map(Value::from)),
            option::of((1i64..=86_400).prop_map(Value::from)),
            option::of("\\PC{0,63}".prop_map(Value::from)),
        ),
        (
            option::of(resources()),
            option::of(labels()),
            option::of(annotations()),
            option::of(run_as_user()),
            option::of(dns_subdomain().prop_map(Value::from)),
            option::of(
                prop_oneof![
                    Just("SELECT version_num FROM alembic_version"),
                    Just("with x as (select 1) select * from x"),
                ]
                .prop_map(Value::from),
            ),
        ),
    )
        .prop_map(
            |(
                (image, command, args, backoff, deadline, retry),
                (resources, labels, annotations, user, account, query),
            )| {
                object(vec![
                    ("image", image),
                    ("command", command),
                    ("args", args),
                    ("backoffLimit", backoff),
                    ("activeDeadlineSeconds", deadline),
                    ("retryToken", retry),
                    ("resources", resources),
                    ("podLabels", labels),
                    ("podAnnotations", annotations),
                    ("runAsUser", user),
                    ("serviceAccountName", account),
                    ("revisionQuery", query),
                ])
            },
        )
        .boxed()
}

/// The fields backend and frontend share.
fn workload() -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    (
        (
            image().prop_map(Value::from),
            option::of(command()),
            option::of(vec(text(), 0..4).prop_map(|args| json!(args))),
            option::of(replicas()),
            option::of(port()),
        ),
        (
            option::of(resources()),
            option::of(labels()),
            option::of(annotations()),
            option::of(http_path().prop_map(|path| json!({ "path": path }))),
            option::of(run_as_user()),
        ),
    )
        .prop_map(
            |(
                (image, command, args, replicas, port),
                (resources, labels, annotations, health, user),
            )| {
                vec![
                    ("image", Some(image)),
                    ("command", command),
                    ("args", args),
                    ("replicas", replicas),
                    ("port", port),
                    ("resources", resources),
                    ("podLabels", labels),
                    ("podAnnotations", annotations),
                    ("health", health),
                    ("runAsUser", user),
                ]
            },
        )
}

fn env_name() -> BoxedStrategy<String> {
    rarely(
        prop_oneof![
            4 => "[A-Za-z_][A-Za-z0-9_]{0,20}",
            1 => "[A-Za-z_][A-Za-z0-9_]{127}",
        ],
        prop_oneof![
            Just("DATABASE_URL".to_string()),
            text(),
            "[A-Za-z_][A-Za-z0-9_]{128}"
        ],
    )
}

fn env() -> BoxedStrategy<Value> {
    let source = prop_oneof![
        4 => text().prop_map(|value| json!({"value": value})),
        1 => long(10_000..=20_000, false).prop_map(|value| json!({"value": value})),
        2 => option::of(16i64..=256).prop_map(|length| match length {
            Some(length) => json!({"generate": {"length": length}}),
            None => json!({"generate": {}}),
        }),
        2 => (dns_subdomain(), "[-._a-zA-Z0-9]{1,40}").prop_map(|(name, key)| {
            json!({"valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
        }),
    ];
    btree_map(env_name(), source, 0..12)
        .prop_map(|entries| {
            Value::Array(
                entries
                    .into_iter()
                    .map(|(name, mut source)| {
                        source["name"] = json!(name);
                        source
                    })
                    .collect(),
            )
        })
        .boxed()
}

fn monitoring() -> BoxedStrategy<Value> {
    (any::<bool>(), option::of(labels()))
        .prop_map(|(enabled, labels)| {
            json!({"serviceMonitor": object(vec![("enabled", Some(json!(enabled))), ("labels", labels)])})
        })
        .boxed()
}

/// `spec.expose` by an Ingress: the HTTPRoute of a gateway needs the
/// Gateway API's CRDs, which the property test's cluster does not serve.
fn expose() -> BoxedStrategy<Value> {
    let host = mostly(
        "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,3}",
        prop_oneof![
            "[a-z0-9]{63}(\\.[a-z0-9]{63}){2}\\.[a-z0-9]{1,61}",
            "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
            text(),
        ],
    );
    let api_path = mostly(
        "/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,20}(/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,20}){0,3}",
        prop_oneof![Just("/".to_string()), http_path()],
    );
    let tls = prop_oneof![
        dns_subdomain().prop_map(|name| json!({"secretName": name})),
        dns_subdomain().prop_map(|name| json!({"clusterIssuer": name})),
    ];
    let ingress = (option::of(dns_subdomain()), option::of(annotations())).prop_map(
        |(class, annotations)| {
            object(vec![
                ("className", class.map(Value::from)),
                ("annotations", annotations),
            ])
        },
    );
    (
        host,
        option::of(api_path),
        option::of(tls),
        option::of(ingress),
    )
        .prop_map(|(host, api_path, tls, ingress)| {
            object(vec![
                ("host", Some(json!(host))),
                ("apiPath", api_path.map(Value::from)),
                ("tls", tls),
                ("ingress", ingress),
            ])
        })
        .boxed()
}

fn network_policy() -> BoxedStrategy<Value> {
    let selector = labels().prop_map(|labels| json!({"matchLabels": labels}));
    let peer = prop_oneof![
        selector
            .clone()
            .prop_map(|selector| json!({"namespaceSelector": selector})),
        selector
            .clone()
            .prop_map(|selector| json!({"podSelector": selector})),
        (selector.clone(), selector).prop_map(
            |(namespaces, pods)| json!({"namespaceSelector": namespaces, "podSelector": pods})
        ),
    ];
    let cidr = mostly(
        prop_oneof![
            (0u8..=255, 0u8..=255, 0u8..=32)
                .prop_map(|(a, b, bits)| format!("10.{a}.{b}.0/{}", bits.max(24))),
            (0u16..=0xffff, 48u8..=128)
                .prop_map(|(group, bits)| format!("fd00:{group:x}::/{bits}")),
        ],
        prop_oneof!["[0-9./:a-f]{1,43}", text()],
    );
    let egress = (
        1i64..=65535,
        prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")],
    )
        .prop_map(|(port, protocol)| json!({"ports": [{"port": port, "protocol": protocol}]}));
    (
        option::of(any::<bool>()),
        option::of(peer.clone()),
        option::of(peer),
        option::of(vec(cidr, 0..4)),
        option::of(vec(egress, 0..3)),
    )
        .prop_map(|(enabled, expose_from, metrics_from, cidrs, egress)| {
            object(vec![
                ("enabled", enabled.map(Value::from)),
                ("exposeFrom", expose_from),
                ("metricsFrom", metrics_from),
                ("databaseCIDRs", cidrs.map(|cidrs| json!(cidrs))),
                ("backendEgress", egress.map(|egress| json!(egress))),
            ])
        })
        .boxed()
}

/// An AppStack named by a DNS-1035 label of up to 44 characters, in
/// `namespace`.
pub fn stack(namespace: String) -> BoxedStrategy<Value> {
    let backend = (
        workload(),
        option::of(dns_subdomain().prop_map(Value::from)),
        option::of(
            (http_path(), "[0-9]{1,3}(s|m|h)|1h30m|0")
                .prop_map(|(path, interval)| json!({"path": path, "interval": interval})),
        ),
    )
        .prop_map(|(mut fields, account, metrics)| {
            fields.push(("metrics", metrics));
            fields.push(("serviceAccountName", account));
            object(fields)
        });
    let frontend = (workload(), option::of(env_name().prop_map(Value::from))).prop_map(
        |(mut fields, api_url_env)| {
            fields.push(("apiUrlEnv", api_url_env));
            object(fields)
        },
    );
    (
        dns_label(44),
        database(),
        option::of(migrations()),
        backend,
        option::of(frontend),
        option::of(env()),
        option::of(monitoring()),
        option::of(expose()),
        option::of(network_policy()),
    )
        .prop_map(
            move |(
                name,
                database,
                migrations,
                backend,
                frontend,
                env,
                monitoring,
                expose,
                network_policy,
            )| {
                json!({
                    "apiVersion": "appstack.dev/v1alpha1",
                    "kind": "AppStack",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": object(vec![
                        ("database", Some(database)),
                        ("migrations", migrations),
                        ("backend", Some(backend)),
                        ("frontend", frontend),
                        ("env", env),
                        ("monitoring", monitoring),
                        ("expose", expose),
                        ("networkPolicy", network_policy),
                    ]),
                })
            },
        )
        .boxed()
}
