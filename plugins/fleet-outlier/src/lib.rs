//! Fleet outlier detector: flags a router whose metric departs from its peers at the same time.
//!
//! Routers of one role still differ in size (a 400 Gb/s core router is not an outlier among
//! 10 Gb/s access routers), so raw values are not compared. Each router's sample is first
//! expressed in its own terms, as a residual in standard deviations from its own running
//! baseline; the residuals of all peers at one timestamp are then compared by augurs-outlier's
//! MAD detector (double median absolute deviation) and, if configured, its 1-D DBSCAN. What is
//! left is what the fleet as a whole does not share: a router that moves while its peers do not.
//!
//! **Peers.** The WIT batch carries router ids, not roles, so by default every router in the
//! batch at the same timestamp is a peer: per-router normalisation already removes the level
//! and size differences between roles, and what the fleet shares (a daily swing, a wide event)
//! cancels out across them. An operator who wants strict role groups passes them in the
//! configuration (`peer_groups`, lists of router ids as the host numbers them); routers in no
//! group form one more group.

mod config;

use augurs::outlier::{DbscanDetector, MADDetector, OutlierDetector};
use routewatch_plugin_sdk::{Anomaly, AnomalyKind, Batch, Detector, Info, Output, score_from_z};
use serde::{Deserialize, Serialize};

pub use config::{Config, Method};

routewatch_plugin_sdk::export_detector!(FleetOutlier);

const SNAPSHOT_VERSION: u8 = 1;
const MAX_ROUTER_ID: u32 = (1 << 24) - 1;
/// Normal-consistent MAD factor, as augurs uses.
const MAD_K: f64 = 1.4826;

/// The fleet outlier detector.
#[derive(Debug, Default)]
pub struct FleetOutlier {
    config: Config,
    /// Metric names in order of first sight.
    metrics: Vec<String>,
    /// `baselines[metric][router]`.
    baselines: Vec<Vec<Baseline>>,
    /// Peer group of each router id (from the configuration); empty means one group.
    group_of: Vec<u32>,
}

/// One router's running baseline for one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    n: u64,
    mean: f64,
    var: f64,
    last_ts: i64,
    /// Consecutive outlying samples (the baseline is frozen meanwhile, up to `accept_after`).
    outlying: u32,
}

impl Baseline {
    fn sd(&self, floor: f64) -> f64 {
        self.var.max(0.0).sqrt().max(floor * self.mean.abs()).max(1e-9)
    }

    fn update(&mut self, value: f64, alpha: f64, warmup: u64) {
        self.n += 1;
        if self.n == 1 {
            self.mean = value;
            self.var = 0.0;
            return;
        }
        let d = value - self.mean;
        if self.n <= warmup {
            let n = self.n as f64;
            self.mean += d / n;
            self.var += (d * (value - self.mean) - self.var) / n;
        } else {
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
    }
}

/// A row of one timestamp group, ready for comparison.
struct Member {
    row: usize,
    router: usize,
    residual: f64,
}

impl Detector for FleetOutlier {
    fn info() -> Info {
        Info {
            name: "fleet-outlier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Compares each router with its peers at the same timestamp (augurs MAD / DBSCAN over \
                          residuals from each router's own baseline)"
                .into(),
            metrics: Vec::new(),
            config_schema: Config::SCHEMA.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config = Config::parse(config)?;
        self.group_of = config.group_table();
        self.config = config;
        Ok(())
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
        let rows = batch.rows();
        out.scores.resize(batch.points(), 0.0);
        if let Some(&bad) = batch.routers.iter().find(|&&r| r > MAX_ROUTER_ID) {
            return Err(format!("router id {bad} is over {MAX_ROUTER_ID}; ids must be dense"));
        }
        // Rows grouped by (timestamp, peer group): each group is one cross-section.
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by_key(|&row| (batch.timestamps[row], self.group(batch.routers[row])));
        let mut members: Vec<Member> = Vec::new();
        for (c, column) in batch.columns.iter().enumerate() {
            let watched = self.config.metrics.is_empty() || self.config.metrics.iter().any(|m| m == column.metric);
            if !watched {
                continue;
            }
            let metric = self.metric_id(column.metric);
            let mut start = 0;
            while start < rows {
                let key = |row: usize| (batch.timestamps[row], self.group(batch.routers[row]));
                let first = key(order[start]);
                let end = order[start..].iter().position(|&row| key(row) != first).map_or(rows, |n| start + n);
                members.clear();
                for &row in &order[start..end] {
                    let router = batch.routers[row] as usize;
                    let value = column.values[row];
                    let table = &mut self.baselines[metric];
                    if router >= table.len() {
                        table.resize(router + 1, Baseline { last_ts: i64::MIN, ..Baseline::default() });
                    }
                    let base = &mut table[router];
                    if !value.is_finite() || batch.timestamps[row] <= base.last_ts {
                        continue;
                    }
                    base.last_ts = batch.timestamps[row];
                    if base.n < self.config.warmup {
                        base.update(value, self.config.baseline_alpha, self.config.warmup);
                        continue;
                    }
                    let residual = (value - base.mean) / base.sd(self.config.rel_floor);
                    members.push(Member { row, router, residual });
                }
                self.judge(metric, c, column.values, &members, rows, out);
                start = end;
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_VERSION];
        let body = (&self.config, &self.metrics, &self.baselines);
        bytes.extend(postcard::to_allocvec(&body).expect("state always serialises"));
        bytes
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        match bytes.split_first() {
            Some((&SNAPSHOT_VERSION, body)) => {
                let (config, metrics, baselines): (Config, Vec<String>, Vec<Vec<Baseline>>) =
                    postcard::from_bytes(body).map_err(|e| format!("corrupt fleet-outlier snapshot: {e}"))?;
                if baselines.len() != metrics.len() || baselines.iter().any(|b| b.len() > MAX_ROUTER_ID as usize + 1) {
                    return Err("corrupt fleet-outlier snapshot: baselines do not match the metrics".into());
                }
                // A snapshot's configuration passes the checks `configure` makes: unchecked peer
                // groups could name router ids that size the group table in gigabytes.
                config.check().map_err(|e| format!("corrupt fleet-outlier snapshot: {e}"))?;
                self.group_of = config.group_table();
                self.config = config;
                self.metrics = metrics;
                self.baselines = baselines;
                Ok(())
            }
            Some((version, _)) => Err(format!(
                "fleet-outlier snapshot version {version} is not supported (this build reads {SNAPSHOT_VERSION})"
            )),
            None => Err("empty fleet-outlier snapshot".into()),
        }
    }
}

impl FleetOutlier {
    fn group(&self, router: u32) -> u32 {
        self.group_of.get(router as usize).copied().unwrap_or(u32::MAX)
    }

    fn metric_id(&mut self, name: &str) -> usize {
        match self.metrics.iter().position(|m| m == name) {
            Some(id) => id,
            None => {
                self.metrics.push(name.to_owned());
                self.baselines.push(Vec::new());
                self.metrics.len() - 1
            }
        }
    }

    /// Compares one cross-section, scores its rows and learns from the ones that fit in.
    fn judge(
        &mut self,
        metric: usize,
        column: usize,
        values: &[f64],
        members: &[Member],
        rows: usize,
        out: &mut Output,
    ) {
        let config = &self.config;
        let min_dev = config.min_deviation.get(&self.metrics[metric]).copied().unwrap_or(0.0);
        let table = &mut self.baselines[metric];
        if members.len() < config.min_peers {
            // Too few peers to say anything: learn and stay silent.
            for m in members {
                table[m.router].update(values[m.row], config.baseline_alpha, config.warmup);
            }
            return;
        }
        let residuals: Vec<f64> = members.iter().map(|m| m.residual).collect();
        let series: Vec<&[f64]> = residuals.chunks(1).collect();
        let (center, scores) = mad_scores(&residuals, &series, config);
        let dbscan_outlier: Option<Vec<bool>> = match config.method {
            Method::Mad => None,
            Method::Dbscan | Method::Both => {
                let detector = DbscanDetector::with_epsilon(config.epsilon);
                let found = detector.preprocess(&series).and_then(|d| detector.detect(&d));
                Some(match found {
                    Ok(found) => (0..members.len()).map(|i| found.is_outlier(i)).collect(),
                    Err(_) => vec![false; members.len()],
                })
            }
        };
        for (i, m) in members.iter().enumerate() {
            let mad_flag = scores[i] >= config.threshold;
            let (outlying, score) = match (&dbscan_outlier, config.method) {
                (Some(d), Method::Dbscan) => {
                    (d[i], if d[i] { 1.0 } else { score_from_z(scores[i], config.threshold).min(0.49) })
                }
                (Some(d), _) => {
                    let s = score_from_z(scores[i], config.threshold);
                    (mad_flag && d[i], if mad_flag && !d[i] { s.min(0.49) } else { s })
                }
                (None, _) => (mad_flag, score_from_z(scores[i], config.threshold)),
            };
            let base = &mut table[m.router];
            let value = values[m.row];
            let (outlying, score) =
                if (value - base.mean).abs() < min_dev { (false, score.min(0.49)) } else { (outlying, score) };
            out.scores[column * rows + m.row] = score as f32;
            if outlying {
                let sd = base.sd(config.rel_floor);
                let expected = base.mean + center * sd;
                let band = config.threshold * sd;
                out.anomalies.push(Anomaly {
                    row: m.row as u32,
                    column: column as u32,
                    observed: value,
                    expected,
                    lower: expected - band,
                    upper: expected + band,
                    score: score.max(0.5),
                    kind: AnomalyKind::Outlier,
                    reason: format!(
                        "{:+.1} sd from its own baseline while its {} peers sit at {center:+.1} ({:.1} MAD)",
                        m.residual,
                        members.len() - 1,
                        scores[i]
                    ),
                });
                base.outlying += 1;
                // A lasting change becomes the router's new normal after a while.
                if base.outlying >= config.accept_after {
                    base.update(value, config.baseline_alpha, config.warmup);
                }
            } else {
                base.outlying = 0;
                base.update(value, config.baseline_alpha, config.warmup);
            }
        }
    }
}

/// Outlier scores (in MAD units) of each residual against the cross-section, and its center.
/// augurs' double MAD refuses a cross-section whose lower or upper deviations are mostly
/// zero (a metric that rarely moves, like BGP sessions); then the deviation from the
/// median is measured against `min_spread` instead.
fn mad_scores(residuals: &[f64], series: &[&[f64]], config: &Config) -> (f64, Vec<f64>) {
    let mut detector = MADDetector::with_threshold(config.threshold);
    match MADDetector::calculate_double_medians(series) {
        Ok(medians) => {
            detector.set_medians(medians);
            if let Ok(found) = detector.preprocess(series).and_then(|pre| detector.detect(&pre)) {
                let center = median(residuals);
                let scores = found
                    .series_results
                    .iter()
                    .map(|s| s.scores.first().copied().filter(|v| v.is_finite()).unwrap_or(0.0))
                    .collect();
                return (center, floor_scores(residuals, scores, center, config));
            }
            fallback(residuals, config)
        }
        Err(_) => fallback(residuals, config),
    }
}

/// A residual must also be `min_spread` own-sd away from the center: in a quiet fleet the MAD
/// shrinks, and an ordinary wobble must not become an outlier.
fn floor_scores(residuals: &[f64], scores: Vec<f64>, center: f64, config: &Config) -> Vec<f64> {
    residuals.iter().zip(scores).map(|(r, s)| s.min((r - center).abs() / (MAD_K * config.min_spread))).collect()
}

fn fallback(residuals: &[f64], config: &Config) -> (f64, Vec<f64>) {
    let center = median(residuals);
    (center, residuals.iter().map(|r| (r - center).abs() / (MAD_K * config.min_spread)).collect())
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}
