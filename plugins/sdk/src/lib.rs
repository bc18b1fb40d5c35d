//! Write a routewatch anomaly detector in a few dozen lines.
//!
//! A detector is a type that implements [`Detector`]. [`export_detector!`] turns it into a
//! WebAssembly component that serves the `routewatch:detector` WIT world; the same type also
//! compiles natively, so it can be unit-tested and benchmarked without a Wasm runtime.
//!
//! ```
//! use routewatch_plugin_sdk::{Batch, Detector, Info, Output};
//!
//! /// Flags any value above a fixed ceiling.
//! #[derive(Default)]
//! struct Ceiling;
//!
//! impl Detector for Ceiling {
//!     fn info() -> Info {
//!         Info::new("ceiling", "0.1.0", "flags values above 100")
//!     }
//!     fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String> {
//!         for column in &batch.columns {
//!             for &value in column.values {
//!                 out.scores.push(if value > 100.0 { 1.0 } else { 0.0 });
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // In the plugin crate (crate-type = ["cdylib"]):
//! // routewatch_plugin_sdk::export_detector!(Ceiling);
//!
//! let mut detector = Ceiling;
//! let batch = Batch::new(&[7], &[0], vec![("cpu_util", &[150.0][..])]);
//! let mut out = Output::default();
//! detector.process(&batch, &mut out).unwrap();
//! assert_eq!(out.scores, vec![1.0]);
//! ```

pub mod calibrate;
pub mod episode;
mod score;
mod series;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use calibrate::{Calibration, Calibrator};
pub use episode::{Episode, Judge, Judgement, MAX_REASON_BYTES, Report};
pub use score::{Z_SCORE_SLOPE, score_from_z};
pub use series::{MAX_ROUTER_ID, SeriesKey, SeriesTable, Verdict};
pub use types::{Anomaly, AnomalyKind, Batch, Column, Info, Level, Output};

/// The WIT package version this SDK builds against (see `wit/detector.wit`).
pub const WIT_VERSION: &str = "0.1.0";

/// An anomaly detector. One instance sees every batch of one partition, in order, so it can
/// keep per-series state between calls.
pub trait Detector: Default + 'static {
    /// Whether the SDK hands the output to the host exactly as the detector wrote it. By
    /// default (`false`) it clamps scores into [0, 1] and cuts reasons to
    /// [`MAX_REASON_BYTES`] at a character boundary, so no detector breaks the contract through
    /// them. Only plugins that test the host's own checks set it (`plugins/testing/evil`).
    const RAW_OUTPUT: bool = false;

    /// Static facts about the detector.
    fn info() -> Info;

    /// Applies a JSON configuration; `{}` means defaults. On error, keep the old configuration.
    fn configure(&mut self, config: &str) -> Result<(), String> {
        match config.trim() {
            "" | "{}" => Ok(()),
            _ => Err("this detector takes no configuration".into()),
        }
    }

    /// Scores every point of `batch` into `out.scores` (column-major, see [`Output`]) and
    /// pushes the anomalies it decides on. `out` arrives empty.
    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), String>;

    /// Serialises all state.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Replaces all state with a snapshot; on error the state must be left as it was.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() { Ok(()) } else { Err("this detector keeps no state".into()) }
    }
}

/// Logs through the host (rate-limited there). Natively, warnings and errors go to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    glue::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    if level >= Level::Warn {
        eprintln!("[{level:?}] {message}");
    }
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue;

/// Exports a [`Detector`] type as the component's implementation of the `detector` world.
///
/// Use it once, in a `cdylib` crate. It expands to nothing on non-Wasm targets, so the crate
/// can also be built natively for tests and benchmarks.
#[macro_export]
macro_rules! export_detector {
    ($detector:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::std::cell::RefCell<$crate::glue::State<$detector>> =
                    ::std::cell::RefCell::new($crate::glue::State::default());
            }
            struct Component;
            impl $crate::glue::bindings::exports::routewatch::detector::detector::Guest for Component {
                fn info() -> $crate::glue::bindings::routewatch::detector::types::PluginInfo {
                    $crate::glue::info::<$detector>()
                }
                fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    STATE.with_borrow_mut(|s| s.configure(&config))
                }
                fn process(
                    batch: $crate::glue::bindings::routewatch::detector::types::Batch,
                ) -> ::std::result::Result<
                    $crate::glue::bindings::routewatch::detector::types::Output,
                    ::std::string::String,
                > {
                    STATE.with_borrow_mut(|s| s.process(batch))
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    STATE.with_borrow(|s| s.snapshot())
                }
                fn restore(state: ::std::vec::Vec<u8>) -> ::std::result::Result<(), ::std::string::String> {
                    STATE.with_borrow_mut(|s| s.restore(&state))
                }
            }
    $crate::glue::bindings::export!(Component with_types_in $crate::glue::bindings);
        };
    };
}
