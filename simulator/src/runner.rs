//! The clock: real time (one sample per router per interval, aligned to the wall clock) or
//! fast (event time advances as fast as the sink takes records). Runs on its own thread so a
//! large tick never stalls the REST API's async runtime.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::actions::Outcome;
use crate::encode::EncodedBatch;
use crate::engine::Engine;
use crate::faults::FaultNotice;
use crate::lock;
use crate::metrics::{ActionLabels, FaultLabels, KindLabel, SimMetrics};
use crate::sink::{Sink, SinkError};

/// How event time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One sample per interval at the wall-clock time it is due.
    RealTime,
    /// Back to back, event time stepping by the interval.
    Fast,
}

/// Wakes the runner early for shutdown.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    pub fn stop(&self) {
        *lock(&self.0.0) = true;
        self.0.1.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *lock(&self.0.0)
    }

    /// Waits up to `timeout`; true if stopped.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.0.0);
        let (guard, _) =
            self.0.1.wait_timeout_while(guard, timeout, |stopped| !*stopped).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub ticks: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub faults_started: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    /// Real time only: ticks that finished after the next was due, and the worst and mean
    /// delay between a tick's due time and the moment its records were handed to the sink.
    pub late_ticks: u64,
    pub skipped_ticks: u64,
    pub max_lag_s: f64,
    pub mean_lag_s: f64,
    /// Wall time to simulate, encode and hand one tick to the sink: mean and max.
    pub mean_tick_s: f64,
    pub max_tick_s: f64,
    /// Real time only: every tick's lag, in order (for drift analysis).
    #[serde(skip)]
    pub lags_s: Vec<f64>,
}

pub struct Runner {
    engine: Arc<Mutex<Engine>>,
    sink: Box<dyn Sink>,
    metrics: SimMetrics,
    batch: EncodedBatch,
    summary: Summary,
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The first multiple of `interval_ms` after `ms`: real-time samples fall on round times.
pub fn next_aligned(ms: i64, interval_ms: u64) -> i64 {
    let i = interval_ms as i64;
    (ms.div_euclid(i) + 1) * i
}

impl Runner {
    pub fn new(engine: Arc<Mutex<Engine>>, sink: Box<dyn Sink>, metrics: SimMetrics) -> Runner {
        Runner { engine, sink, metrics, batch: EncodedBatch::new(), summary: Summary::default() }
    }

    /// Runs until `stop`, or until event time reaches `until` (exclusive), then flushes the
    /// sink. Sink errors end the run.
    pub fn run(mut self, pace: Pace, until: Option<i64>, stop: &Stop) -> Result<Summary, SinkError> {
        let started = Instant::now();
        let mut ts = lock(&self.engine).next_ts();
        let mut lag_sum = 0.0;
        info!(?pace, start = ts, "simulation running");
        while !stop.is_stopped() && until.is_none_or(|u| ts < u) {
            if pace == Pace::RealTime {
                let wait = ts - wall_ms();
                if wait > 0 && stop.wait(Duration::from_millis(wait as u64)) {
                    break;
                }
            }
            self.step(ts)?;
            let interval = lock(&self.engine).config().interval_ms;
            if pace == Pace::RealTime {
                let now = wall_ms();
                let lag = (now - ts) as f64 / 1000.0;
                lag_sum += lag;
                self.summary.lags_s.push(lag);
                self.summary.max_lag_s = self.summary.max_lag_s.max(lag);
                self.metrics.tick_lag.set(lag);
                let mut next = ts + interval as i64;
                if now > next {
                    self.metrics.ticks_late.inc();
                    self.summary.late_ticks += 1;
                }
                // After a stall (a paused broker, a suspended laptop) jump to the present
                // rather than replaying every missed interval in a burst.
                if now > next + interval as i64 {
                    let resumed = next_aligned(now - interval as i64, interval);
                    let skipped = (resumed - next) / interval as i64;
                    warn!(skipped, "fell behind the wall clock; skipping missed samples");
                    self.summary.skipped_ticks += skipped as u64;
                    next = resumed;
                }
                ts = next;
            } else {
                ts += interval as i64;
            }
        }
        self.sink.flush().inspect_err(|_| {
            self.metrics.sink_errors.inc();
        })?;
        let s = &mut self.summary;
        s.elapsed_s = started.elapsed().as_secs_f64();
        s.records_per_s = s.records as f64 / s.elapsed_s.max(1e-9);
        if s.ticks > 0 {
            s.mean_tick_s /= s.ticks as f64;
        }
        if pace == Pace::RealTime && s.ticks > 0 {
            s.mean_lag_s = lag_sum / s.ticks as f64;
        }
        info!(
            ticks = s.ticks,
            records = s.records,
            records_per_s = s.records_per_s,
            late_ticks = s.late_ticks,
            max_lag_s = s.max_lag_s,
            "simulation stopped"
        );
        Ok(self.summary)
    }

    /// One sample per router at `ts`, handed to the sink with any ground-truth changes.
    fn step(&mut self, ts: i64) -> Result<(), SinkError> {
        let t0 = Instant::now();
        let (notices, changes, consequences, actions) = {
            let mut engine = lock(&self.engine);
            engine.tick(ts);
            self.batch.encode(engine.delivered());
            (
                engine.take_notices(),
                engine.take_change_notices(),
                engine.take_consequence_notices(),
                engine.take_action_notices(),
            )
        };
        self.count_faults(&notices);
        for n in consequences.iter().filter(|n| !n.ended) {
            self.metrics.consequences.get_or_create(&KindLabel { kind: n.event.kind.name() }).inc();
        }
        for n in &actions {
            let outcome = match n.record.outcome {
                None => "requested",
                Some(Outcome::Fixed) => "fixed",
                Some(Outcome::NoEffect) => "no-effect",
            };
            self.metrics.actions.get_or_create(&ActionLabels { action: n.record.action.name(), outcome }).inc();
        }
        // Ground truth first, so a consumer reading both topics sees a fault no later than
        // its first affected sample. Actions requested over REST since the last tick and the
        // consequences this tick's samples set off are published with this tick too.
        let written = self
            .sink
            .faults(&notices)
            .and_then(|()| self.sink.changes(&changes))
            .and_then(|()| self.sink.consequences(&consequences))
            .and_then(|()| self.sink.actions(&actions))
            .and_then(|()| self.sink.records(&self.batch));
        if written.is_err() {
            self.metrics.sink_errors.inc();
        }
        written?;
        let bytes = self.batch.payload_bytes() as u64;
        let n = self.batch.len() as u64;
        self.metrics.records.inc_by(n);
        self.metrics.record_bytes.inc_by(bytes);
        self.metrics.ticks.inc();
        let work = t0.elapsed().as_secs_f64();
        self.metrics.tick_duration.observe(work);
        self.summary.mean_tick_s += work; // a sum until the run ends
        self.summary.max_tick_s = self.summary.max_tick_s.max(work);
        self.summary.ticks += 1;
        self.summary.records += n;
        self.summary.record_bytes += bytes;
        Ok(())
    }

    fn count_faults(&mut self, notices: &[FaultNotice]) {
        for n in notices {
            let kind = n.event.kind.name();
            if n.ended {
                self.metrics.faults_ended.get_or_create(&KindLabel { kind }).inc();
            } else {
                self.metrics.faults_started.get_or_create(&FaultLabels { kind, source: n.source.name() }).inc();
                self.summary.faults_started += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_to_the_next_round_interval() {
        assert_eq!(next_aligned(1_500, 1_000), 2_000);
        assert_eq!(next_aligned(2_000, 1_000), 3_000);
        assert_eq!(next_aligned(59_999, 60_000), 60_000);
    }

    #[test]
    fn stop_wakes_a_waiter() {
        let stop = Stop::default();
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.wait(Duration::from_secs(60)))
        };
        stop.stop();
        assert!(waiter.join().unwrap());
        assert!(stop.is_stopped());
    }
}
