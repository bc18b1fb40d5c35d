//! Plain Rust views of the WIT types, usable natively and in Wasm alike.

/// Static facts about a detector (WIT `plugin-info`).
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Wire names of the metrics read; empty means every metric.
    pub metrics: Vec<String>,
    /// JSON Schema of the configuration.
    pub config_schema: String,
}

impl Info {
    /// Info for a detector that reads every metric and takes no configuration.
    pub fn new(name: &str, version: &str, description: &str) -> Info {
        Info {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            metrics: Vec::new(),
            config_schema: r#"{"type":"object","additionalProperties":false}"#.into(),
        }
    }
}

/// One metric's values for every row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    pub metric: &'a str,
    pub values: &'a [f64],
}

/// A columnar batch: row `i` is router `routers[i]` at `timestamps[i]`.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub routers: &'a [u32],
    pub timestamps: &'a [i64],
    pub columns: Vec<Column<'a>>,
}

impl<'a> Batch<'a> {
    /// Builds a batch from borrowed columns.
    ///
    /// # Panics
    /// If the lengths of `routers`, `timestamps` and every column differ.
    pub fn new(routers: &'a [u32], timestamps: &'a [i64], columns: Vec<(&'a str, &'a [f64])>) -> Batch<'a> {
        assert_eq!(routers.len(), timestamps.len(), "one timestamp per row");
        let columns = columns
            .into_iter()
            .map(|(metric, values)| {
                assert_eq!(values.len(), routers.len(), "column {metric} has one value per row");
                Column { metric, values }
            })
            .collect();
        Batch { routers, timestamps, columns }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.routers.len()
    }

    /// Number of points (rows times columns): the length `Output::scores` must reach.
    pub fn points(&self) -> usize {
        self.rows() * self.columns.len()
    }
}

/// What a detector decided on a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// One score in [0, 1] per point, column-major: row `i` of column `c` is at
    /// `c * rows + i`.
    pub scores: Vec<f32>,
    pub anomalies: Vec<Anomaly>,
}

impl Output {
    /// Empties the output, keeping its allocations.
    pub fn clear(&mut self) {
        self.scores.clear();
        self.anomalies.clear();
    }
}

/// One anomalous point (WIT `anomaly`).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub row: u32,
    pub column: u32,
    pub observed: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub score: f64,
    pub kind: AnomalyKind,
    pub reason: String,
}

/// WIT `anomaly-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AnomalyKind {
    Spike,
    Dip,
    LevelShift,
    Drift,
    Loss,
    Hardware,
    Outlier,
    Changepoint,
    Other,
}

/// WIT `logging.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}
