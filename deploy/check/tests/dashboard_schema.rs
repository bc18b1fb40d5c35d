//! Every dashboard against the JSON Schema of Grafana's own published dashboard type (generated
//! from `@grafana/schema` of the Grafana version compose runs; see
//! `deploy/grafana/schema/README.md`), and broken copies of a real dashboard that the schema
//! must refuse, each at the pointer of what was broken. No network and no Node: the generated
//! schema is committed.

use routewatch_deploy_check::{DASHBOARD_SCHEMA_DIR, DashboardSchema, dashboards, deploy, json, to_json, yaml};
use serde_json::{Value as Json, json};

#[test]
fn every_dashboard_matches_grafanas_published_dashboard_type() {
    let schema = DashboardSchema::load();
    let all = dashboards();
    assert!(all.len() >= 3, "fleet, plugins and pipeline dashboards");
    let mut failures = Vec::new();
    for (path, dashboard) in &all {
        for error in schema.errors(dashboard) {
            failures.push(format!("{}: {error}", path.display()));
        }
    }
    assert!(failures.is_empty(), "dashboards that break Grafana's dashboard schema:\n  {}", failures.join("\n  "));
}

/// The `@grafana/schema` version that `package.json` pins, checked against the lock file.
fn pinned_grafana_schema() -> String {
    let dir = deploy(DASHBOARD_SCHEMA_DIR);
    let package = json(&dir.join("package.json"));
    let pinned = package["devDependencies"]["@grafana/schema"].as_str().expect("@grafana/schema in devDependencies");
    assert!(
        pinned.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "@grafana/schema {pinned:?} is not an exact version"
    );
    let lock = json(&dir.join("package-lock.json"));
    assert_eq!(lock["packages"]["node_modules/@grafana/schema"]["version"], pinned, "package-lock.json");
    let generator = &package["devDependencies"]["ts-json-schema-generator"];
    assert_eq!(lock["packages"]["node_modules/ts-json-schema-generator"]["version"], *generator, "package-lock.json");
    pinned.to_owned()
}

#[test]
fn the_schema_comes_from_the_grafana_version_that_compose_runs() {
    let pinned = pinned_grafana_schema();
    let compose = to_json(&yaml(&deploy("compose.yaml")));
    let image = compose["services"]["grafana"]["image"].as_str().expect("grafana image");
    assert_eq!(image, format!("grafana/grafana:{pinned}"), "bump @grafana/schema with the image and regenerate");
    let schema = DashboardSchema::load();
    let provenance = schema.schema()["$comment"].as_str().expect("the schema says where it comes from");
    assert!(
        provenance.contains(&format!("@grafana/schema {pinned} ")),
        "dashboard.schema.json was generated from another @grafana/schema than {pinned}: {provenance}"
    );
}

#[test]
fn the_schema_is_closed_except_where_grafanas_kind_is_open() {
    // A schema that accepted anything (`{}`, every field `any`) would pass every dashboard: the
    // types that matter are there, typed, and closed.
    let schema = DashboardSchema::load();
    let definitions = schema.schema()["definitions"].as_object().expect("definitions");
    for name in ["Dashboard", "Panel", "RowPanel", "GridPos", "FieldConfigSource", "DataSourceRef"] {
        let def = &definitions[name];
        assert_eq!(def["type"], "object", "{name}");
        assert_eq!(def["additionalProperties"], false, "{name} accepts unknown fields");
    }
    assert_eq!(definitions["GridPos"]["properties"]["x"]["type"], "number");
    let open: Vec<&str> = definitions
        .iter()
        .filter(|(_, def)| def["type"] == "object" && def["additionalProperties"].is_null())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(open, ["AnnotationQuery", "AnnotationTarget", "VariableModel"], "objects that accept any field");
}

/// The Fleet dashboard, and the index of its first panel that is not a row and has queries.
fn fleet() -> (Json, usize) {
    let (_, dashboard) =
        dashboards().into_iter().find(|(_, d)| d["uid"] == "routewatch-fleet").expect("the Fleet dashboard");
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["type"] != "row" && p["targets"].as_array().is_some_and(|t| !t.is_empty()))
        .expect("a panel with queries");
    (dashboard, panel)
}

/// Breaks a copy of the Fleet dashboard with `edit` (given the dashboard and the index of its
/// first query panel) and asserts that the schema reports an error at `expected(panel)` whose
/// message contains `says`.
fn refused(what: &str, edit: impl Fn(&mut Json, usize), expected: impl Fn(usize) -> String, says: &str) {
    let schema = DashboardSchema::load();
    let (mut dashboard, panel) = fleet();
    assert!(schema.errors(&dashboard).is_empty(), "the Fleet dashboard must pass before it is broken");
    edit(&mut dashboard, panel);
    let errors = schema.errors(&dashboard);
    let pointer = expected(panel);
    let listed = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ");
    assert!(
        errors.iter().any(|e| e.pointer == pointer && e.message.contains(says)),
        "{what}: no error at {pointer:?} saying {says:?}; the errors:\n  {listed}"
    );
}

#[test]
fn a_grid_position_that_is_a_string_is_refused() {
    refused(
        "gridPos a string",
        |d, p| d["panels"][p]["gridPos"] = json!("0,0,12,8"),
        |p| format!("/panels/{p}/gridPos"),
        r#"is not of type "object""#,
    );
    refused(
        "gridPos.w a string",
        |d, p| d["panels"][p]["gridPos"]["w"] = json!("12"),
        |p| format!("/panels/{p}/gridPos/w"),
        r#"is not of type "number""#,
    );
}

#[test]
fn panels_that_are_not_an_array_are_refused() {
    refused(
        "panels an object",
        |d, _| d["panels"] = json!({"first": d["panels"][0].clone()}),
        |_| "/panels".to_owned(),
        r#"is not of type "array""#,
    );
}

#[test]
fn a_panel_type_that_is_a_number_is_refused() {
    refused(
        "panel type a number",
        |d, p| d["panels"][p]["type"] = json!(7),
        |p| format!("/panels/{p}/type"),
        r#"is not of type "string" (as Panel)"#,
    );
}

#[test]
fn a_target_that_is_not_an_object_is_refused() {
    refused(
        "target a string",
        |d, p| d["panels"][p]["targets"][0] = json!("rate(routewatch_anomalies_total[5m])"),
        |p| format!("/panels/{p}/targets/0"),
        r#"is not of type "object""#,
    );
}

#[test]
fn a_title_that_is_not_a_string_is_refused() {
    refused("title a number", |d, _| d["title"] = json!(42), |_| "/title".to_owned(), r#"is not of type "string""#);
}

#[test]
fn a_misspelt_panel_field_is_refused() {
    refused(
        "fieldconfig for fieldConfig",
        |d, p| {
            let panel = d["panels"][p].as_object_mut().unwrap();
            let config = panel.remove("fieldConfig").unwrap_or(json!({}));
            panel.insert("fieldconfig".to_owned(), config);
        },
        |p| format!("/panels/{p}"),
        "'fieldconfig' was unexpected",
    );
}

#[test]
fn a_variable_refresh_outside_grafanas_enum_is_refused() {
    refused(
        "variable refresh 7",
        |d, _| d["templating"]["list"][0]["refresh"] = json!(7),
        |_| "/templating/list/0/refresh".to_owned(),
        "is not one of",
    );
}

#[test]
fn a_dashboard_without_a_schema_version_or_an_annotation_without_a_name_is_refused() {
    refused(
        "no schemaVersion",
        |d, _| drop(d.as_object_mut().unwrap().remove("schemaVersion")),
        |_| String::new(),
        r#""schemaVersion" is a required property"#,
    );
    refused(
        "annotation without name",
        |d, _| drop(d["annotations"]["list"][0].as_object_mut().unwrap().remove("name")),
        |_| "/annotations/list/0".to_owned(),
        r#""name" is a required property"#,
    );
}

#[test]
fn a_row_whose_collapsed_flag_is_a_string_is_refused_as_a_row() {
    // Panels are a `Panel` or a `RowPanel`: a broken row is reported as a row, a broken
    // panel as a panel (the branch whose `type` does not match is left out).
    let row = fleet().0["panels"].as_array().unwrap().iter().position(|p| p["type"] == "row").expect("a row");
    refused(
        "row collapsed a string",
        |d, _| d["panels"][row]["collapsed"] = json!("no"),
        |_| format!("/panels/{row}/collapsed"),
        r#"is not of type "boolean" (as RowPanel)"#,
    );
    let schema = DashboardSchema::load();
    let (mut dashboard, panel) = fleet();
    dashboard["panels"][panel]["gridPos"] = json!("0,0,12,8");
    let errors = schema.errors(&dashboard);
    assert!(errors.iter().all(|e| e.message.ends_with("(as Panel)")), "a stat panel tried as a row: {errors:?}");
}
