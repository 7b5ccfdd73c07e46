//! The span queue: a bounded queue between the request path and one export task.
//!
//! [`Processor::on_end`] only appends the finished span to the queue (a short lock): a full
//! queue drops it and counts it, never waits. The task takes what is waiting every
//! `batch_delay` (or once `max_export_batch_size` spans wait) and sends it in batches, each
//! export within `export_timeout`; an endpoint that is down or slow costs the task its
//! timeout, never a request its latency. After a failure, export pauses (1 s, doubling to
//! 30 s, reset by a success): batches are dropped and counted without being encoded. (The SDK's own batch processor runs its exporter on
//! a thread of its own with a blocking executor, where the hyper and tonic clients, which
//! need the Tokio runtime, cannot run.)

use super::counters;
use crate::config::OtelSettings;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

/// The tracer provider's processor: hands finished, sampled spans to the queue. A span end
/// takes a short lock and never wakes the export task (it wakes on its tick, or once a whole
/// batch is waiting): no scheduling work per span.
#[derive(Debug)]
pub(super) struct Processor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    spans: Mutex<Vec<SpanData>>,
    /// A whole batch is waiting.
    full: Notify,
    capacity: usize,
    batch_size: usize,
}

impl SpanProcessor for Processor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let q = &self.shared;
        let mut spans = q.spans.lock().unwrap_or_else(|p| p.into_inner());
        if spans.len() >= q.capacity {
            drop(spans);
            counters().dropped.inc();
            return;
        }
        spans.push(span);
        let full = spans.len() == q.batch_size;
        drop(spans);
        if full {
            q.full.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing is asynchronous: `Handle::flush`.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Asks the export task to send everything queued now.
pub(super) struct Handle {
    flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Handle {
    /// Send what is queued, waiting at most `within`.
    pub(super) async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = tokio::time::timeout(within, wait).await;
        }
    }
}

/// Start the export task on the current runtime.
pub(super) fn start(
    mut exporter: opentelemetry_otlp::SpanExporter,
    resource: &Resource,
    settings: &OtelSettings,
) -> (Processor, Handle) {
    exporter.set_resource(resource);
    let batch_size = settings.max_export_batch_size.max(1);
    let shared = Arc::new(Shared {
        spans: Mutex::new(Vec::new()),
        full: Notify::new(),
        capacity: settings.max_queue_size.max(1),
        batch_size,
    });
    let (flush, flushes) = mpsc::unbounded_channel();
    let task = Task {
        exporter,
        shared: shared.clone(),
        batch_size,
        delay: settings.batch_delay,
        timeout: settings.export_timeout,
        paused_until: None,
        pause: PAUSE_MIN,
    };
    tokio::spawn(task.run(flushes));
    (Processor { shared }, Handle { flush })
}

struct Task {
    exporter: opentelemetry_otlp::SpanExporter,
    shared: Arc<Shared>,
    batch_size: usize,
    delay: Duration,
    timeout: Duration,
    /// After a failed export, batches are dropped (counted as failed) without being encoded
    /// or sent until this instant: an endpoint that is down costs the relay no work.
    paused_until: Option<Instant>,
    /// The pause after the next failure: 1 s, doubling up to 30 s; reset by a success.
    pause: Duration,
}

/// First and longest pause of export after a failure.
const PAUSE_MIN: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(30);

impl Task {
    async fn run(mut self, mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
        let mut tick = tokio::time::interval(self.delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flushed = tokio::select! {
                _ = tick.tick() => None,
                _ = self.shared.full.notified() => None,
                done = flushes.recv() => match done {
                    Some(done) => Some(done),
                    None => return,
                },
            };
            let waiting =
                std::mem::take(&mut *self.shared.spans.lock().unwrap_or_else(|p| p.into_inner()));
            let mut waiting = waiting.into_iter().peekable();
            while waiting.peek().is_some() {
                let mut batch: Vec<SpanData> = waiting.by_ref().take(self.batch_size).collect();
                self.export(&mut batch).await;
            }
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        let n = spans.len() as u64;
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            counters().failed.inc_by(n);
            return;
        }
        let failure = match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".to_owned()),
        };
        match failure {
            None => {
                counters().exported.inc_by(n);
                self.paused_until = None;
                self.pause = PAUSE_MIN;
            }
            Some(error) => {
                counters().failed.inc_by(n);
                tracing::debug!(%error, spans = n, pause_ms = self.pause.as_millis() as u64, "OTLP span export failed; paused");
                self.paused_until = Some(Instant::now() + self.pause);
                self.pause = (self.pause * 2).min(PAUSE_MAX);
            }
        }
    }
}
