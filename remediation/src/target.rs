//! Sending an action to its target: `POST {target}/routers/{router}/actions` with
//! `{"action": NAME, "reason": "incident ID (action ACTION_ID)", "requested_by":
//! "routewatch:POLICY"}` (the simulator's actions API), a timeout per attempt, and retries
//! with exponential backoff while the target cannot be reached or answers 5xx. A 4xx is the
//! target's answer and is not retried. Whatever happens ends as a [`Sent`], never a panic.

use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use crate::healer::{Execution, Sent};

/// Longest answer kept from a target (in the audit record).
pub const MAX_ANSWER_BYTES: usize = 1024;
/// First wait between attempts; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Sends actions over HTTP.
#[derive(Debug, Clone, Default)]
pub struct HttpTarget {
    /// Longest wait between attempts (default: 5 s).
    pub max_backoff: Option<Duration>,
}

/// One attempt's failure.
struct Attempt {
    retriable: bool,
    detail: String,
}

impl HttpTarget {
    /// Sends `execution`, retrying as its policy says.
    pub fn send(&self, execution: &Execution) -> Sent {
        let url = format!(
            "{}/routers/{}/actions",
            execution.target.trim_end_matches('/'),
            utf8_percent_path(&execution.router)
        );
        let body = serde_json::json!({
            "action": execution.action,
            "reason": format!("incident {} (action {})", execution.incident, execution.id),
            "requested_by": format!("routewatch:{}", execution.policy),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(execution.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut attempts = 0;
        let once = || {
            attempts += 1;
            match agent.post(&url).send_json(&body) {
                Ok(mut response) => {
                    let status = response.status();
                    let text = response
                        .body_mut()
                        .with_config()
                        .limit(MAX_ANSWER_BYTES as u64 * 4)
                        .read_to_string()
                        .unwrap_or_default();
                    let text = truncate(&text);
                    if status.is_success() {
                        Ok(format!("{status}: {text}"))
                    } else {
                        Err(Attempt { retriable: status.is_server_error(), detail: format!("{status}: {text}") })
                    }
                }
                Err(err) => Err(Attempt { retriable: true, detail: truncate(&err.to_string()) }),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF)
            .with_max_delay(self.max_backoff.unwrap_or(Duration::from_secs(5)))
            .with_max_times(execution.retries as usize);
        let result = once.retry(backoff).sleep(std::thread::sleep).when(|a: &Attempt| a.retriable).call();
        match result {
            Ok(detail) => Sent { ok: true, attempts, detail },
            Err(failure) => Sent { ok: false, attempts, detail: format!("{url}: {}", failure.detail) },
        }
    }
}

/// A router name as one path segment: anything but unreserved characters percent-encoded.
fn utf8_percent_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    // "." and ".." would be read as path steps.
    let dots_too = segment == "." || segment == "..";
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') || (byte == b'.' && !dots_too) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ANSWER_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ANSWER_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_name_is_one_path_segment() {
        assert_eq!(utf8_percent_path("rtr-001.core_a~"), "rtr-001.core_a~");
        assert_eq!(utf8_percent_path("../x y/é"), "..%2Fx%20y%2F%C3%A9");
        assert_eq!(utf8_percent_path(".."), "%2E%2E");
    }

    #[test]
    fn long_answers_are_cut_at_a_character() {
        let long = "é".repeat(MAX_ANSWER_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ANSWER_BYTES + '…'.len_utf8() && cut.ends_with('…'));
    }
}
