//! Wiring: builds the signer, upstream client, metrics and `proxy::Relay`, binds the relay
//! and admin listeners, and runs `bedrock-relay serve` from flags to exit code
//! (config errors → 64 before binding; SIGTERM/SIGINT → readiness 503, drain, 0).

use crate::admin::{self, Readiness};
use crate::config::{self, ServeArgs, Settings};
use crate::metrics::Metrics;
use crate::proxy;
use crate::server::{self, Shutdown};
use crate::signing::Signer;
use crate::upstream::Upstream;
use anyhow::Context;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Exit code for an invalid configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code when the relay cannot start (e.g. the port is taken).
pub const EXIT_START: i32 = 1;

/// A running relay: its bound addresses, metrics, and the means to stop it.
pub struct RelayHandle {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The same metrics the `Relay` counts into (prometheus handles share state).
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    shutdown: Shutdown,
    admin_shutdown: Shutdown,
    main: JoinHandle<server::DrainReport>,
    admin: JoinHandle<()>,
}

impl RelayHandle {
    /// Begin the drain (readiness 503, stop accepting), wait for in-flight requests up to
    /// the drain timeout, then stop the admin listener. Returns what the drain did.
    pub async fn shutdown(self) -> server::DrainReport {
        self.readiness.set_draining();
        self.shutdown.trigger();
        let report = self.main.await.unwrap_or_default();
        self.admin_shutdown.trigger();
        let _ = self.admin.await;
        report
    }
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Start the relay: signer from the AWS default chain (or bearer token), upstream, metrics.
pub async fn start(settings: Settings) -> anyhow::Result<RelayHandle> {
    let signer = Signer::from_settings(&settings)
        .await
        .context("setting up request signing")?;
    start_with_signer(settings, signer).await
}

/// [`start`] with a given signer (tests inject static credentials).
pub async fn start_with_signer(settings: Settings, signer: Signer) -> anyhow::Result<RelayHandle> {
    let metrics = Metrics::new();
    crate::otel::register(&metrics.registry);
    metrics
        .retry_budget_tokens
        .set(i64::from(settings.retry_budget));
    let (listener, admin_listener, settings) = bind(settings).await?;
    let upstream = Upstream::new(&settings).context("setting up the upstream client")?;
    let drain = settings.drain_timeout;
    let limits =
        server::Limits::from_settings(&settings.inbound).context("loading the TLS certificate")?;
    let relay = Arc::new(proxy::Relay::new(
        Arc::new(settings),
        signer,
        upstream,
        metrics.clone(),
    ));
    let handler = move |req: Request<Incoming>| proxy::handle(relay.clone(), req);
    Ok(spawn(
        listener,
        admin_listener,
        (drain, limits),
        Arc::new(metrics),
        handler,
    ))
}

/// Bind both listeners and put the bound addresses (port 0 resolved) into the settings.
async fn bind(mut settings: Settings) -> anyhow::Result<(TcpListener, TcpListener, Settings)> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding listen address {}", settings.listen))?;
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding admin address {}", settings.admin_listen))?;
    settings.listen = listener.local_addr()?;
    settings.admin_listen = admin.local_addr()?;
    Ok((listener, admin, settings))
}

/// Serve any handler behind the relay's listeners, admin endpoints and drain logic
/// (tests that need the server without the proxy).
#[cfg(test)]
pub async fn start_with_handler<F, Fut, B>(
    settings: Settings,
    handler: F,
) -> anyhow::Result<RelayHandle>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (listener, admin_listener, settings) = bind(settings).await?;
    Ok(spawn(
        listener,
        admin_listener,
        (
            settings.drain_timeout,
            server::Limits::from_settings(&settings.inbound)
                .context("loading the TLS certificate")?,
        ),
        Arc::new(Metrics::new()),
        handler,
    ))
}

fn spawn<F, Fut, B>(
    listener: TcpListener,
    admin_listener: TcpListener,
    (drain, limits): (std::time::Duration, server::Limits),
    metrics: Arc<Metrics>,
    handler: F,
) -> RelayHandle
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Bound listeners always have an address.
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let admin_addr = admin_listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let readiness = Readiness::new();
    let shutdown = Shutdown::new();
    let admin_shutdown = Shutdown::new();
    let main = tokio::spawn(server::serve_with(
        listener,
        handler,
        shutdown.clone(),
        drain,
        limits,
    ));
    let admin = tokio::spawn(admin::serve_admin(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
        admin_shutdown.clone(),
    ));
    RelayHandle {
        addr,
        admin_addr,
        metrics,
        readiness,
        shutdown,
        admin_shutdown,
        main,
        admin,
    }
}

/// Remove `AWS_ENDPOINT_URL*` from this process's environment so the relay's own AWS
/// clients (STS, SSO inside the credentials chain) cannot be pointed back at the relay;
/// returns the names removed (logged once logging is set up).
///
/// Call it from `main` before any thread exists: changing the environment of a process
/// with other threads (a multi-thread runtime) is unsound.
pub fn scrub_endpoint_env() -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("AWS_ENDPOINT_URL"))
        .collect();
    for k in &names {
        std::env::remove_var(k);
    }
    names
}

/// The multi-thread runtime every subcommand runs on; `worker_threads` 0: one thread per
/// CPU the process may use. `None` (after saying why on stderr): it could not be built.
pub fn runtime(worker_threads: u32) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads as usize);
    }
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("bedrock-relay: cannot start the async runtime: {e}");
            None
        }
    }
}

/// `bedrock-relay serve` from the command line: the configuration is loaded once, then the
/// runtime is built with its `worker_threads`. Returns the process exit code.
/// `scrubbed`: the endpoint variables [`scrub_endpoint_env`] removed.
pub fn serve_blocking(args: ServeArgs, scrubbed: Vec<String>) -> i32 {
    match settings_to_serve(&args) {
        Ok(settings) => match runtime(settings.worker_threads) {
            Some(rt) => rt.block_on(serve_settings(settings, scrubbed)),
            None => EXIT_START,
        },
        Err(code) => code,
    }
}

/// `bedrock-relay serve` on the caller's runtime: returns the process exit code (tests).
#[cfg(test)]
pub async fn serve_main(args: ServeArgs) -> i32 {
    match settings_to_serve(&args) {
        Ok(settings) => serve_settings(settings, Vec::new()).await,
        Err(code) => code,
    }
}

/// The validated settings, or the exit code when there is nothing to serve: invalid
/// configuration (reported, 64) or `--check` (reported, 0).
fn settings_to_serve(args: &ServeArgs) -> Result<Settings, i32> {
    let settings = match config::load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "bedrock-relay: invalid configuration ({} problems):\n{e}",
                e.0.len()
            );
            return Err(EXIT_CONFIG);
        }
    };
    if args.check {
        println!(
            "configuration OK: listen {}, admin {}, region {}, upstream {}",
            settings.listen,
            settings.admin_listen,
            settings.region,
            settings
                .upstream
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_else(|| "regional endpoint".into()),
        );
        return Err(0);
    }
    Ok(settings)
}

/// Serve until SIGTERM/SIGINT, then drain: returns the process exit code.
async fn serve_settings(settings: Settings, scrubbed: Vec<String>) -> i32 {
    crate::telemetry::init(settings.log_format, &settings.log_level);
    for variable in scrubbed {
        tracing::info!(%variable, "ignoring endpoint override for the relay's own AWS clients");
    }
    let otel_flush = settings
        .otel
        .export_timeout
        .min(std::time::Duration::from_secs(5));
    if let Err(e) = crate::otel::init(&settings.otel) {
        // Telemetry is never a reason not to serve: logged, the relay runs without it.
        tracing::warn!(error = format!("{e:#}"), "OpenTelemetry export not started");
    }
    let handle = match start(settings).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "relay failed to start");
            eprintln!("bedrock-relay: {e:#}");
            return EXIT_START;
        }
    };
    tracing::info!(addr = %handle.addr, admin = %handle.admin_addr, "bedrock-relay listening");
    wait_for_signal().await;
    tracing::info!("shutdown signal received; draining (send again to stop now)");
    tokio::select! {
        report = handle.shutdown() => {
            crate::otel::shutdown(otel_flush).await;
            tracing::info!(forced_connections = report.forced, "drained; bye");
            0
        }
        _ = wait_for_signal() => {
            tracing::warn!("second signal; exiting without finishing the drain");
            EXIT_START
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the relay");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests;
