//! The forecast stage inside the engine: a router's leaking memory, streamed through an engine
//! with no detectors, raises one predicted incident with an ETA, which is withdrawn when the
//! leak is fixed; a stream restored from a mid-leak state and fed the same records again
//! (the previous owner's delivered ones suppressed) delivers exactly the rest, once.

use std::sync::{Arc, Mutex};

use routewatch_engine::metrics::Metrics;
use routewatch_engine::{
    Delivery, Engine, EngineConfig, Forecast, Intake, Plugins, Pull, Sink, SinkError, Source, SourceError,
};
use routewatch_incidents::{Change, ForecastConfig, IncidentUpdate};

const T0: i64 = 1_764_000_000_000;
const COLUMNS: [&str; 2] = ["cpu_util", "mem_util"];

/// Minute samples of two routers: r1 leaks 0.08 an hour from 1440 until the fix at 1700; r2
/// is flat. Rows (position, router, ts, [cpu, mem]).
fn records() -> Vec<(i64, &'static str, i64, [f64; 2])> {
    let mut rows = Vec::new();
    for i in 0..2000i64 {
        let wobble = 0.002 * ((i * 7919 % 13) as f64 / 13.0 - 0.5);
        let leaked = if (1440..1700).contains(&i) { 0.08 * (i - 1440) as f64 / 60.0 } else { 0.0 };
        for (k, router) in ["r1", "r2"].into_iter().enumerate() {
            let mem = 0.5 + wobble + if router == "r1" { leaked } else { 0.0 };
            rows.push((2 * i + k as i64, router, T0 + i * 60_000, [0.3, mem]));
        }
    }
    rows
}

/// Hands out rows as a batch takes them (100 at a time).
struct Rows {
    rows: Vec<(i64, &'static str, i64, [f64; 2])>,
    next: usize,
}

impl Source for Rows {
    fn pull(&mut self, intake: &mut Intake<'_>) -> Result<Pull, SourceError> {
        let end = (self.next + intake.room()).min(self.rows.len());
        for &(position, router, ts, values) in &self.rows[self.next..end] {
            intake.row(position, router, Some("lon1"), None, ts, values);
        }
        self.next = end;
        Ok(if end == self.rows.len() { Pull::Idle } else { Pull::More })
    }
}

struct Kept(Arc<Mutex<Vec<IncidentUpdate>>>);

impl Sink for Kept {
    fn name(&self) -> &'static str {
        "kept"
    }
    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend(delivery.processed.incidents.iter().cloned());
        Ok(())
    }
}

fn engine() -> Engine {
    let metrics = Arc::new(Metrics::default());
    let columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let forecast = Forecast::new(ForecastConfig::default(), &columns, metrics.clone(), 0).unwrap();
    let config =
        EngineConfig { stream: 0, columns, max_snapshot_bytes: 1 << 20, stamp_detection: false, batch_records: 100 };
    Engine::new(config, Plugins::Fixed(Vec::new()), metrics).with_forecast(forecast)
}

/// A stream that pauses: nothing more for now.
struct Paused;

impl Source for Paused {
    fn pull(&mut self, _: &mut Intake<'_>) -> Result<Pull, SourceError> {
        Ok(Pull::Idle)
    }
}

/// Steps `engine` over `source` until it is drained or `until` rows were taken, then pauses
/// (the engine runs the timestamp it held back).
fn drain(engine: &mut Engine, source: &mut Rows, until: usize) -> Vec<IncidentUpdate> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Kept(kept.clone()))];
    while source.next < until.min(source.rows.len()) {
        engine.step(source, &mut sinks).unwrap();
    }
    engine.step(&mut Paused, &mut sinks).unwrap();
    assert_eq!(engine.acknowledged(), Some(source.rows[source.next - 1].0 + 1), "every row taken was run");
    std::mem::take(&mut *kept.lock().unwrap())
}

#[test]
fn a_leak_is_predicted_then_withdrawn_and_a_restored_stream_continues_exactly() {
    let mut straight = engine();
    let all = drain(&mut straight, &mut Rows { rows: records(), next: 0 }, usize::MAX);
    let changes: Vec<(Change, &str)> = all.iter().map(|u| (u.change, u.incident.router.as_str())).collect();
    assert_eq!(changes.first(), Some(&(Change::Opened, "r1")), "{changes:?}");
    assert_eq!(changes.iter().filter(|c| c.0 != Change::Updated).count(), 2, "opened and withdrawn: {changes:?}");
    let withdrawn = all.iter().find(|u| u.change == Change::Withdrawn).expect("withdrawn when the leak is fixed");
    assert!(withdrawn.incident.resolved.unwrap() >= T0 + 1700 * 60_000);
    let p = all[0].incident.prediction.as_ref().unwrap();
    assert!(p.summary.starts_with("mem_util reaches 0.98 in about"), "{}", p.summary);
    assert!(all.iter().all(|u| u.incident.router == "r1"), "r2 is flat");

    // A stream saved mid-leak (after the warning opened), restored elsewhere: it reads again
    // from the state's offset, and delivers only what comes after the previous owner's.
    let mut first = engine();
    let mut source = Rows { rows: records(), next: 0 };
    let mut delivered = drain(&mut first, &mut source, 2 * 1600);
    let state = first.state().expect("a state");
    let delivered_until = first.acknowledged().unwrap();
    drain(&mut first, &mut source, 2 * 1650); // delivered by the first owner, not saved
    let mut second = engine();
    second.restore(state.clone());
    second.suppress_output_before(2 * 1650);
    assert!(state.next_offset <= delivered_until);
    let mut rest = Rows { rows: records(), next: state.next_offset as usize };
    let later = drain(&mut second, &mut rest, usize::MAX);
    let between: Vec<IncidentUpdate> = all
        .iter()
        .filter(|u| u.incident.last_anomaly >= T0 + 1600 * 60_000 && u.incident.last_anomaly < T0 + 1650 * 60_000)
        .cloned()
        .collect();
    delivered.extend(between);
    delivered.extend(later);
    assert_eq!(delivered, all);
}
