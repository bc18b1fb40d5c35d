//! A classifier component (`routewatch:classifier` world) for the host's lifecycle tests: by
//! default it names every incident `stub-cause` with probability 0.99, so a test can tell its
//! incidents from the forest's. `configure({"mode": M})` picks a misbehaviour instead:
//! `trap` (panics), `loop` (never returns, until the CPU budget stops it) or `garbage` (names
//! a cause its info does not declare, breaking the world's contract). Any other key, or a
//! mode it does not know, is refused.

use serde::Deserialize;

/// The configuration `configure` accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Answer,
    Trap,
    Loop,
    Garbage,
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"properties":{"mode":{"enum":["answer","trap","loop","garbage"]}}}"#;

/// The one cause it names.
const CAUSE: &str = "stub-cause";

#[cfg(target_arch = "wasm32")]
mod glue {
    use std::cell::Cell;

    wit_bindgen::generate!({ world: "classifier-plugin", path: "../../../wit/classifier" });

    use exports::routewatch::classifier::classifier::Guest;
    use routewatch::classifier::types::{Cause, Classification, ClassifierInfo, Features};

    use super::{CAUSE, CONFIG_SCHEMA, Config, Mode};

    thread_local! {
        static CONFIG: Cell<Config> = Cell::new(Config::default());
    }

    struct Component;

    impl Guest for Component {
        fn info() -> ClassifierInfo {
            ClassifierInfo {
                name: "stub".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "names every incident stub-cause, or misbehaves on request; for tests only".into(),
                layouts: vec![1],
                causes: vec![CAUSE.into(), "other-cause".into()],
                config_schema: CONFIG_SCHEMA.into(),
            }
        }

        fn configure(config: String) -> Result<(), String> {
            let config: Config = serde_json::from_str(&config).map_err(|e| format!("configuration: {e}"))?;
            CONFIG.set(config);
            Ok(())
        }

        fn classify(incidents: Vec<Features>) -> Result<Vec<Classification>, String> {
            let named = |cause: &str| Classification {
                verdict: cause.into(),
                top: vec![Cause { name: cause.into(), probability: 0.99 }],
            };
            match CONFIG.get().mode {
                Mode::Answer => Ok(incidents.iter().map(|_| named(CAUSE)).collect()),
                Mode::Trap => panic!("the stub classifier traps on request"),
                Mode::Loop => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                Mode::Garbage => Ok(incidents.iter().map(|_| named("made-up-cause")).collect()),
            }
        }
    }

    export!(Component);
}
