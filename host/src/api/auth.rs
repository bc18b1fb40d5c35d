//! The bearer token that API mutations need: configured, or generated at first start and
//! kept in a file only its owner can read.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use super::error::ApiError;

/// Where a generated token is kept when the configuration names no file.
pub fn default_token_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))?;
    Some(state.join("routewatch").join("api-token"))
}

/// The configured token, else the one in `file`, else a new one written to `file`.
pub fn resolve(configured: Option<&str>, file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(token) = configured {
        return Ok(token.to_owned());
    }
    let file = file.map(Path::to_path_buf).or_else(default_token_file).context(
        "no API token configured and no place to keep a generated one: set api_token, api_token_file or HOME",
    )?;
    match std::fs::read_to_string(&file) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading the API token from {}", file.display())),
    }
    let token = generate()?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&file, &token).with_context(|| format!("writing the API token to {}", file.display()))?;
    tracing::info!(file = %file.display(), "generated an API token for plugin management");
    Ok(token)
}

/// 32 random bytes as hex.
fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for an API token")?;
    Ok(hex::encode(bytes))
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")
}

/// Lets a request through only with `Authorization: Bearer <token>`.
pub async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Result<Response, ApiError> {
    match check(request.headers().get(header::AUTHORIZATION), &state.token) {
        Ok(()) => Ok(next.run(request).await),
        Err(refusal) => {
            drain(request.into_body()).await;
            Err(refusal)
        }
    }
}

fn check(given: Option<&header::HeaderValue>, token: &str) -> Result<(), ApiError> {
    let Some(given) = given.and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "this request needs a bearer token"));
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the Authorization header must be Bearer"));
    };
    if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token is wrong"));
    }
    Ok(())
}

/// Reads and discards the rest of a refused request's body (at most [`DRAIN_BYTES`], for at
/// most a few seconds) before the refusal is sent. A server that closes a connection with
/// unread data in it resets the connection, and a client still sending an upload then sees a
/// broken pipe instead of the 401 or 413 that says why. Nothing is kept.
pub(super) async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    let discard = async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// Most bytes of a refused body read before giving up on it.
const DRAIN_BYTES: usize = 1 << 30;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/api-token");
        let first = resolve(None, Some(&file)).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(resolve(None, Some(&file)).unwrap(), first);
        assert_eq!(resolve(Some("configured-token-123"), Some(&file)).unwrap(), "configured-token-123");
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
