//! Sending actions over real HTTP: what the target gets, retries on 5xx and on a target that
//! is not there, no retry on a 4xx, and a timeout that ends an attempt.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use routewatch_remediation::{Execution, HttpTarget};
use routewatch_telemetry::Action;

#[derive(Default)]
struct Seen {
    calls: AtomicU32,
    bodies: Mutex<Vec<(String, serde_json::Value)>>,
}

/// A target answering each call with the next status of `answers` (the last repeats), after
/// `delay`.
fn target(answers: Vec<StatusCode>, delay: Duration) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let state = (seen.clone(), Arc::new(answers), delay);
    let app = axum::Router::new()
        .route(
            "/routers/{id}/actions",
            post(
                |State((seen, answers, delay)): State<(Arc<Seen>, Arc<Vec<StatusCode>>, Duration)>,
                 Path(id): Path<String>,
                 Json(body): Json<serde_json::Value>| async move {
                    let n = seen.calls.fetch_add(1, Ordering::SeqCst) as usize;
                    seen.bodies.lock().unwrap().push((id, body));
                    tokio::time::sleep(delay).await;
                    (answers[n.min(answers.len() - 1)], "{\"accepted\":true}")
                },
            ),
        )
        .with_state(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap().block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        })
    });
    (url, seen)
}

fn execution(target: &str, retries: u32, timeout: Duration) -> Execution {
    Execution {
        id: "act-inc-r/1-5".into(),
        incident: "inc-r/1-5".into(),
        router: "r/1".into(),
        policy: "leak".into(),
        action: Action::RestartProcess,
        target: target.into(),
        timeout,
        retries,
    }
}

fn sender() -> HttpTarget {
    HttpTarget { max_backoff: Some(Duration::from_millis(300)) }
}

#[test]
fn the_target_gets_the_action_for_its_router() {
    let (url, seen) = target(vec![StatusCode::ACCEPTED], Duration::ZERO);
    let sent = sender().send(&execution(&url, 2, Duration::from_secs(5)));
    assert!(sent.ok && sent.attempts == 1, "{sent:?}");
    assert!(sent.detail.contains("202") && sent.detail.contains("accepted"), "{}", sent.detail);
    let bodies = seen.bodies.lock().unwrap();
    assert_eq!(bodies[0].0, "r/1", "the router name is one path segment, decoded by the target");
    assert_eq!(
        bodies[0].1,
        serde_json::json!({
            "action": "restart-process",
            "reason": "incident inc-r/1-5 (action act-inc-r/1-5)",
            "requested_by": "routewatch:leak"
        })
    );
}

#[test]
fn a_5xx_is_retried_and_a_4xx_is_not() {
    let (url, seen) =
        target(vec![StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY, StatusCode::OK], Duration::ZERO);
    let sent = sender().send(&execution(&url, 3, Duration::from_secs(5)));
    assert!(sent.ok && sent.attempts == 3, "{sent:?}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

    let (url, seen) = target(vec![StatusCode::BAD_REQUEST], Duration::ZERO);
    let sent = sender().send(&execution(&url, 3, Duration::from_secs(5)));
    assert!(!sent.ok && sent.attempts == 1 && sent.detail.contains("400"), "{sent:?}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unreachable_target_is_an_outcome_after_every_retry() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let sent = sender().send(&execution(&format!("http://127.0.0.1:{port}"), 2, Duration::from_secs(2)));
    assert!(!sent.ok && sent.attempts == 3, "{sent:?}");
    assert!(sent.detail.contains(&format!("127.0.0.1:{port}/routers/r%2F1/actions")), "{}", sent.detail);
    assert!(started.elapsed() < Duration::from_secs(5), "backoff stays short: {:?}", started.elapsed());
}

#[test]
fn a_slow_target_times_out_each_attempt() {
    let (url, seen) = target(vec![StatusCode::OK], Duration::from_secs(3));
    let started = Instant::now();
    let sent = sender().send(&execution(&url, 1, Duration::from_millis(300)));
    assert!(!sent.ok && sent.attempts == 2, "{sent:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}
