//! Serialising a tick's records into one reused buffer, so the hot path allocates nothing.

use routewatch_telemetry::Record;

/// A tick's records as JSON, each with its Kafka key (the router id), packed in one buffer.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    buf: Vec<u8>,
    /// (key start, payload start, payload end) into `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl EncodedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the contents with `records`, keeping the capacity.
    pub fn encode(&mut self, records: &[Record]) {
        self.buf.clear();
        self.spans.clear();
        for record in records {
            let key = self.buf.len();
            self.buf.extend_from_slice(record.router.as_bytes());
            let payload = self.buf.len();
            // Same bytes as `Record::encode`, written into the shared buffer.
            serde_json::to_writer(&mut self.buf, record).expect("a record always serialises");
            self.spans.push((key, payload, self.buf.len()));
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Payload bytes in the batch (keys excluded).
    pub fn payload_bytes(&self) -> usize {
        self.spans.iter().map(|(_, p, e)| e - p).sum()
    }

    /// (key, payload) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(k, p, e)| (&self.buf[k..p], &self.buf[p..e]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routewatch_telemetry::{Metrics, Role, SCHEMA_VERSION};

    #[test]
    fn encodes_the_same_bytes_as_the_record_and_keys_by_router() {
        let record = |router: &str| Record {
            schema: SCHEMA_VERSION,
            router: router.into(),
            site: "fra1".into(),
            region: "eu-central".into(),
            role: Role::Core,
            vendor: "acme".into(),
            ts: 1,
            metrics: Metrics::default(),
        };
        let records = [record("rtr-000000"), record("rtr-000001")];
        let mut batch = EncodedBatch::new();
        batch.encode(&records);
        batch.encode(&records); // reuse must not accumulate
        assert_eq!(batch.len(), 2);
        for ((key, payload), record) in batch.iter().zip(&records) {
            assert_eq!(key, record.router.as_bytes());
            assert_eq!(payload, record.encode().as_slice());
            assert_eq!(&Record::decode(payload).unwrap(), record);
        }
    }
}
