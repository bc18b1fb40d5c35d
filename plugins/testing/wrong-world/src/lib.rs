//! A component that is not a detector: it exports an unrelated interface. The host must
//! refuse it with a clear error.

wit_bindgen::generate!({
    inline: r#"
        package routewatch:not-a-detector@0.1.0;
        interface greeter {
            greet: func(name: string) -> string;
        }
        world greeter-plugin {
            export greeter;
        }
    "#,
});

struct Greeter;

impl exports::routewatch::not_a_detector::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
