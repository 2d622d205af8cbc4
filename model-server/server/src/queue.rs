//! Dynamic batching in the shape of text-embeddings-inference: an
//! admission semaphore (429 when full), one queue, and one device thread
//! that, whenever it is free, takes everything waiting (up to the batch
//! size) and runs it as one batch; each request gets its own reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxr_inference::models::{Classifier, Explanation, ModelInput};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;

/// What the device thread answers for one image.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub probabilities: Vec<f32>,
    /// Grad-CAM and boxes, when asked for.
    pub explanation: Option<Explanation>,
    pub batch_size: usize,
    pub queued: Duration,
    pub inference: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the server is at its limit of {0} requests in flight; retry shortly")]
    Overloaded(usize),
    #[error("the inference thread has stopped")]
    Stopped,
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Which label to explain with Grad-CAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainRequest {
    Label(usize),
    /// The label with the highest probability.
    Top,
}

/// What the device needs to explain one image: the label and the original
/// image's size (the heatmap and boxes are in its frame).
#[derive(Clone, Copy, Debug)]
pub struct Explain {
    pub request: ExplainRequest,
    pub width: usize,
    pub height: usize,
}

struct Entry {
    input: ModelInput,
    explain: Option<Explain>,
    admitted: Instant,
    reply: oneshot::Sender<Result<Prediction, QueueError>>,
}

/// The queue, a receiver told when warm-up ends (or why it failed), and
/// the device thread.
pub type Started = (Queue, oneshot::Receiver<Result<(), String>>, std::thread::JoinHandle<()>);

/// The handle the HTTP handlers use.
#[derive(Clone)]
pub struct Queue {
    permits: Arc<Semaphore>,
    limit: usize,
    sender: mpsc::UnboundedSender<Entry>,
}

impl Queue {
    /// Starts the device thread; it warms the model up (batch 1 and the
    /// largest batch) before taking requests and then reports ready.
    pub fn start(classifier: Arc<Classifier>, max_batch_size: usize, max_concurrent: usize, metrics: Arc<Metrics>) -> std::io::Result<Started> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let max_batch_size = max_batch_size.max(1);
        let thread =
            std::thread::Builder::new().name("inference".into()).spawn(move || device_loop(classifier, max_batch_size, receiver, ready_tx, metrics))?;
        Ok((Self { permits: Arc::new(Semaphore::new(max_concurrent)), limit: max_concurrent, sender }, ready_rx, thread))
    }

    /// A place in line, or [`QueueError::Overloaded`] when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, QueueError> {
        self.permits.clone().try_acquire_owned().map_err(|_| QueueError::Overloaded(self.limit))
    }

    /// Queues one preprocessed image and waits for its prediction.
    pub async fn infer(
        &self,
        input: ModelInput,
        explain: Option<Explain>,
        admitted: Instant,
        _permit: &OwnedSemaphorePermit,
    ) -> Result<Prediction, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Entry { input, explain, admitted, reply }).map_err(|_| QueueError::Stopped)?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }
}

fn device_loop(
    classifier: Arc<Classifier>,
    max_batch_size: usize,
    mut receiver: mpsc::UnboundedReceiver<Entry>,
    ready: oneshot::Sender<Result<(), String>>,
    metrics: Arc<Metrics>,
) {
    let (channels, side) = classifier.input_shape();
    let blank = vec![0.0f32; channels * side * side];
    let warm_up = [1, max_batch_size].iter().try_for_each(|&n| {
        let inputs: Vec<&[f32]> = (0..n).map(|_| blank.as_slice()).collect();
        classifier.predict(&inputs).map(|_| ())
    });
    let failed = warm_up.is_err();
    let _ = ready.send(warm_up.map_err(|e| e.to_string()));
    if failed {
        return;
    }
    tracing::info!(max_batch_size, "model warmed up; taking requests");

    // Blocks until a request arrives; returns None once every sender is
    // gone (shutdown), after the queue is drained.
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch_size {
            match receiver.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let inputs: Vec<&[f32]> = batch.iter().map(|e| e.input.values.as_slice()).collect();
        let result = classifier.predict(&inputs);
        let inference = started.elapsed();
        metrics.batch_size.observe(batch.len() as f64);
        metrics.inference_seconds.observe(inference.as_secs_f64());
        let size = batch.len();
        match result {
            Ok(outputs) => {
                for (entry, probabilities) in batch.into_iter().zip(outputs) {
                    let queued = started.saturating_duration_since(entry.admitted);
                    metrics.queue_seconds.observe(queued.as_secs_f64());
                    // Explanations run after the batch, one image at a time,
                    // on this same device thread.
                    let explanation = match entry.explain {
                        None => Ok(None),
                        Some(explain) => {
                            let label = match explain.request {
                                ExplainRequest::Label(label) => label,
                                ExplainRequest::Top => probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i),
                            };
                            classifier.explain(&entry.input, label, explain.width, explain.height).map(Some)
                        }
                    };
                    let reply = explanation
                        .map(|explanation| Prediction { probabilities, explanation, batch_size: size, queued, inference })
                        .map_err(|e| QueueError::Inference(e.to_string()));
                    let _ = entry.reply.send(reply);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, size, "batch failed");
                for entry in batch {
                    let _ = entry.reply.send(Err(QueueError::Inference(err.to_string())));
                }
            }
        }
    }
    tracing::info!("inference thread stopped");
}
