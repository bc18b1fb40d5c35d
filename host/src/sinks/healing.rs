//! Self-healing: each acknowledged batch's incident updates go to the host's [`Healing`],
//! which decides under its guard rails and queues what it sends (never waiting for a target).
//! The partition's routers are passed along when their number changes, so the healer knows
//! each site's size for the blast radius.

use std::sync::Arc;

use routewatch_engine::{Delivery, Sink, SinkError};

use super::SinkContext;
use crate::healing::Healing;

/// Hands a partition's incident updates to the healer.
pub struct HealingSink {
    healing: Arc<Healing>,
    routers_seen: usize,
}

/// The healing sink of a partition; none when self-healing is not configured.
pub fn open(context: &SinkContext<'_>) -> Option<Box<dyn Sink>> {
    let healing = context.healing?.clone();
    Some(Box::new(HealingSink { healing, routers_seen: 0 }))
}

impl Sink for HealingSink {
    fn name(&self) -> &'static str {
        "healing"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let updates = &delivery.processed.incidents;
        let routers = (delivery.routers.len() != self.routers_seen).then_some(delivery.routers);
        if updates.is_empty() && routers.is_none() {
            return Ok(());
        }
        self.routers_seen = delivery.routers.len();
        self.healing.on_incidents(updates.iter().map(|u| &u.incident), routers);
        Ok(())
    }
}
