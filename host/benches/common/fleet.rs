//! The benchmark fleet: plausible records with a daily cycle, and a producer tuned for volume.
#![allow(dead_code)] // not every benchmark produces

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use routewatch_telemetry::{Metrics, Record, Role, SCHEMA_VERSION};
use routewatch_testkit::Broker;

pub fn record(router: usize, ts: i64, step: usize) -> Vec<u8> {
    let phase = step as f64 * std::f64::consts::TAU / 288.0 + router as f64;
    let wiggle = ((router * 7919 + step * 104_729) % 1000) as f64 / 1000.0;
    Record {
        schema: SCHEMA_VERSION,
        router: format!("rtr-{router:06}"),
        site: format!("site{}", router % 40),
        region: "eu".into(),
        role: Role::Edge,
        vendor: "acme".into(),
        ts,
        metrics: Metrics {
            cpu_util: 0.4 + 0.1 * phase.sin() + 0.01 * wiggle,
            mem_util: 0.5 + 0.01 * wiggle,
            temp_c: 40.0 + 3.0 * phase.sin() + 0.2 * wiggle,
            fan_rpm: 6000.0 + 100.0 * wiggle,
            latency_ms: 3.0 + 0.3 * wiggle,
            loss_ratio: 0.0001 * wiggle,
            rx_bps: 4e9 * (1.0 + 0.2 * phase.sin()) + 1e7 * wiggle,
            tx_bps: 3e9 * (1.0 + 0.2 * phase.sin()) + 1e7 * wiggle,
            if_errors: 0.0,
            bgp_up: 4.0,
        },
    }
    .encode()
}

pub fn producer(broker: &Broker) -> FutureProducer {
    producer_to(&broker.bootstrap())
}

/// The same producer, for a broker known only by its address (a bench's child process).
pub fn producer_to(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer")
}
