//! `routewatch plugin`: manage a running host's detectors over its API, so that operators need
//! not write curl by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use routewatch_host::api::auth::default_token_file;
use routewatch_host::registry::PluginStatus;
use routewatch_host::registry::signing::KeyPair;
use serde::Deserialize;

#[derive(Args)]
pub struct PluginArgs {
    /// The host's API.
    #[arg(long, env = "ROUTEWATCH_HOST", default_value = "http://127.0.0.1:9400")]
    host: String,
    /// Bearer token for changes (default: from --token-file).
    #[arg(long, env = "ROUTEWATCH_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token (default: where the host writes a generated one on this machine).
    #[arg(long, env = "ROUTEWATCH_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins: version, state and counters.
    Ls {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin in full (JSON).
    Show { name: String },
    /// Upload a component; it replaces the running version of its plugin, state carried over.
    /// A signature `FILE.sig` beside it is sent along.
    Push {
        file: PathBuf,
        /// Take over a plugin that came from elsewhere (a `--plugin` file, another file).
        #[arg(long)]
        replace: bool,
    },
    /// Let the current version start without the old state where it refused that state.
    StartFresh { name: String },
    /// Make an ed25519 key pair for signing plugins: the secret goes to FILE (owner-only),
    /// the public key (for `trusted_keys`) to standard output.
    Keygen { file: PathBuf },
    /// Sign a component with a secret key from `keygen`: writes `PLUGIN.wasm.sig`.
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Let a plugin see records again (also lifts a quarantine).
    Enable { name: String },
    /// Stop a plugin seeing records; it keeps its state.
    Disable { name: String },
    /// Show a plugin's configuration, or replace it with JSON (or @FILE).
    Config { name: String, json: Option<String> },
    /// Unload a plugin (and delete its file from the host's plugin directory).
    Rm { name: String },
}

#[derive(Deserialize)]
struct ApiError {
    error: String,
    reason: String,
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }

    fn token(&self) -> Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let file = self.token_file.clone().or_else(default_token_file).context("no API token: pass --token")?;
        let token = std::fs::read_to_string(&file).with_context(|| {
            format!("no API token: pass --token or set ROUTEWATCH_API_TOKEN (no token file at {})", file.display())
        })?;
        Ok(token.trim().to_owned())
    }

    /// Sends a request and returns the body of a 2xx answer, or the API's reason as an error.
    fn send(&self, method: &str, path: &str, body: Body) -> Result<String> {
        let url = self.url(path);
        let auth = match method {
            "GET" => None,
            _ => Some(format!("Bearer {}", self.token()?)),
        };
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), auth).call(),
            (_, Body::Empty) => with_auth(self.agent.post(&url), auth).send_empty(),
            (_, Body::Wasm(bytes, signature)) => {
                let request = with_auth(self.agent.post(&url), auth).header("Content-Type", "application/wasm");
                match signature {
                    Some(signature) => request.header("X-Routewatch-Signature", signature.trim()).send(&bytes[..]),
                    None => request.send(&bytes[..]),
                }
            }
            (_, Body::Json(value)) => with_auth(self.agent.put(&url), auth).send_json(&value),
        };
        let mut response = sent.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
        if status.is_success() {
            return Ok(text);
        }
        match serde_json::from_str::<ApiError>(&text) {
            Ok(err) => bail!("{} (HTTP {}, {})", err.reason, status.as_u16(), err.error),
            Err(_) => bail!("HTTP {} from {url}: {text}", status.as_u16()),
        }
    }
}

enum Body {
    Empty,
    /// A component and its signature, if any.
    Wasm(Vec<u8>, Option<String>),
    Json(serde_json::Value),
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, auth: Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(auth) => request.header("Authorization", auth),
        None => request,
    }
}

pub fn run(args: PluginArgs) -> Result<ExitCode> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let client = Client { agent, base: args.host, token: args.token, token_file: args.token_file };
    match args.command {
        PluginCommand::Ls { json } => {
            let text = client.send("GET", "/api/v1/plugins", Body::Empty)?;
            if json {
                println!("{text}");
            } else {
                let plugins: Vec<PluginStatus> = serde_json::from_str(&text).context("reading the plugin list")?;
                print_table(&plugins);
            }
        }
        PluginCommand::Show { name } => {
            println!("{}", client.send("GET", &format!("/api/v1/plugins/{name}"), Body::Empty)?)
        }
        PluginCommand::Push { file, replace } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let signature = std::fs::read_to_string(signature_path(&file)).ok();
            let path = if replace { "/api/v1/plugins?replace=true" } else { "/api/v1/plugins" };
            let status: PluginStatus =
                serde_json::from_str(&client.send("POST", path, Body::Wasm(bytes, signature))?)?;
            println!("{} {} is {} (sha256 {})", status.name, status.version, status.state, &status.sha256[..12]);
        }
        PluginCommand::StartFresh { name } => {
            print_state(&client.send("POST", &format!("/api/v1/plugins/{name}/start-fresh"), Body::Empty)?)?
        }
        PluginCommand::Keygen { file } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pair = KeyPair::generate().context("reading /dev/urandom")?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {} (it must not exist yet)", file.display()))?;
            writeln!(out, "{}", pair.secret_hex())?;
            println!("{}", pair.public_hex());
        }
        PluginCommand::Sign { key, file } => {
            let secret = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            let pair = KeyPair::from_secret_hex(&secret).context("the key file holds no secret key from keygen")?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let out = signature_path(&file);
            std::fs::write(&out, pair.sign_hex(&bytes)).with_context(|| format!("writing {}", out.display()))?;
            println!("{} signed by {}", out.display(), pair.public_hex());
        }
        PluginCommand::Enable { name } => {
            print_state(&client.send("POST", &format!("/api/v1/plugins/{name}/enable"), Body::Empty)?)?
        }
        PluginCommand::Disable { name } => {
            print_state(&client.send("POST", &format!("/api/v1/plugins/{name}/disable"), Body::Empty)?)?
        }
        PluginCommand::Config { name, json: None } => {
            println!("{}", client.send("GET", &format!("/api/v1/plugins/{name}/config"), Body::Empty)?);
        }
        PluginCommand::Config { name, json: Some(json) } => {
            let text = match json.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
                None => json,
            };
            let value: serde_json::Value = serde_json::from_str(&text).context("the configuration is not JSON")?;
            print_state(&client.send("PUT", &format!("/api/v1/plugins/{name}/config"), Body::Json(value))?)?;
        }
        PluginCommand::Rm { name } => {
            client.send("DELETE", &format!("/api/v1/plugins/{name}"), Body::Empty)?;
            println!("{name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `PLUGIN.wasm.sig`, where a component's signature lives.
fn signature_path(component: &std::path::Path) -> PathBuf {
    let mut path = component.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

fn print_state(text: &str) -> Result<()> {
    let status: PluginStatus = serde_json::from_str(text).context("reading the plugin")?;
    println!("{} {} is {}", status.name, status.version, status.state);
    Ok(())
}

fn print_table(plugins: &[PluginStatus]) {
    println!(
        "{:<16} {:<10} {:<12} {:>12} {:>10} {:>7} {:>7}  SHA256",
        "NAME", "VERSION", "STATE", "POINTS", "ANOMALIES", "TRAPS", "RELOADS"
    );
    for p in plugins {
        println!(
            "{:<16} {:<10} {:<12} {:>12} {:>10} {:>7} {:>7}  {}",
            p.name,
            p.version,
            p.state,
            p.counters.points,
            p.counters.anomalies,
            p.counters.traps,
            p.counters.reloads,
            &p.sha256[..12]
        );
        if let Some(q) = &p.quarantine {
            println!("  quarantined for {:.0} s more: {}", q.remaining_secs, q.reason);
        }
        if let Some(err) = &p.last_error {
            println!("  last refused change: {err}");
        }
    }
}
