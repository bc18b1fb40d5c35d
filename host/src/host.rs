//! A running host: the plugins (registry and directory watcher), the HTTP API and the Kafka
//! service, put together. The pieces do not know each other: the API and the Kafka service
//! share the registry, the metrics and the anomaly feed, which this module hands to both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;

use crate::alertmanager::{AlertCounters, Alertmanager, AlertmanagerConfig};
use crate::api::{self, ApiState};
use crate::config::HostConfig;
use crate::feed::AnomalyFeed;
use crate::healing::Healing;
use crate::incidents::{AckFollower, IncidentBook};
use crate::kafka::sites::{SiteOutputs, SiteService};
use crate::kafka::{KafkaService, Outputs};
use crate::metrics::Metrics;
use crate::registry::watch::{self, DirWatcher};
use crate::registry::{Registry, TrustedKeys};
use crate::runtime::{Limits, Runtime, RuntimeConfig};

/// How long a shutdown may take to finish batches, save state and commit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A running host (`routewatch run`).
pub struct Host {
    kafka: KafkaService,
    sites: Option<SiteService>,
    _acks: AckFollower,
    metrics: Arc<Metrics>,
    feed: Arc<AnomalyFeed>,
    incidents: Arc<IncidentBook>,
    registry: Arc<Registry>,
    http_addr: SocketAddr,
    _http: api::Server,
    _watcher: Option<DirWatcher>,
}

impl Host {
    /// Loads the plugins, starts the HTTP API, creates missing topics and joins the group.
    pub fn start(config: HostConfig) -> anyhow::Result<Host> {
        config.validate()?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: config.cache_dir.clone(),
            cache_max_bytes: config.cache_max_mib << 20,
            limits: Limits {
                cpu_budget: Duration::from_millis(config.cpu_budget_ms),
                memory_bytes: config.memory_mib << 20,
                ..Limits::default()
            },
        })?;
        let metrics = Arc::new(Metrics::default());
        let registry = load_plugins(runtime, &config, &metrics)?;
        let healing = start_healing(&config, &registry, &metrics)?;
        // Watched only once self-healing guards which classifier may take over.
        let watcher = match &config.plugin_dir {
            Some(dir) => {
                Some(DirWatcher::start(registry.clone(), dir.clone()).context("watching the plugin directory")?)
            }
            None => None,
        };
        let incidents = Arc::new(IncidentBook::default());
        let token = api::auth::resolve(config.api_token.as_deref(), config.api_token_file.as_deref())?;
        let feed = Arc::new(AnomalyFeed::default());
        let ready = Arc::new(AtomicBool::new(false));
        let topics = api::incidents::IncidentTopics {
            producer: crate::broker::producer(&config)?,
            feedback: config.feedback_topic.clone(),
            acks: config.acks_topic.clone(),
        };
        let http = api::Server::start(
            config.listen,
            ApiState::new(
                metrics.clone(),
                feed.clone(),
                ready.clone(),
                registry.clone(),
                token.into(),
                config.max_upload_mib << 20,
            )
            .with_incidents(incidents.clone(), Some(topics))
            .with_healing(healing.clone()),
        )?;
        let http_addr = http.addr();
        let alertmanager = (!config.alertmanager_urls.is_empty()).then(|| {
            Arc::new(Alertmanager::start(
                AlertmanagerConfig {
                    urls: config.alertmanager_urls.clone(),
                    runbook_url: config.runbook_url.clone(),
                    api: Some(format!("http://{http_addr}")),
                },
                AlertCounters::of(&metrics),
            ))
        });
        let site_outputs =
            SiteOutputs { metrics: metrics.clone(), book: incidents.clone(), alertmanager: alertmanager.clone() };
        let outputs =
            Outputs { feed: feed.clone(), incidents: incidents.clone(), alertmanager, healing: healing.clone() };
        let site_config = config.runs_sites().then(|| config.clone());
        let ack_config = config.clone();
        // Creates the topics, the site topic among them, before the site stage subscribes.
        let kafka = KafkaService::start(config, registry.clone(), metrics.clone(), outputs, ready)?;
        let sites = site_config.map(|config| SiteService::start(&config, site_outputs)).transpose()?;
        let acks = AckFollower::start(&ack_config, incidents.clone())?;
        Ok(Host {
            kafka,
            sites,
            _acks: acks,
            metrics,
            feed,
            incidents,
            registry,
            http_addr,
            _http: http,
            _watcher: watcher,
        })
    }

    /// The plugins this host runs.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The host's Prometheus metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Recent anomalies, and the live feed.
    pub fn feed(&self) -> &Arc<AnomalyFeed> {
        &self.feed
    }

    /// Recent incidents, and their live feed.
    pub fn incidents(&self) -> &Arc<IncidentBook> {
        &self.incidents
    }

    /// Where the HTTP API listens (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Whether the Kafka service has stopped (by itself only on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.kafka.is_finished() || self.sites.as_ref().is_some_and(SiteService::is_finished)
    }

    /// Finishes in-flight batches, saves state, commits offsets and leaves the group. Gives
    /// up after [`SHUTDOWN_GRACE`] (a broker that is gone cannot acknowledge anything): the
    /// uncommitted records are then read again by the next owner.
    pub fn shutdown(self) -> anyhow::Result<()> {
        // The partitions first: their last incident updates reach the site topic before the
        // site stage saves and leaves.
        let kafka = self.kafka.shutdown(SHUTDOWN_GRACE);
        let sites = self.sites.map_or(Ok(()), |sites| sites.shutdown(SHUTDOWN_GRACE));
        kafka.and(sites)
    }
}

/// Self-healing, when incidents are on: its policies are checked against the causes the live
/// classifier names (none without a classifier, so a policy then cannot load). A classifier
/// swapped in later must name every cause a policy acts on, or it is refused.
fn start_healing(
    config: &HostConfig,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<Healing>>> {
    if !config.incidents {
        anyhow::ensure!(
            config.healing.policies.is_empty(),
            "self-healing policies need incidents (drop --no-incidents)"
        );
        return Ok(None);
    }
    let classifier = registry.classifier();
    let causes = classifier.as_ref().map(|c| c.causes.clone()).unwrap_or_default();
    anyhow::ensure!(
        classifier.is_some() || config.healing.policies.is_empty(),
        "self-healing policies act on incident causes: give a classifier (--classifier)"
    );
    let healing = Healing::start(
        config.healing.clone(),
        causes,
        crate::broker::producer(config)?,
        config.actions_topic.clone(),
        metrics.clone(),
    )
    .context("healing")?;
    let weak = Arc::downgrade(&healing);
    registry.set_classifier_guard(Box::new(move |info| match weak.upgrade() {
        Some(healing) => healing.accepts_causes(&info.causes),
        None => Ok(()),
    }));
    let policies = config.healing.policies.len();
    tracing::info!(policies, dry_run = config.healing.dry_run, "self-healing ready");
    Ok(Some(healing))
}

/// Builds the registry: the configured files, detectors and classifier (any failure stops the
/// start), then the plugin directory (a bad file there is reported and skipped; a classifier
/// there takes over from the configured one, which comes back if it is removed).
fn load_plugins(runtime: Runtime, config: &HostConfig, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<Registry>> {
    if let Some(dir) = &config.plugin_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the plugin directory {}", dir.display()))?;
    }
    let trusted = TrustedKeys::parse(&config.trusted_keys).context("trusted_keys")?;
    let registry = Arc::new(
        Registry::new(runtime, metrics.clone(), config.quarantine_policy(), config.plugin_dir.clone())?
            .with_trusted_keys(trusted),
    );
    for (name, plugin_config) in &config.plugin_config {
        registry.set_initial_config(name, plugin_config.clone());
    }
    for path in &config.plugins {
        let status = registry.install_file(path).with_context(|| format!("loading plugin {}", path.display()))?;
        tracing::info!(plugin = %status.name, version = %status.version, sha256 = %status.sha256, "loaded plugin");
    }
    registry.set_initial_classifier_config(config.classifier_config.clone());
    if let Some(path) = &config.classifier {
        let status = registry
            .install_classifier_file(path)
            .with_context(|| format!("loading the classifier {}", path.display()))?;
        tracing::info!(classifier = %status.name, version = %status.version, sha256 = %status.sha256, "loaded classifier");
    }
    match &config.plugin_dir {
        Some(dir) => {
            let loaded = watch::load_dir(&registry, dir)
                .with_context(|| format!("reading the plugin directory {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), loaded, "loaded the plugin directory");
        }
        None => {
            let names: Vec<String> = registry.list().into_iter().map(|s| s.name).collect();
            for name in config.plugin_config.keys() {
                anyhow::ensure!(
                    names.contains(name),
                    "plugin_config names {name}, which is not among the loaded plugins"
                );
            }
        }
    }
    Ok(registry)
}
