//! Building and running the server: `Application::build(settings)` binds the listener and
//! starts HTTP at once (so `/health` and `/ready` answer during recovery), then recovers the
//! engine in the background; `run_until_stopped` serves until a signal or a fatal store error.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context};
use rand::RngCore;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::domain::{Clock, SteadyClock};
use crate::engine::{Engine, StoreWrapper};
use crate::http::admission::{admit, ConnectionCount};
use crate::http::{routes, AppState};

/// Seams for tests: a controlled clock, a store wrapper for fault injection.
pub struct Options {
    /// The clock: by default the wall clock at start advanced by monotonic time.
    pub clock: Arc<dyn Clock>,
    /// Wraps the store once opened (fault injection).
    pub wrap_store: Option<StoreWrapper>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SteadyClock::system()),
            wrap_store: None,
        }
    }
}

/// A built server, listening, recovering or ready.
pub struct Application {
    /// Where it listens.
    address: SocketAddr,
    /// The HTTP server; awaiting it serves until stopped.
    server: Server,
    /// Shared with handlers; holds the engine once recovered.
    state: web::Data<AppState>,
    /// Receives the reason of a fatal error (store failure, failed recovery).
    fatal: mpsc::UnboundedReceiver<String>,
}

/// The name of the generated admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin_token";

impl Application {
    /// Builds the server with the real clock and store.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Options::default()).await
    }

    /// Builds the server with test seams.
    pub async fn build_with(settings: Settings, options: Options) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let data_dir = &settings.store.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let admin_token = resolve_admin_token(&settings)?;
        let listener =
            TcpListener::bind(settings.bind_address()?).with_context(|| format!("binding {}", settings.http.bind))?;
        let address = listener.local_addr()?;
        if let Some(path) = &settings.http.address_file {
            write_address_file(path, address)?;
        }
        let state = web::Data::new(AppState {
            engine: OnceLock::new(),
            settings: Arc::clone(&settings),
            admin_token,
            metrics: crate::metrics::install(),
            ws_open: Arc::default(),
        });

        let http = &settings.http;
        let app_state = state.clone();
        let cors = settings.http.cors.clone();
        // CORS outermost: a preflight is answered before admission or routing. With no
        // allowed origin (the default) it is not in the request path at all.
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap_fn(admit)
                .wrap(actix_web::middleware::Condition::new(
                    !cors.allowed_origins.is_empty(),
                    crate::http::cors::Cors::new(&cors),
                ))
                .configure(routes)
        });
        // Before listen(): the listener's service takes the connect hook when it is built.
        let send_buffer_bytes = http.socket_send_buffer_bytes;
        let connections = ConnectionCount::new(http.max_connections);
        let server = server.on_connect(move |connection, extensions| {
            if send_buffer_bytes > 0 {
                if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(send_buffer_bytes) {
                        tracing::warn!(%error, "could not bound a connection's send buffer");
                    }
                }
            }
            connections.open(extensions);
        });
        let mut server = server
            .listen(listener)?
            .shutdown_timeout(http.shutdown_timeout_seconds)
            .max_connections(http.max_connections_per_worker)
            .client_request_timeout(Duration::from_secs(http.request_head_timeout_seconds))
            .keep_alive(Duration::from_secs(http.keep_alive_seconds));
        if http.workers > 0 {
            server = server.workers(http.workers);
        }
        let server = server.run();
        tracing::info!(%address, "listening on http://{address}");

        let (fatal_sender, fatal) = mpsc::unbounded_channel::<String>();
        let on_fatal_sender = fatal_sender.clone();
        let on_fatal = Arc::new(move |error: &crate::persistence::StoreError| {
            let _ = on_fatal_sender.send(format!("store failure: {error}"));
        });
        let engine_state = state.clone();
        let sweep_interval = Duration::from_secs(settings.events.sweep_interval_seconds);
        actix_web::rt::spawn(async move {
            let settings = Arc::clone(&engine_state.settings);
            match Engine::start(&settings, options.clock, options.wrap_store, on_fatal).await {
                Ok(engine) => {
                    engine.spawn_sweeper(sweep_interval);
                    if engine_state.engine.set(engine).is_err() {
                        tracing::error!("the engine was started twice");
                    }
                    tracing::info!("ready");
                }
                Err(error) => {
                    let _ = fatal_sender.send(format!("startup failed: {error:#}"));
                }
            }
        });
        Ok(Self {
            address,
            server,
            state,
            fatal,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A handle to stop the server (`stop(true)` is graceful, like SIGTERM).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The state shared with handlers.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM/SIGINT (or a graceful stop through [`Self::handle`]), then makes
    /// everything durable and returns `Ok`. A fatal store error stops the server at once and
    /// returns `Err`: nothing of the failed batch was acknowledged.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        tokio::select! {
            served = &mut self.server => {
                served.context("the HTTP server failed")?;
                if let Some(engine) = self.state.engine.get() {
                    engine.shutdown().await;
                }
                tracing::info!("stopped cleanly; everything acknowledged is durable");
                Ok(())
            }
            Some(reason) = self.fatal.recv() => {
                tracing::error!(%reason, "fatal error; stopping");
                // The server processes its stop command only while polled.
                actix_web::rt::spawn(async move { handle.stop(false).await });
                if let Err(error) = (&mut self.server).await {
                    tracing::warn!(error = %error, "the HTTP server failed while stopping");
                }
                // Nothing more can be acknowledged (the writer is failed); stop the actors so
                // the store is released.
                if let Some(engine) = self.state.engine.get() {
                    engine.shutdown().await;
                }
                bail!(reason)
            }
        }
    }
}

/// The admin token: from configuration or the environment, else the one stored in the data
/// directory, else a new random one stored there (mode 0600). The token itself is never logged.
fn resolve_admin_token(settings: &Settings) -> anyhow::Result<String> {
    if let Some(token) = &settings.auth.admin_token {
        return Ok(token.clone());
    }
    let path = settings.store.data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(stored) => {
            let token = stored.trim().to_owned();
            if token.len() < 16 {
                bail!("the admin token in {} is shorter than 16 characters", path.display());
            }
            tracing::info!(path = %path.display(), "using the admin token stored in {}", path.display());
            Ok(token)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            write_secret(&path, &token)?;
            tracing::info!(path = %path.display(), "generated an admin token; it is stored in {}", path.display());
            Ok(token)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `address` to `path` through a temporary file and a rename, so a reader never sees
/// a partial address.
fn write_address_file(path: &Path, address: SocketAddr) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, format!("{address}\n"))
        .with_context(|| format!("writing the address file {}", path.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing the address file {}", path.display()))?;
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    Ok(())
}
