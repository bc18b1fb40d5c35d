//! Apache Kafka as a test broker: one KRaft node (broker and controller in one JVM) on loopback.
//!
//! The broker's jars are a classpath that Maven resolves from `testkit/kafka/pom.xml` into
//! `KAFKA_HOME/lib` (`cargo xtask test` does it; see [`kafka_home`]). Each broker gets its own
//! data directory, formatted by `kafka.tools.StorageTool format --standalone`, then runs
//! `kafka.Kafka server.properties` with a small heap.
//!
//! Start-up is most of a test's cost, so the JVM is kept lean: the serial collector, only the
//! C1 compiler for tests (benchmarks get both tiers), and a class-data-sharing archive of the
//! broker's classes. The archive is written by the first broker started on a machine (it is
//! stopped gracefully on drop, since the JVM writes the archive at exit) and reused by every
//! later one; it roughly halves the time to the first answer.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The Apache Kafka version the tests run; `testkit/kafka/pom.xml` pins the same one, and the
/// compose file and Kubernetes notes name it too (deploy/check verifies that).
pub const KAFKA_VERSION: &str = "4.4.0";

/// Env var naming the directory whose `lib/` holds the broker's jars.
pub const KAFKA_HOME_ENV: &str = "ROUTEWATCH_KAFKA_HOME";

/// A fixed cluster id: every test broker is its own single-node cluster.
const CLUSTER_ID: &str = "cm91dGV3YXRjaC10ZXN0IQ";

/// Log4j 2 settings: warnings and worse to stdout, which goes to the broker's log file.
const LOG4J: &str = "rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka.server.KafkaRaftServer
logger.kafka.level=INFO
";

/// Broker settings every test broker gets, chosen for one node and quick tests: internal
/// topics with one replica and few partitions, no group join delay, short consumer-group
/// (KIP-848) heartbeats and sessions, a short broker session (a broker restarted after SIGKILL
/// registers again only once its old session has expired: 9 s by default), a log cleaner that
/// looks for work every half second, and no topics created by a stray produce or fetch (the
/// host must create its own).
const SERVER_DEFAULTS: &[(&str, &str)] = &[
    ("process.roles", "broker,controller"),
    ("node.id", "1"),
    ("controller.listener.names", "CONTROLLER"),
    ("inter.broker.listener.name", "PLAINTEXT"),
    ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"),
    ("auto.create.topics.enable", "false"),
    ("num.partitions", "1"),
    ("offsets.topic.replication.factor", "1"),
    ("offsets.topic.num.partitions", "4"),
    ("transaction.state.log.replication.factor", "1"),
    ("transaction.state.log.min.isr", "1"),
    ("transaction.state.log.num.partitions", "4"),
    ("share.coordinator.state.topic.replication.factor", "1"),
    ("share.coordinator.state.topic.min.isr", "1"),
    ("group.initial.rebalance.delay.ms", "0"),
    ("broker.session.timeout.ms", "2000"),
    ("broker.heartbeat.interval.ms", "500"),
    ("group.consumer.min.heartbeat.interval.ms", "500"),
    ("group.consumer.heartbeat.interval.ms", "500"),
    ("group.consumer.min.session.timeout.ms", "6000"),
    ("group.consumer.session.timeout.ms", "6000"),
    ("num.network.threads", "2"),
    ("num.io.threads", "2"),
    ("background.threads", "2"),
    ("num.recovery.threads.per.data.dir", "1"),
    ("log.cleaner.threads", "1"),
    ("log.cleaner.backoff.ms", "500"),
    ("log.cleaner.dedupe.buffer.size", "8388608"),
    ("log.initial.task.delay.ms", "1000"),
    ("log.segment.delete.delay.ms", "1000"),
];

/// Where the broker's jars are installed: `$ROUTEWATCH_KAFKA_HOME`, else
/// `~/.cache/routewatch/kafka-VERSION` if its `lib/` exists. Panics, saying how to install
/// them, otherwise.
pub fn kafka_home() -> PathBuf {
    if let Some(home) = std::env::var_os(KAFKA_HOME_ENV) {
        let home = PathBuf::from(home);
        assert!(
            home.join("lib").is_dir(),
            "{KAFKA_HOME_ENV}={} has no lib/ directory of Kafka jars; {}",
            home.display(),
            install_hint()
        );
        return home;
    }
    let default = default_kafka_home();
    if default.as_ref().is_some_and(|h| has_jars(&h.join("lib"))) {
        return default.unwrap();
    }
    panic!("Apache Kafka {KAFKA_VERSION} (the test broker) is not installed; {}", install_hint())
}

/// `~/.cache/routewatch/kafka-VERSION`, where `cargo xtask test` installs the broker.
pub fn default_kafka_home() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("routewatch").join(format!("kafka-{KAFKA_VERSION}")))
}

fn install_hint() -> String {
    format!(
        "run `cargo xtask test` (it installs it with Maven and sets {KAFKA_HOME_ENV}), or by hand: \
         `mvn -f testkit/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
         -DoutputDirectory=$HOME/.cache/routewatch/kafka-{KAFKA_VERSION}/lib` (needs Maven and Java 17+)"
    )
}

fn has_jars(lib: &Path) -> bool {
    std::fs::read_dir(lib)
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jar"))))
}

/// The JVM: `$JAVA_HOME/bin/java`, else `java` on the path.
fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin").join("java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "java".into())
}

/// How a Kafka broker is started.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    /// Extra `server.properties` settings, over the defaults.
    pub settings: Vec<(String, String)>,
    /// Both JIT tiers (C1 and C2) instead of C1 alone: slower to start, faster once warm.
    /// Benchmarks want it; tests do not.
    pub full_jit: bool,
}

impl KafkaOptions {
    /// Adds a `server.properties` setting.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// One running (or stopped, between [`KafkaNode::stop`] and [`KafkaNode::start`]) Kafka JVM.
pub(crate) struct KafkaNode {
    home: PathBuf,
    dir: tempfile::TempDir,
    options: KafkaOptions,
    pub(crate) child: Option<Child>,
    /// Set while this JVM writes the class-data archive at its exit.
    training: Option<Training>,
}

/// The class-data archive this JVM writes when it exits gracefully.
struct Training {
    partial: PathBuf,
    archive: PathBuf,
    lock: PathBuf,
}

impl KafkaNode {
    /// Formats a fresh data directory for a node on `port` (controller on `controller_port`).
    pub(crate) fn format(port: u16, controller_port: u16, options: KafkaOptions) -> Result<KafkaNode, String> {
        let home = kafka_home();
        let dir = tempfile::Builder::new().prefix("routewatch-kafka-").tempdir().map_err(|e| e.to_string())?;
        let mut settings: Vec<(String, String)> =
            SERVER_DEFAULTS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        settings.push((
            "listeners".into(),
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
        ));
        settings.push(("advertised.listeners".into(), format!("PLAINTEXT://127.0.0.1:{port}")));
        settings.push(("controller.quorum.bootstrap.servers".into(), format!("127.0.0.1:{controller_port}")));
        settings.push(("log.dirs".into(), dir.path().join("data").display().to_string()));
        settings.extend(options.settings.iter().cloned());
        let mut properties = String::new();
        for (key, value) in &settings {
            properties.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(dir.path().join("server.properties"), properties).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("log4j2.properties"), LOG4J).map_err(|e| e.to_string())?;
        let mut node = KafkaNode { home, dir, options, child: None, training: None };
        let out = node
            .java_command(false)?
            .args(["kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted"])
            .args(["--cluster-id", CLUSTER_ID, "--config"])
            .arg(node.dir.path().join("server.properties"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e} (Java 17 or later is needed)", java().display()))?;
        if !out.status.success() {
            return Err(format!(
                "formatting the Kafka storage failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(node)
    }

    /// The data directory (`log.dirs`).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The broker's log file (stdout and stderr of every start).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    /// Starts the JVM on the node's data directory.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the Kafka node is already running");
        let log = File::options().create(true).append(true).open(self.log_path()).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = self.java_command(true)?;
        cmd.arg("kafka.Kafka").arg(self.dir.path().join("server.properties"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {}: {e} (Java 17 or later is needed)", java().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the JVM (SIGKILL, as a crash would) and waits for it; the data directory stays.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed JVM writes no archive.
        if let Some(training) = self.training.take() {
            let _ = std::fs::remove_file(&training.partial);
            let _ = std::fs::remove_file(&training.lock);
        }
    }

    /// `java` with the classpath and JVM options; `server` adds the heap, JIT and class-data
    /// settings of a broker.
    fn java_command(&mut self, server: bool) -> Result<Command, String> {
        let lib = self.home.join("lib");
        let mut jars: Vec<PathBuf> = std::fs::read_dir(&lib)
            .map_err(|e| format!("reading {}: {e}", lib.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jar"))
            .collect();
        // A stable order, which the class-data archive requires of its classpath.
        jars.sort();
        let classpath = std::env::join_paths(&jars).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(java());
        cmd.args(["-Xms64m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-XX:+ExitOnOutOfMemoryError"])
            .arg("-Djava.awt.headless=true")
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.path().join("log4j2.properties").display()));
        if server {
            cmd.arg("-Xmx256m");
            if !self.options.full_jit {
                cmd.arg("-XX:TieredStopAtLevel=1");
            }
            cmd.args(self.class_data(&jars));
        } else {
            cmd.args(["-Xmx128m", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]);
        }
        cmd.arg("-cp").arg(classpath);
        Ok(cmd)
    }

    /// The class-data-sharing option: use the archive, or write it if no one else is.
    fn class_data(&mut self, jars: &[PathBuf]) -> Vec<String> {
        // One archive per JVM build and classpath (full JIT or not does not matter).
        let tag = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&(std::fs::canonicalize(which_java()).ok(), jars), &mut h);
            std::hash::Hasher::finish(&h)
        };
        let archive = self.home.join(format!("kafka-{tag:016x}.jsa"));
        if archive.is_file() {
            return vec![format!("-XX:SharedArchiveFile={}", archive.display())];
        }
        let lock = archive.with_extension("lock");
        // A lock left by a test process that died long ago is stale.
        if std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > Duration::from_secs(600))
        {
            let _ = std::fs::remove_file(&lock);
        }
        match File::create_new(&lock) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                let partial = archive.with_extension(format!("partial-{}", std::process::id()));
                let option = format!("-XX:ArchiveClassesAtExit={}", partial.display());
                self.training = Some(Training { partial, archive, lock });
                vec![option]
            }
            Err(_) => Vec::new(),
        }
    }

    /// Stops a training JVM gracefully so it writes its archive (at most `timeout`), then
    /// installs the archive; any other JVM is killed.
    pub(crate) fn shut_down(&mut self, timeout: Duration) {
        if let (Some(training), Some(child)) = (&self.training, &mut self.child) {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    if training.partial.is_file() {
                        let _ = std::fs::rename(&training.partial, &training.archive);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.stop();
    }
}

/// The `java` binary's path, resolved through `PATH` when it is a bare name.
fn which_java() -> PathBuf {
    let java = java();
    if java.components().count() > 1 {
        return java;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(&java)).find(|p| p.is_file()))
        .unwrap_or(java)
}
