//! Per-series state for detectors that judge every (router, metric) series on its own.

use serde::{Deserialize, Serialize};

use crate::{Anomaly, Batch, Output};

/// Largest router id a [`SeriesTable`] accepts: ids index arrays, so they must be dense (the
/// host numbers routers from 0 per partition).
pub const MAX_ROUTER_ID: u32 = (1 << 24) - 1;

/// What one sample came to: its score in [0, 1] and, if it is one, the anomaly (its `row` and
/// `column` are filled in by [`SeriesTable::process`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub score: f64,
    pub anomaly: Option<Anomaly>,
}

/// Which series a sample belongs to, among one detector instance's: the batch's router id and
/// the metric's place in the order the instance first saw the metrics. It is part of the
/// state, so it is the same after a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub router: u32,
    pub metric: u32,
}

impl SeriesKey {
    /// The series' own share of `span` samples, in `0..=span`: by how much to put off work
    /// that every series would otherwise do at the same sample, such as a first fit.
    ///
    /// Every series of a fleet that starts together (a new host, a new detector, a replay)
    /// reaches its warm-up at the same timestamp; a fit there for all of them at once can take
    /// longer than the sandbox's CPU budget for one call, and the detector is stopped. Shares
    /// spread such work evenly over `span + 1` samples. The first series (router 0, the first
    /// metric: a single-series replay) has a share of 0.
    ///
    /// ```
    /// use routewatch_plugin_sdk::SeriesKey;
    ///
    /// assert_eq!(SeriesKey { router: 0, metric: 0 }.share(60), 0);
    /// let shares: Vec<usize> = (0..1000).map(|router| SeriesKey { router, metric: 3 }.share(60)).collect();
    /// assert!(shares.iter().all(|&s| s <= 60));
    /// assert!((0..=60).all(|s| shares.contains(&s)));
    /// ```
    pub fn share(self, span: usize) -> usize {
        // splitmix64's finaliser: neighbouring routers land far apart, and 0 stays 0.
        let mut z = u64::from(self.router) << 32 | u64::from(self.metric);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % (span as u64 + 1)) as usize
    }
}

/// One `S` per (metric, router), created on first sight with `S::default()`.
///
/// It serialises as the metric names followed by the series, so it can go into a snapshot
/// as it is (see [`crate::snapshot`]).
///
/// ```
/// use routewatch_plugin_sdk::{Batch, Output, SeriesTable, Verdict};
///
/// // Counts the samples of each series; flags the third.
/// let mut table: SeriesTable<u32> = SeriesTable::default();
/// let mut out = Output::default();
/// for ts in 0..3 {
///     let timestamps = [ts, ts];
///     let batch = Batch::new(&[0, 1], &timestamps, vec![("cpu_util", &[0.5, 0.6][..])]);
///     table
///         .process(&batch, &mut out, |_metric| Some(()), |seen: &mut u32, _, _ts, _value| {
///             *seen += 1;
///             Verdict { score: if *seen == 3 { 1.0 } else { 0.0 }, anomaly: None }
///         })
///         .unwrap();
/// }
/// assert_eq!(out.scores, vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
/// assert_eq!(table.iter().copied().collect::<Vec<_>>(), vec![3, 3]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesTable<S> {
    metrics: Vec<String>,
    /// `series[metric][router]`.
    series: Vec<Vec<S>>,
}

impl<S> Default for SeriesTable<S> {
    fn default() -> Self {
        SeriesTable { metrics: Vec::new(), series: Vec::new() }
    }
}

impl<S: Default + Clone> SeriesTable<S> {
    /// Runs `observe` over every point of `batch`, column by column and in row order within
    /// a column, and writes one score per point to `out` (in the batch's column-major order)
    /// and the anomalies with their row and column.
    ///
    /// `watch` decides per column from its metric name: `None` leaves the column unwatched
    /// (its points score 0), `Some(context)` hands `context` to every `observe` of the column
    /// (a per-metric setting, say).
    pub fn process<C>(
        &mut self,
        batch: &Batch<'_>,
        out: &mut Output,
        watch: impl FnMut(&str) -> Option<C>,
        mut observe: impl FnMut(&mut S, &C, i64, f64) -> Verdict,
    ) -> Result<(), String> {
        self.process_named(batch, out, watch, |series, _, context, ts, value| observe(series, context, ts, value))
    }

    /// [`SeriesTable::process`], with the column's metric name handed to `observe` too (for
    /// reasons such as [`crate::episode::describe`] writes).
    pub fn process_named<C>(
        &mut self,
        batch: &Batch<'_>,
        out: &mut Output,
        watch: impl FnMut(&str) -> Option<C>,
        mut observe: impl FnMut(&mut S, &str, &C, i64, f64) -> Verdict,
    ) -> Result<(), String> {
        self.process_keyed(batch, out, watch, |series, _, metric, context, ts, value| {
            observe(series, metric, context, ts, value)
        })
    }

    /// [`SeriesTable::process_named`], with the series' [`SeriesKey`] handed to `observe` too
    /// (to spread work over the fleet, see [`SeriesKey::share`]).
    pub fn process_keyed<C>(
        &mut self,
        batch: &Batch<'_>,
        out: &mut Output,
        mut watch: impl FnMut(&str) -> Option<C>,
        mut observe: impl FnMut(&mut S, SeriesKey, &str, &C, i64, f64) -> Verdict,
    ) -> Result<(), String> {
        let rows = batch.rows();
        out.scores.reserve(batch.points());
        if let Some(&router) = batch.routers.iter().find(|&&r| r > MAX_ROUTER_ID) {
            return Err(format!("router id {router} is over {MAX_ROUTER_ID}; ids must be dense"));
        }
        for (c, column) in batch.columns.iter().enumerate() {
            let Some(context) = watch(column.metric) else {
                out.scores.extend(std::iter::repeat_n(0.0, rows));
                continue;
            };
            let (metric, table) = self.metric(column.metric);
            for (row, ((&router, &ts), &value)) in
                batch.routers.iter().zip(batch.timestamps).zip(column.values).enumerate()
            {
                let r = router as usize;
                if r >= table.len() {
                    table.resize(r + 1, S::default());
                }
                let key = SeriesKey { router, metric };
                let verdict = observe(&mut table[r], key, column.metric, &context, ts, value);
                out.scores.push(verdict.score as f32);
                if let Some(mut anomaly) = verdict.anomaly {
                    anomaly.row = row as u32;
                    anomaly.column = c as u32;
                    out.anomalies.push(anomaly);
                }
            }
        }
        Ok(())
    }

    /// The id of `metric` and its series, by router id, added on first sight.
    fn metric(&mut self, metric: &str) -> (u32, &mut Vec<S>) {
        let id = match self.metrics.iter().position(|m| m == metric) {
            Some(id) => id,
            None => {
                self.metrics.push(metric.to_owned());
                self.series.push(Vec::new());
                self.metrics.len() - 1
            }
        };
        (id as u32, &mut self.series[id])
    }
}

impl<S> SeriesTable<S> {
    /// The same table with every series converted by `f`: a snapshot of an older layout
    /// brought up to date.
    pub fn map<T>(self, f: impl FnMut(S) -> T) -> SeriesTable<T> {
        let mut f = f;
        SeriesTable {
            metrics: self.metrics,
            series: self.series.into_iter().map(|list| list.into_iter().map(&mut f).collect()).collect(),
        }
    }

    /// Every series, metric by metric.
    pub fn iter(&self) -> impl Iterator<Item = &S> {
        self.series.iter().flatten()
    }

    /// Checks the shape of a table read from a snapshot: one list of series per metric, and
    /// no more routers than ids allow.
    pub fn check(&self) -> Result<(), String> {
        if self.series.len() != self.metrics.len() {
            return Err("series do not match the metrics".into());
        }
        if self.series.iter().any(|s| s.len() > MAX_ROUTER_ID as usize + 1) {
            return Err(format!("more series than router ids (at most {})", MAX_ROUTER_ID as usize + 1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwatched_columns_score_zero_and_bad_router_ids_change_nothing() {
        let mut table: SeriesTable<u32> = SeriesTable::default();
        let mut out = Output::default();
        let batch = Batch::new(&[0, 2], &[1, 1], vec![("cpu_util", &[1.0, 2.0][..]), ("bgp_up", &[3.0, 4.0][..])]);
        let watch = |metric: &str| (metric == "cpu_util").then_some(10u32);
        table
            .process(&batch, &mut out, watch, |s, &add, _, _| {
                *s += add;
                Verdict { score: 0.7, anomaly: None }
            })
            .unwrap();
        assert_eq!(out.scores, vec![0.7, 0.7, 0.0, 0.0]);
        // Router 1 was never seen: its series exists (ids index arrays) but is untouched.
        assert_eq!(table.iter().copied().collect::<Vec<_>>(), vec![10, 0, 10]);
        table.check().unwrap();

        let before = table.clone();
        let bad = Batch::new(&[0, MAX_ROUTER_ID + 1], &[2, 2], vec![("cpu_util", &[1.0, 2.0][..])]);
        let err = table.process(&bad, &mut Output::default(), watch, |_, _, _, _| Verdict::default()).unwrap_err();
        assert!(err.contains("ids must be dense"), "{err}");
        assert_eq!(table, before, "a refused batch leaves every series as it was");
    }

    #[test]
    fn check_refuses_a_table_whose_shape_is_off() {
        let table: SeriesTable<u32> = SeriesTable { metrics: vec!["cpu_util".into()], series: vec![] };
        assert!(table.check().unwrap_err().contains("do not match"));
    }
}
