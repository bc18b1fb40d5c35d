//! A component built against a future version of the detector package. The host must refuse
//! it, naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package routewatch:detector@9.9.9;
        interface detector {
            info: func() -> string;
        }
        world detector-plugin {
            export detector;
        }
    "#,
});

struct Future;

impl exports::routewatch::detector::detector::Guest for Future {
    fn info() -> String {
        "from the future".into()
    }
}

export!(Future);
