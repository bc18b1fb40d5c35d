//! The healer's decisions, one guard rail at a time: each must fire on its own, with its
//! reason on record, and let the action through once its condition is gone.

use routewatch_incidents::Incident;
use routewatch_remediation::{
    ActionRecord, ApproveError, Effects, Healer, HealingConfig, Mode, Policy, Refusal, Sent, Status, Verdict,
};
use routewatch_telemetry::Action;
use serde_json::json;

const MIN: i64 = 60_000;
const T0: i64 = 1_764_000_000_000;

fn causes() -> Vec<String> {
    ["memory-leak", "link-flap", "route-flap"].map(String::from).to_vec()
}

fn policy(mode: Mode) -> Policy {
    Policy {
        name: "leak-restart".into(),
        cause: "memory-leak".into(),
        min_confidence: 0.8,
        action: Action::RestartProcess,
        mode,
        target: "http://127.0.0.1:9".into(),
        timeout_secs: 1.0,
        retries: 0,
    }
}

/// Guard rails that stay out of the way unless a test sets one.
fn lenient(mode: Mode) -> HealingConfig {
    HealingConfig {
        dry_run: false,
        site_actions_per_hour: 1000,
        blast_radius: 1.0,
        router_cooldown_secs: 0,
        verify_secs: 600,
        breaker_failures: 1000,
        policies: vec![policy(mode)],
    }
}

fn healer(config: HealingConfig) -> Healer {
    let mut healer = Healer::new(config, causes()).unwrap();
    // A fleet of 10 routers in site "s1".
    for r in 0..10 {
        healer.observe_router(Some("s1"), &format!("r{r}"));
    }
    healer
}

fn incident(router: &str, opened: i64, cause: &str, probability: f64) -> Incident {
    serde_json::from_value(json!({
        "id": format!("inc-{router}-{opened}"), "router": router, "site": "s1", "state": "open",
        "severity": "warning", "opened": opened, "last_anomaly": opened, "metrics": ["mem_util"],
        "detectors": ["arima"], "anomalies": 3, "max_score": 0.9, "reopened": 0, "flapping": false,
        "features_final": true, "cause": cause,
        "causes": [{"cause": cause, "probability": probability}, {"cause": "link-flap", "probability": 0.01}]
    }))
    .unwrap()
}

fn resolved(mut incident: Incident, at: i64) -> Incident {
    incident.state = routewatch_incidents::State::Resolved;
    incident.resolved = Some(at);
    incident
}

fn last(effects: &Effects) -> &ActionRecord {
    effects.records.last().expect("a record")
}

fn refused(effects: &Effects) -> Option<Refusal> {
    (last(effects).status == Status::Refused).then(|| last(effects).refusal.expect("a refusal says why"))
}

fn ok() -> Sent {
    Sent { ok: true, attempts: 1, detail: "202 Accepted".into() }
}

#[test]
fn auto_mode_executes_once_per_incident_and_a_resolution_settles_it_as_helped() {
    let mut healer = healer(lenient(Mode::Auto));
    let inc = incident("r1", T0, "memory-leak", 0.95);
    let effects = healer.on_incident(&inc, T0);
    assert_eq!(last(&effects).status, Status::Executing);
    let execution = &effects.executions[0];
    assert_eq!((execution.router.as_str(), execution.action), ("r1", Action::RestartProcess));
    // Updates of the same incident do not act again.
    assert!(healer.on_incident(&inc, T0 + MIN).records.is_empty());
    let effects = healer.executed(&execution.id, ok(), T0 + 1000);
    assert_eq!(last(&effects).status, Status::Executed);
    let effects = healer.on_incident(&resolved(inc, T0 + 5 * MIN), T0 + 5 * MIN);
    assert_eq!(last(&effects).verdict, Some(Verdict::Resolved));
}

#[test]
fn a_cause_not_yet_final_unknown_or_without_a_policy_gets_nothing() {
    let mut healer = healer(lenient(Mode::Auto));
    let mut early = incident("r1", T0, "memory-leak", 0.95);
    early.features_final = false;
    assert_eq!(healer.on_incident(&early, T0), Effects::default());
    assert_eq!(healer.on_incident(&incident("r2", T0, "unknown", 0.4), T0), Effects::default());
    assert_eq!(healer.on_incident(&incident("r3", T0, "link-flap", 0.99), T0), Effects::default());
    let mut off = lenient(Mode::Off);
    off.policies[0].mode = Mode::Off;
    assert_eq!(self::healer(off).on_incident(&incident("r1", T0, "memory-leak", 0.99), T0), Effects::default());
}

#[test]
fn low_confidence_is_refused() {
    let mut healer = healer(lenient(Mode::Auto));
    let effects = healer.on_incident(&incident("r1", T0, "memory-leak", 0.6), T0);
    assert_eq!(refused(&effects), Some(Refusal::LowConfidence));
    assert!(last(&effects).detail.contains("0.60, below the policy's 0.80"), "{}", last(&effects).detail);
    assert!(effects.executions.is_empty());
}

#[test]
fn suggest_mode_attaches_the_action_and_sends_nothing() {
    let mut healer = healer(lenient(Mode::Suggest));
    let effects = healer.on_incident(&incident("r1", T0, "memory-leak", 0.9), T0);
    assert_eq!(last(&effects).status, Status::Suggested);
    assert!(effects.executions.is_empty());
    assert_eq!(healer.action_of("inc-r1-1764000000000").unwrap().action, Action::RestartProcess);
}

#[test]
fn approve_mode_waits_for_approval_then_runs_within_the_guard_rails() {
    let mut healer = healer(lenient(Mode::Approve));
    let inc = incident("r1", T0, "memory-leak", 0.9);
    let effects = healer.on_incident(&inc, T0);
    assert_eq!(last(&effects).status, Status::Proposed);
    assert!(effects.executions.is_empty());
    assert!(matches!(healer.approve("inc-nope", T0), Err(ApproveError::NoAction(_))));
    let effects = healer.approve(&inc.id, T0 + MIN).unwrap();
    assert_eq!(last(&effects).status, Status::Executing);
    assert_eq!(effects.executions.len(), 1);
    // Approving twice is refused with the status it is in.
    let err = healer.approve(&inc.id, T0 + MIN).unwrap_err();
    assert_eq!(err.to_string(), format!("the action of incident {} is executing, not awaiting approval", inc.id));
}

#[test]
fn a_proposal_is_withdrawn_when_its_incident_resolves_first() {
    let mut healer = healer(lenient(Mode::Approve));
    let inc = incident("r1", T0, "memory-leak", 0.9);
    healer.on_incident(&inc, T0);
    let effects = healer.on_incident(&resolved(inc.clone(), T0 + MIN), T0 + MIN);
    assert_eq!(last(&effects).status, Status::Withdrawn);
    assert!(healer.approve(&inc.id, T0 + 2 * MIN).is_err());
}

#[test]
fn the_router_cooldown_refuses_a_second_action_until_it_has_passed() {
    let mut config = lenient(Mode::Auto);
    config.router_cooldown_secs = 1800;
    let mut healer = healer(config);
    let first = healer.on_incident(&incident("r1", T0, "memory-leak", 0.9), T0);
    healer.executed(&first.executions[0].id, ok(), T0);
    let again = healer.on_incident(&incident("r1", T0 + 10 * MIN, "memory-leak", 0.9), T0 + 10 * MIN);
    assert_eq!(refused(&again), Some(Refusal::Cooldown));
    let later = healer.on_incident(&incident("r1", T0 + 31 * MIN, "memory-leak", 0.9), T0 + 31 * MIN);
    assert_eq!(last(&later).status, Status::Executing);
}

#[test]
fn the_site_rate_limit_counts_the_last_hour() {
    let mut config = lenient(Mode::Auto);
    config.site_actions_per_hour = 2;
    let mut healer = healer(config);
    for r in 0..2 {
        let effects = healer.on_incident(&incident(&format!("r{r}"), T0, "memory-leak", 0.9), T0 + r * MIN);
        assert_eq!(last(&effects).status, Status::Executing);
    }
    let third = healer.on_incident(&incident("r2", T0, "memory-leak", 0.9), T0 + 2 * MIN);
    assert_eq!(refused(&third), Some(Refusal::SiteRateLimit));
    // An hour after the first, one more may go.
    let later = healer.on_incident(&incident("r3", T0 + 61 * MIN, "memory-leak", 0.9), T0 + 61 * MIN);
    assert_eq!(last(&later).status, Status::Executing);
}

#[test]
fn the_blast_radius_caps_the_share_of_a_site_in_action() {
    let mut config = lenient(Mode::Auto);
    config.blast_radius = 0.2; // 2 of the site's 10 routers
    let mut healer = healer(config);
    let mut ids = Vec::new();
    for r in 0..2 {
        let effects = healer.on_incident(&incident(&format!("r{r}"), T0, "memory-leak", 0.9), T0);
        assert_eq!(last(&effects).status, Status::Executing);
        ids.push(effects.executions[0].id.clone());
        healer.executed(&ids[r], ok(), T0);
    }
    let third = healer.on_incident(&incident("r2", T0, "memory-leak", 0.9), T0);
    assert_eq!(refused(&third), Some(Refusal::BlastRadius));
    assert!(last(&third).detail.contains("3 of site \"s1\"'s 10 routers"), "{}", last(&third).detail);
    // One router's incident resolves: it leaves action, and another may go.
    healer.on_incident(&resolved(incident("r0", T0, "memory-leak", 0.9), T0 + MIN), T0 + MIN);
    let fourth = healer.on_incident(&incident("r3", T0 + MIN, "memory-leak", 0.9), T0 + MIN);
    assert_eq!(last(&fourth).status, Status::Executing);
}

#[test]
fn the_circuit_breaker_opens_on_actions_that_do_not_resolve_and_a_reset_closes_it() {
    let mut config = lenient(Mode::Auto);
    config.breaker_failures = 2;
    config.verify_secs = 300;
    let mut healer = healer(config);
    for r in 0..2 {
        let at = T0 + r * 10 * MIN;
        let effects = healer.on_incident(&incident(&format!("r{r}"), at, "memory-leak", 0.9), at);
        healer.executed(&effects.executions[0].id, ok(), at);
        let settled = healer.tick(at + 6 * MIN);
        assert_eq!(last(&settled).verdict, Some(Verdict::NotResolved));
    }
    assert!(healer.policies()[0].breaker_open);
    let at = T0 + 30 * MIN;
    let effects = healer.on_incident(&incident("r5", at, "memory-leak", 0.9), at);
    assert_eq!(refused(&effects), Some(Refusal::CircuitOpen));
    healer.reset_breaker("leak-restart").unwrap();
    let effects = healer.on_incident(&incident("r6", at, "memory-leak", 0.9), at);
    assert_eq!(last(&effects).status, Status::Executing);
}

#[test]
fn a_resolution_in_time_resets_the_breakers_count() {
    let mut config = lenient(Mode::Auto);
    config.breaker_failures = 2;
    let mut healer = healer(config);
    let first = healer.on_incident(&incident("r0", T0, "memory-leak", 0.9), T0);
    healer.executed(&first.executions[0].id, ok(), T0);
    healer.tick(T0 + 11 * MIN);
    assert_eq!(healer.policies()[0].failures_in_a_row, 1);
    let inc = incident("r1", T0 + 20 * MIN, "memory-leak", 0.9);
    let second = healer.on_incident(&inc, T0 + 20 * MIN);
    healer.executed(&second.executions[0].id, ok(), T0 + 20 * MIN);
    healer.on_incident(&resolved(inc, T0 + 25 * MIN), T0 + 25 * MIN);
    assert_eq!(healer.policies()[0].failures_in_a_row, 0);
    assert!(!healer.policies()[0].breaker_open);
}

#[test]
fn dry_run_passes_the_guard_rails_and_sends_nothing() {
    let mut config = lenient(Mode::Auto);
    config.dry_run = true;
    let mut healer = healer(config);
    let effects = healer.on_incident(&incident("r1", T0, "memory-leak", 0.9), T0);
    assert_eq!(last(&effects).status, Status::DryRun);
    assert!(effects.executions.is_empty());
    // And still refuses what a guard rail stops.
    let effects = healer.on_incident(&incident("r2", T0, "memory-leak", 0.5), T0);
    assert_eq!(refused(&effects), Some(Refusal::LowConfidence));
    healer.set_dry_run(false);
    let effects = healer.on_incident(&incident("r3", T0, "memory-leak", 0.9), T0);
    assert_eq!(last(&effects).status, Status::Executing);
}

#[test]
fn a_failed_send_takes_the_router_out_of_action() {
    let mut config = lenient(Mode::Auto);
    config.blast_radius = 0.1; // one router of ten
    let mut healer = healer(config);
    let first = healer.on_incident(&incident("r0", T0, "memory-leak", 0.9), T0);
    let failed = healer.executed(
        &first.executions[0].id,
        Sent { ok: false, attempts: 3, detail: "connection refused".into() },
        T0,
    );
    assert_eq!((last(&failed).status, last(&failed).attempts), (Status::Failed, 3));
    let next = healer.on_incident(&incident("r1", T0, "memory-leak", 0.9), T0);
    assert_eq!(last(&next).status, Status::Executing, "the failed action holds no place in the blast radius");
}

#[test]
fn policies_are_checked_when_set_over_the_api_too() {
    let mut healer = healer(lenient(Mode::Auto));
    let mut bad = policy(Mode::Auto);
    bad.name = "flap".into();
    bad.cause = "gremlins".into();
    assert!(healer.set_policy(bad.clone()).unwrap_err().to_string().contains("unknown cause"));
    bad.cause = "memory-leak".into();
    assert!(healer.set_policy(bad.clone()).unwrap_err().to_string().contains("one policy per cause"));
    bad.cause = "link-flap".into();
    bad.action = Action::ResetInterface;
    healer.set_policy(bad).unwrap();
    assert_eq!(healer.policies().len(), 2);
    healer.remove_policy("flap").unwrap();
    assert!(healer.remove_policy("flap").is_err());
}

#[test]
fn records_list_newest_first_and_stay_bounded() {
    let mut healer = healer(lenient(Mode::Suggest));
    for i in 0..(routewatch_remediation::MAX_RECORDS as i64 + 50) {
        healer.on_incident(&incident("r1", T0 + i, "memory-leak", 0.9), T0 + i);
    }
    let all = healer.records(|_| true, usize::MAX);
    assert_eq!(all.len(), routewatch_remediation::MAX_RECORDS);
    assert!(all[0].created > all[1].created);
}
