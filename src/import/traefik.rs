//! What a service's traefik labels say: its routers (`Host()` and
//! `PathPrefix()` rules, TLS) and the port its load balancer reaches. The
//! frontend's exposure and the workloads' ports both read them.

use super::facts::Facts;

/// A traefik router of a service: its host names, path prefix and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) hosts: Vec<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) tls: bool,
    pub(super) cert_resolver: Option<String>,
}

fn traefik_enabled(facts: &Facts) -> bool {
    !facts
        .labels()
        .iter()
        .any(|(key, value)| *key == "traefik.enable" && value.eq_ignore_ascii_case("false"))
}

/// The arguments of `function(` … `)` in a traefik rule: each quoted
/// with backticks or double quotes.
fn rule_arguments(rule: &str, function: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = rule;
    while let Some(start) = rest.find(&format!("{function}(")) {
        let inside = &rest[start + function.len() + 1..];
        let end = inside.find(')').unwrap_or(inside.len());
        for argument in inside[..end].split(',') {
            let argument = argument.trim().trim_matches(['`', '"', '\'']);
            if !argument.is_empty() {
                found.push(argument.to_string());
            }
        }
        rest = &inside[end..];
    }
    found
}

/// The traefik routers of a service (`traefik.http.routers.NAME.*`).
pub(super) fn traefik_routes(facts: &Facts) -> Vec<Route> {
    if !traefik_enabled(facts) {
        return Vec::new();
    }
    let mut routes: Vec<(String, Route)> = Vec::new();
    for (key, value) in facts.labels() {
        let Some(rest) = key.strip_prefix("traefik.http.routers.") else {
            continue;
        };
        let Some((router, setting)) = rest.split_once('.') else {
            continue;
        };
        let index = match routes.iter().position(|(name, _)| name == router) {
            Some(index) => index,
            None => {
                routes.push((router.to_string(), Route::default()));
                routes.len() - 1
            }
        };
        let route = &mut routes[index].1;
        match setting {
            "rule" => {
                route.hosts = rule_arguments(value, "Host");
                route.path_prefix = rule_arguments(value, "PathPrefix").into_iter().next();
            }
            "tls" => route.tls = value.eq_ignore_ascii_case("true"),
            "tls.certresolver" => {
                route.tls = true;
                route.cert_resolver = Some(value.to_string());
            }
            _ => {}
        }
    }
    routes
        .into_iter()
        .map(|(_, route)| route)
        .filter(|route| !route.hosts.is_empty())
        .collect()
}

/// `traefik.http.services.NAME.loadbalancer.server.port`: the port the
/// container serves traefik on.
pub(super) fn load_balancer_port(facts: &Facts) -> Option<u16> {
    if !traefik_enabled(facts) {
        return None;
    }
    facts.labels().into_iter().find_map(|(key, value)| {
        let rest = key.strip_prefix("traefik.http.services.")?;
        rest.ends_with(".loadbalancer.server.port")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::compose::service_from_yaml;
    use crate::import::dotenv::EnvMap;

    fn routes(yaml: &str) -> (Vec<Route>, Option<u16>) {
        let service = service_from_yaml(yaml);
        let env = EnvMap::new();
        let facts = Facts {
            name: "web",
            service: &service,
            env: &env,
        };
        (traefik_routes(&facts), load_balancer_port(&facts))
    }

    #[test]
    fn traefik_labels_give_hosts_paths_tls_and_the_port() {
        let (found, port) = routes(
            "labels:\n\
             - traefik.enable=true\n\
             - traefik.http.services.api.loadbalancer.server.port=8000\n\
             - traefik.http.routers.api-http.rule=Host(`api.example.com`) && PathPrefix(`/v1`)\n\
             - traefik.http.routers.api-https.rule=Host(`api.example.com`, `www.example.com`)\n\
             - traefik.http.routers.api-https.tls.certresolver=le\n",
        );
        assert_eq!(port, Some(8000));
        assert_eq!(
            found,
            [
                Route {
                    hosts: vec!["api.example.com".into()],
                    path_prefix: Some("/v1".into()),
                    tls: false,
                    cert_resolver: None
                },
                Route {
                    hosts: vec!["api.example.com".into(), "www.example.com".into()],
                    path_prefix: None,
                    tls: true,
                    cert_resolver: Some("le".into())
                }
            ]
        );
        let (disabled, port) = routes(
            "labels:\n  traefik.enable: \"false\"\n  traefik.http.routers.x.rule: Host(`a.b`)\n",
        );
        assert!(disabled.is_empty() && port.is_none());
    }
}
