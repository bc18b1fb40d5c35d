//! The shape of the deployment files: Grafana dashboards, datasources and alert rules (uids
//! unique, every datasource uid resolves), the compose file through Docker Compose itself, the
//! Dockerfiles through hadolint, and the Kubernetes manifests against the Kubernetes schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use routewatch_deploy_check::{
    dashboards, datasource_uids, deploy, docker_compose, files, grafana_alert_groups, kubernetes_validate, output,
    panels, read, repo_root, to_json, tool, yaml, yaml_documents,
};
use serde_json::Value as Json;

/// Grafana's own datasources, which need no provisioning.
const BUILTIN_DATASOURCES: &[&str] = &["-- Grafana --", "grafana"];
/// The uid of Grafana's server-side expressions in alert rules.
const EXPRESSION_DATASOURCE: &str = "__expr__";
/// The services the stack is made of.
const SERVICES: &[&str] = &["kafka", "simulator", "host", "prometheus", "alertmanager", "grafana"];

fn uid_ok(uid: &str) -> bool {
    (1..=40).contains(&uid.len()) && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn resolves(datasource: &Json, uids: &BTreeSet<String>) -> Result<(), String> {
    let uid = datasource["uid"].as_str().ok_or_else(|| format!("datasource without a uid: {datasource}"))?;
    if uids.contains(uid) || BUILTIN_DATASOURCES.contains(&uid) {
        Ok(())
    } else {
        Err(format!("datasource uid {uid:?} is not provisioned (provisioned: {uids:?})"))
    }
}

#[test]
fn datasources_have_fixed_unique_uids_and_point_at_the_compose_prometheus() {
    let uids = datasource_uids();
    assert!(uids.contains("prometheus"), "{uids:?}");
    for path in files("grafana/provisioning/datasources", &["yml", "yaml"]) {
        let doc = to_json(&yaml(&path));
        assert_eq!(doc["apiVersion"], 1, "{}", path.display());
        for ds in doc["datasources"].as_array().unwrap() {
            assert!(uid_ok(ds["uid"].as_str().unwrap()), "{}: bad uid {}", path.display(), ds["uid"]);
            if ds["type"] == "prometheus" {
                assert_eq!(ds["url"], "http://prometheus:9090", "the compose service and its port");
            }
        }
    }
}

#[test]
fn dashboards_are_well_formed_with_unique_uids_and_resolving_datasources() {
    let uids = datasource_uids();
    let mut dashboard_uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let all = dashboards();
    assert!(all.len() >= 3, "fleet, plugins and pipeline dashboards");
    for (path, dash) in &all {
        let at = path.display();
        let uid = dash["uid"].as_str().unwrap_or_else(|| panic!("{at}: no uid"));
        assert!(uid_ok(uid), "{at}: uid {uid:?} is not 1-40 letters, digits, - or _");
        assert!(dashboard_uids.insert(uid.to_owned()), "{at}: dashboard uid {uid} used twice");
        assert!(titles.insert(dash["title"].as_str().expect("title").to_owned()), "{at}: title used twice");
        assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{at}: schemaVersion");
        assert!(dash["id"].is_null(), "{at}: provisioned dashboards carry no database id");

        for variable in dash["templating"]["list"].as_array().into_iter().flatten() {
            if variable["type"] == "query" {
                resolves(&variable["datasource"], &uids).unwrap_or_else(|e| panic!("{at}: variable: {e}"));
            }
        }
        for annotation in dash["annotations"]["list"].as_array().into_iter().flatten() {
            resolves(&annotation["datasource"], &uids).unwrap_or_else(|e| panic!("{at}: annotation: {e}"));
        }

        let mut ids = BTreeSet::new();
        let mut cells: Vec<(String, [u64; 4])> = Vec::new();
        for panel in panels(dash) {
            let title = panel["title"].as_str().unwrap_or_else(|| panic!("{at}: a panel without a title"));
            let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{at}: {title}: no id"));
            assert!(ids.insert(id), "{at}: panel id {id} used twice");
            let grid = &panel["gridPos"];
            let [x, y, w, h] =
                ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or_else(|| panic!("{at}: {title}: gridPos.{k}")));
            assert!(w >= 1 && h >= 1 && x + w <= 24, "{at}: {title}: gridPos {grid} is off the 24-column grid");
            for (other, [ox, oy, ow, oh]) in &cells {
                let overlap = x < ox + ow && ox < &(x + w) && y < oy + oh && oy < &(y + h);
                assert!(!overlap, "{at}: {title} overlaps {other}");
            }
            cells.push((title.to_owned(), [x, y, w, h]));
            if panel["type"] == "row" {
                continue;
            }
            assert!(panel["type"].is_string(), "{at}: {title}: no type");
            resolves(&panel["datasource"], &uids).unwrap_or_else(|e| panic!("{at}: {title}: {e}"));
            let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{at}: {title}: no targets"));
            assert!(!targets.is_empty(), "{at}: {title}: no targets");
            let mut ref_ids = BTreeSet::new();
            for target in targets {
                let ref_id =
                    target["refId"].as_str().unwrap_or_else(|| panic!("{at}: {title}: a target without refId"));
                assert!(ref_ids.insert(ref_id), "{at}: {title}: refId {ref_id} used twice");
                let expr = target["expr"].as_str().unwrap_or("");
                assert!(!expr.trim().is_empty(), "{at}: {title}/{ref_id}: empty expression");
                if !target["datasource"].is_null() {
                    resolves(&target["datasource"], &uids).unwrap_or_else(|e| panic!("{at}: {title}/{ref_id}: {e}"));
                }
            }
            // Overrides that pick a query by refId must name one of the panel's queries.
            for o in panel["fieldConfig"]["overrides"].as_array().into_iter().flatten() {
                if o["matcher"]["id"] == "byFrameRefID" {
                    let wanted = o["matcher"]["options"].as_str().unwrap_or("");
                    assert!(ref_ids.contains(wanted), "{at}: {title}: override for missing query {wanted}");
                }
            }
        }
    }
}

#[test]
fn dashboards_provider_reads_the_folder_compose_mounts() {
    let provider = to_json(&yaml(&deploy("grafana/provisioning/dashboards/routewatch.yml")));
    assert_eq!(provider["apiVersion"], 1);
    let path = provider["providers"][0]["options"]["path"].as_str().expect("provider path");
    let compose = to_json(&yaml(&deploy("compose.yaml")));
    let mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_array()
        .expect("grafana volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts.iter().any(|m| m.starts_with("./grafana/dashboards:") && m.split(':').nth(1) == Some(path)),
        "compose.yaml must mount ./grafana/dashboards at {path}: {mounts:?}"
    );
}

#[test]
fn grafana_alert_rules_are_well_formed_and_their_datasources_resolve() {
    let uids = datasource_uids();
    let mut rule_uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let groups = grafana_alert_groups();
    assert!(!groups.is_empty());
    for path in files("grafana/provisioning/alerting", &["yml", "yaml"]) {
        assert_eq!(to_json(&yaml(&path))["apiVersion"], 1, "{}", path.display());
    }
    for (path, group) in &groups {
        let at = format!("{} / group {}", path.display(), group["name"]);
        for key in ["name", "folder", "interval"] {
            assert!(group[key].is_string(), "{at}: no {key}");
        }
        assert!(group["orgId"].is_u64(), "{at}: no orgId");
        let rules = group["rules"].as_array().unwrap_or_else(|| panic!("{at}: no rules"));
        assert!(!rules.is_empty(), "{at}: no rules");
        for rule in rules {
            let uid = rule["uid"].as_str().unwrap_or_else(|| panic!("{at}: a rule without uid"));
            let at = format!("{at} / {uid}");
            assert!(uid_ok(uid), "{at}: bad uid");
            assert!(rule_uids.insert(uid.to_owned()), "{at}: rule uid used twice");
            let title = rule["title"].as_str().unwrap_or_else(|| panic!("{at}: no title"));
            assert!(
                titles.insert((group["folder"].to_string(), title.to_owned())),
                "{at}: title used twice in the folder"
            );
            assert!(
                ["OK", "NoData", "Alerting"].contains(&rule["noDataState"].as_str().unwrap_or("")),
                "{at}: noDataState"
            );
            assert!(
                ["OK", "Error", "Alerting"].contains(&rule["execErrState"].as_str().unwrap_or("")),
                "{at}: execErrState"
            );
            let for_ = rule["for"].as_str().unwrap_or_else(|| panic!("{at}: no for"));
            assert!(
                for_.ends_with(['s', 'm', 'h']) && for_[..for_.len() - 1].parse::<u32>().is_ok(),
                "{at}: for {for_:?}"
            );
            let data = rule["data"].as_array().unwrap_or_else(|| panic!("{at}: no data"));
            let ref_ids: BTreeSet<&str> = data.iter().filter_map(|d| d["refId"].as_str()).collect();
            assert_eq!(ref_ids.len(), data.len(), "{at}: every query needs its own refId");
            let condition = rule["condition"].as_str().unwrap_or("");
            assert!(ref_ids.contains(condition), "{at}: condition {condition:?} is none of {ref_ids:?}");
            let mut queries = 0;
            for query in data {
                let ds =
                    query["datasourceUid"].as_str().unwrap_or_else(|| panic!("{at}: a query without datasourceUid"));
                assert_eq!(query["model"]["refId"], query["refId"], "{at}: model.refId");
                if ds == EXPRESSION_DATASOURCE {
                    let input = query["model"]["expression"].as_str().unwrap_or("");
                    assert!(
                        ref_ids.contains(input),
                        "{at}: expression {} reads {input:?}, no such query",
                        query["refId"]
                    );
                } else {
                    assert!(uids.contains(ds), "{at}: datasourceUid {ds:?} is not provisioned ({uids:?})");
                    assert!(query["model"]["expr"].as_str().is_some_and(|e| !e.is_empty()), "{at}: no expr");
                    assert!(query["relativeTimeRange"]["from"].as_u64().is_some_and(|f| f > 0), "{at}: time range");
                    queries += 1;
                }
            }
            assert!(queries > 0, "{at}: no datasource query");
            if let Some(dashboard) = rule["annotations"]["__dashboardUid__"].as_str() {
                assert!(dashboards().iter().any(|(_, d)| d["uid"] == dashboard), "{at}: dashboard {dashboard} missing");
            }
        }
    }
}

/// The compose file as Docker Compose resolves it (`docker compose config`).
fn compose_config() -> Json {
    let mut cmd = docker_compose();
    cmd.arg("-f").arg(deploy("compose.yaml")).args(["config", "--format", "json"]);
    cmd.env("ROUTEWATCH_API_TOKEN", "test-token");
    serde_json::from_str(&output(&mut cmd)).expect("compose config prints JSON")
}

#[test]
fn compose_file_is_valid_for_docker_compose() {
    let config = compose_config();
    let services = config["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, SERVICES.iter().copied().collect(), "the stack's services");
    for (name, service) in services {
        let test = &service["healthcheck"]["test"];
        assert!(test.as_array().is_some_and(|t| t.len() > 1), "{name} has no health check");
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            assert!(services.contains_key(dependency), "{name} depends on unknown {dependency}");
            assert_eq!(condition["condition"], "service_healthy", "{name} must wait for {dependency} to be healthy");
        }
        if let Some(image) = service["image"].as_str().filter(|_| service["build"].is_null()) {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest", "{name}: image {image} is not pinned");
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            assert_eq!(port["host_ip"], "127.0.0.1", "{name} publishes a port beyond this machine: {port}");
        }
    }
    // The two images built from this repository, from Dockerfiles that exist.
    for name in ["host", "simulator"] {
        let build = &services[name]["build"];
        let context = Path::new(build["context"].as_str().expect("build context"));
        let dockerfile = context.join(build["dockerfile"].as_str().expect("dockerfile"));
        assert_eq!(std::fs::canonicalize(context).unwrap(), std::fs::canonicalize(repo_root()).unwrap());
        assert!(dockerfile.is_file(), "{name}: {} is missing", dockerfile.display());
    }
    // Kafka is the official image in KRaft mode (no ZooKeeper), of the version the tests run.
    let image = services["kafka"]["image"].as_str().unwrap();
    assert_eq!(image, format!("apache/kafka:{}", routewatch_testkit::KAFKA_VERSION), "compose runs another Kafka");
    assert!(services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str().unwrap().contains("controller"));
}

#[test]
fn compose_refuses_to_start_the_host_without_an_api_token() {
    let mut cmd = docker_compose();
    cmd.arg("-f").arg(deploy("compose.yaml")).args(["config", "--quiet"]).env_remove("ROUTEWATCH_API_TOKEN");
    let out = cmd.output().expect("docker compose runs");
    assert!(!out.status.success(), "compose accepted the stack without ROUTEWATCH_API_TOKEN");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROUTEWATCH_API_TOKEN"));
}

#[test]
fn compose_and_prometheus_agree_on_addresses() {
    let config = compose_config();
    let env =
        |service: &str, key: &str| config["services"][service]["environment"][key].as_str().unwrap_or("").to_owned();
    assert_eq!(env("host", "ROUTEWATCH_LISTEN"), "0.0.0.0:9400");
    assert_eq!(env("simulator", "ROUTEWATCH_SIM_LISTEN"), "0.0.0.0:8090");
    assert_eq!(env("host", "ROUTEWATCH_BROKERS"), "kafka:9092");
    assert_eq!(env("simulator", "ROUTEWATCH_BROKERS"), "kafka:9092");
    let prometheus = to_json(&yaml(&deploy("prometheus/prometheus.yml")));
    let targets: BTreeMap<&str, &str> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (job["job_name"].as_str().unwrap(), job["static_configs"][0]["targets"][0].as_str().unwrap()))
        .collect();
    assert_eq!(targets["routewatch-host"], "host:9400");
    assert_eq!(targets["routewatch-simulator"], "simulator:8090");
    assert_eq!(prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0], "alertmanager:9093");
}

/// The `ROUTEWATCH_*` variables that a program's source declares.
fn declared_variables(dir: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![repo_root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = read(&path);
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("ROUTEWATCH_") && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                        out.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_variable_the_deployments_set_is_one_the_programs_read() {
    let host = declared_variables("host/src");
    let simulator = declared_variables("simulator/src");
    let mut unread = BTreeSet::new();
    let mut checked = 0;
    let compose = compose_config();
    for (service, declared) in [("host", &host), ("simulator", &simulator)] {
        for key in compose["services"][service]["environment"].as_object().unwrap().keys() {
            checked += 1;
            if !declared.contains(key) {
                unread.insert(format!("compose.yaml sets {key} for the {service}"));
            }
        }
    }
    for path in files("k8s", &["yaml", "yml"]) {
        for doc in yaml_documents(&path) {
            let doc = to_json(&doc);
            for container in doc["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
                let (program, declared) =
                    if container["name"] == "host" { ("host", &host) } else { ("simulator", &simulator) };
                for var in container["env"].as_array().into_iter().flatten() {
                    let key = var["name"].as_str().unwrap();
                    checked += 1;
                    if !declared.contains(key) {
                        let file = path.file_name().unwrap().to_string_lossy();
                        unread.insert(format!("k8s/{file} sets {key} for the {program}"));
                    }
                }
            }
        }
    }
    assert!(checked > 10, "found only {checked} variables");
    assert!(
        unread.is_empty(),
        "variables that the program's source never reads:\n  {}",
        unread.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn dockerfiles_pass_hadolint_and_build_small_non_root_images() {
    let hadolint = tool("hadolint", "ROUTEWATCH_HADOLINT");
    for path in files("docker", &["Dockerfile"]) {
        output(Command::new(&hadolint).arg(&path));
        let text = read(&path);
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert!(stages.len() >= 2, "{}: a builder stage and a runtime stage", path.display());
        assert!(stages[0].contains("rust:") && stages[0].contains(" AS builder"), "{}: {}", path.display(), stages[0]);
        let runtime = text.rsplit("\nFROM ").next().unwrap();
        assert!(
            runtime.starts_with("debian:") && runtime.lines().next().unwrap().contains("-slim"),
            "{}",
            path.display()
        );
        let user =
            runtime.lines().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("a USER in the runtime stage");
        assert!(!["root", "0"].contains(&user.split(':').next().unwrap()), "{}: runs as {user}", path.display());
        assert!(runtime.contains("HEALTHCHECK"), "{}: no health check", path.display());
    }
    let host = read(&deploy("docker/host.Dockerfile"));
    assert!(host.contains("cargo xtask build"), "the host image is built the way `cargo xtask build` builds it");
}

/// Kubernetes versions the manifests are checked against (the oldest and newest supported).
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let manifests = files("k8s", &["yaml", "yml"]);
    for version in KUBERNETES_VERSIONS {
        let out = output(kubernetes_validate().args(["--strict", "-k", version]).args(&manifests));
        // A kind without a schema is only a warning to the tool: every resource must be checked.
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{out}");
        let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
        let resources: usize = manifests.iter().map(|p| yaml_documents(p).len()).sum();
        assert_eq!(passed, resources, "every resource validated against {version}:\n{out}");
    }
}

#[test]
fn kubernetes_names_the_kafka_version_the_tests_run() {
    let kafka = yaml_documents(&deploy("k8s/00-namespace.yaml"))
        .into_iter()
        .map(|d| to_json(&d))
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "routewatch-kafka")
        .expect("the routewatch-kafka ConfigMap");
    assert_eq!(kafka["metadata"]["annotations"]["routewatch.io/kafka-version"], routewatch_testkit::KAFKA_VERSION);
}

#[test]
fn kubernetes_catches_a_broken_manifest() {
    // The schema check has teeth: an unknown field and a wrong type are refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let host = read(&deploy("k8s/20-host.yaml"));
    std::fs::write(&bad, host.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: yes-please")).unwrap();
    let out = kubernetes_validate().args(["--strict"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "a string where a boolean belongs passed");
    std::fs::write(
        &bad,
        host.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: IfNotPresent\n          pullHarder: true"),
    )
    .unwrap();
    let out = kubernetes_validate().args(["--strict"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "an unknown field passed");
}

#[test]
fn kubernetes_workloads_have_probes_limits_scrape_annotations_and_services() {
    let mut workloads = BTreeMap::new();
    let mut services = Vec::new();
    let mut config_maps = BTreeMap::new();
    for path in files("k8s", &["yaml", "yml"]) {
        for doc in yaml_documents(&path) {
            let doc = to_json(&doc);
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            assert!(doc["metadata"]["namespace"] == "routewatch" || doc["kind"] == "Namespace", "{name}: namespace");
            match doc["kind"].as_str().unwrap() {
                "Deployment" | "StatefulSet" => {
                    workloads.insert(name, doc);
                }
                "Service" => services.push(doc),
                "ConfigMap" => {
                    config_maps.insert(name, doc);
                }
                _ => {}
            }
        }
    }
    assert_eq!(workloads.keys().map(String::as_str).collect::<Vec<_>>(), ["routewatch-host", "routewatch-simulator"]);
    for (name, workload) in &workloads {
        let pod = &workload["spec"]["template"];
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}: scrape annotation");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}: scrape path");
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}: non-root");
        let containers = spec["containers"].as_array().unwrap();
        let ports: BTreeMap<&str, u64> = containers
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
            .collect();
        let scrape_port: u64 = annotations["prometheus.io/port"].as_str().unwrap().parse().unwrap();
        assert!(ports.values().any(|&p| p == scrape_port), "{name}: scrape port {scrape_port} is not a container port");
        for container in containers.iter().chain(spec["initContainers"].as_array().into_iter().flatten()) {
            let c = container["name"].as_str().unwrap();
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(container["resources"][kind][resource].is_string(), "{name}/{c}: no {kind}.{resource}");
                }
            }
            assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{name}/{c}");
        }
        let main = &containers[0];
        assert_eq!(main["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}: liveness on /healthz");
        let readiness = if name == "routewatch-host" { "/readyz" } else { "/healthz" };
        assert_eq!(main["readinessProbe"]["httpGet"]["path"], readiness, "{name}: readiness");
        // Every selector of the workload selects its own pods.
        for (key, value) in workload["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][key], value, "{name}: selector {key}");
        }
        let service = services
            .iter()
            .find(|s| {
                s["spec"]["selector"].as_object().unwrap().iter().all(|(k, v)| &pod["metadata"]["labels"][k] == v)
            })
            .unwrap_or_else(|| panic!("{name}: no Service selects its pods"));
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(ports.contains_key(target), "{name}: Service targets port {target:?}, which no container names");
        }
    }
    // The host reads its settings from the ConfigMap: the same settings as compose's.
    let host = &workloads["routewatch-host"]["spec"]["template"]["spec"];
    let volume =
        host["volumes"].as_array().unwrap().iter().find(|v| v["configMap"].is_object()).expect("config volume");
    let map = &config_maps[volume["configMap"]["name"].as_str().unwrap()];
    assert_eq!(
        map["data"]["routewatch.toml"].as_str().unwrap(),
        read(&deploy("host/routewatch.toml")),
        "the ConfigMap's routewatch.toml differs from deploy/host/routewatch.toml"
    );
}
