//! `Record::decode` on near-valid JSON records: every field is either valid or one of the
//! hostile shapes a producer could send (extreme and overflowing numbers, long strings, deep
//! nesting, invalid UTF-8, lone surrogates, duplicate, missing and extra fields, any order).
//! Whatever is accepted must meet the same oracle as the raw-bytes target.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use routewatch_telemetry::Metric;

/// Number literals at the edges of f64, i64 and u64, and some that are not numbers at all.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1",
    "0.5",
    "1.0",
    "0.9999999999999999",
    "1.0000000000000002",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "1e309",
    "-1e308",
    "5e-324",
    "2.4703282292062328e-324",
    "2.4703282292062327e-324",
    "1e-400",
    "4.9406564584124654e-324",
    "2.2250738585072014e-308",
    "2.2250738585072011e-308",
    "123456789012345678901234567890",
    "0.30000000000000004",
    "-1",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "1E+2",
    "1.5e-5",
    "1e-7",
    "00",
    "01",
    "1.",
    ".5",
    "+1",
    "-",
    "1e",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "\"1\"",
    "[]",
    "{}",
    "0x10",
    "1_000",
];

#[derive(Arbitrary, Debug)]
enum Number {
    Valid,
    Edge(u8),
    Float(f64),
    /// Scientific notation of a float, which takes another parsing path.
    Exponent(f64),
    Int(i64),
    /// Many digits: mantissas beyond 19 digits are where parsers round.
    Digits {
        integer: u64,
        fraction: u64,
        exponent: i16,
    },
    Nested(u8),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Valid,
    Long { byte: u8, len: u16 },
    Bytes(Vec<u8>),
    Escape(u16),
    Number(Number),
}

#[derive(Arbitrary, Debug)]
enum Field {
    Keep,
    Missing,
    Duplicate,
}

#[derive(Arbitrary, Debug)]
struct Input {
    schema: Number,
    ids: [Text; 4],
    role: Text,
    ts: Number,
    metrics: [Number; 10],
    fields: [Field; 8],
    metric_fields: [Field; 10],
    /// Rotation of the top-level fields.
    rotate: u8,
    extra: Option<(Text, Number)>,
    /// Depth of arrays wrapped around the metrics object.
    wrap_metrics: u8,
    whitespace: bool,
}

fn number(n: &Number, valid: &str, out: &mut Vec<u8>) {
    match n {
        Number::Valid => out.extend_from_slice(valid.as_bytes()),
        Number::Edge(i) => out.extend_from_slice(EDGE_NUMBERS[*i as usize % EDGE_NUMBERS.len()].as_bytes()),
        Number::Float(f) => out.extend_from_slice(f.to_string().as_bytes()),
        Number::Exponent(f) => out.extend_from_slice(format!("{f:e}").as_bytes()),
        Number::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Number::Digits { integer, fraction, exponent } => {
            out.extend_from_slice(format!("{integer}.{fraction:019}e{exponent}").as_bytes())
        }
        Number::Nested(depth) => {
            let depth = usize::from(*depth) * 4;
            out.extend(std::iter::repeat_n(b'[', depth));
            out.extend_from_slice(valid.as_bytes());
            out.extend(std::iter::repeat_n(b']', depth));
        }
    }
}

fn text(t: &Text, valid: &str, out: &mut Vec<u8>) {
    match t {
        Text::Number(n) => return number(n, "0", out),
        _ => out.push(b'"'),
    }
    match t {
        Text::Valid => out.extend_from_slice(valid.as_bytes()),
        Text::Long { byte, len } => out.extend(std::iter::repeat_n(*byte, usize::from(*len) % 300)),
        Text::Bytes(bytes) => out.extend_from_slice(bytes),
        Text::Escape(unit) => out.extend_from_slice(format!("{valid}\\u{unit:04x}").as_bytes()),
        Text::Number(_) => unreachable!(),
    }
    out.push(b'"');
}

fn field(out: &mut Vec<u8>, first: &mut bool, whitespace: bool, name: &str, value: &[u8]) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    if whitespace {
        out.extend_from_slice(b"\n\t ");
    }
    out.extend_from_slice(format!("\"{name}\":").as_bytes());
    out.extend_from_slice(value);
}

fn emit(out: &mut Vec<u8>, first: &mut bool, ws: bool, f: &Field, name: &str, value: &[u8]) {
    match f {
        Field::Keep => field(out, first, ws, name, value),
        Field::Missing => {}
        Field::Duplicate => {
            field(out, first, ws, name, value);
            field(out, first, ws, name, value);
        }
    }
}

fn render(input: &Input) -> Vec<u8> {
    const VALID_METRICS: [&str; 10] = ["0.41", "0.63", "47.5", "6100", "3.2", "0.0001", "4.1e9", "3.8e9", "0", "4"];
    let mut metrics = vec![b'{'];
    let mut first = true;
    for (i, metric) in Metric::ALL.iter().enumerate() {
        let mut value = Vec::new();
        number(&input.metrics[i], VALID_METRICS[i], &mut value);
        emit(&mut metrics, &mut first, input.whitespace, &input.metric_fields[i], metric.name(), &value);
    }
    metrics.push(b'}');
    let depth = usize::from(input.wrap_metrics % 8);
    let mut wrapped = vec![b'['; depth];
    wrapped.extend_from_slice(&metrics);
    wrapped.extend(std::iter::repeat_n(b']', depth));

    let mut fields: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut value = Vec::new();
    number(&input.schema, "1", &mut value);
    fields.push(("schema", std::mem::take(&mut value)));
    for (i, (name, valid)) in
        [("router", "rtr-000042"), ("site", "fra1"), ("region", "eu-central"), ("vendor", "acme")].iter().enumerate()
    {
        text(&input.ids[i], valid, &mut value);
        fields.push((name, std::mem::take(&mut value)));
    }
    text(&input.role, "edge", &mut value);
    fields.push(("role", std::mem::take(&mut value)));
    number(&input.ts, "1764000000000", &mut value);
    fields.push(("ts", std::mem::take(&mut value)));
    fields.push(("metrics", wrapped));
    let rotate = usize::from(input.rotate) % fields.len();
    fields.rotate_left(rotate);

    let mut out = vec![b'{'];
    let mut first = true;
    for (i, (name, value)) in fields.iter().enumerate() {
        emit(&mut out, &mut first, input.whitespace, &input.fields[i], name, value);
    }
    if let Some((name, extra)) = &input.extra {
        let mut key = Vec::new();
        text(name, "extra", &mut key);
        let mut value = Vec::new();
        number(extra, "1", &mut value);
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&key);
        out.push(b':');
        out.extend_from_slice(&value);
    }
    out.push(b'}');
    out
}

fuzz_target!(|input: Input| routewatch_fuzz::check_record(&render(&input)));
