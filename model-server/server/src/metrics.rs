//! Prometheus metrics at `/metrics` (prometheus-client, text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub batch_size: Histogram,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub decode_seconds: Histogram,
}

impl Metrics {
    pub fn new(max_batch_size: usize) -> Self {
        let mut registry = Registry::with_prefix("cxr_model_server");
        let requests = Family::<StatusLabel, Counter>::default();
        registry.register("requests", "Inference requests by HTTP status", requests.clone());
        let batch_size = Histogram::new((1..=max_batch_size.max(1)).map(|b| b as f64));
        registry.register("batch_size", "Images per device batch", batch_size.clone());
        let seconds = || Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14));
        let queue_seconds = seconds();
        registry.register("queue_seconds", "Time from admission to the device", queue_seconds.clone());
        let inference_seconds = seconds();
        registry.register("inference_seconds", "Device time per batch", inference_seconds.clone());
        let decode_seconds = seconds();
        registry.register("decode_seconds", "Decoding and preprocessing per image", decode_seconds.clone());
        Self { registry, requests, batch_size, queue_seconds, inference_seconds, decode_seconds }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
