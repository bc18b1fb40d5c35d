//! The REST feed (`GET /anomalies`) and the live feed: acknowledged anomalies only.

use std::sync::Arc;

use routewatch_engine::{Delivery, Sink, SinkError};

use super::SinkContext;
use crate::feed::AnomalyFeed;

/// Publishes each batch's anomalies to the host's [`AnomalyFeed`].
pub struct FeedSink {
    feed: Arc<AnomalyFeed>,
}

/// The feed sink of a partition.
pub fn open(context: &SinkContext<'_>) -> Option<Box<dyn Sink>> {
    Some(Box::new(FeedSink { feed: context.feed.clone() }))
}

impl Sink for FeedSink {
    fn name(&self) -> &'static str {
        "feed"
    }

    fn deliver(&mut self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        self.feed.publish(&delivery.processed.events);
        Ok(())
    }
}
