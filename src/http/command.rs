//! The command pipeline every write goes through, in order:
//!
//! 1. **turn**: a write on a SKU waits for that SKU's turn of the writer ([`sku_turn`]);
//! 2. **idempotency**: a keyed request is admitted, replayed or refused, and an admitted one
//!    carries its in-flight mark to the actor ([`idempotent`]);
//! 3. **actor**: one message to the owning actor, which decides, applies and submits the
//!    change and answers with its ticket ([`execute_sku_command`]);
//! 4. **durable**: the answer waits until the ticket is durable ([`durable`]);
//! 5. **render**: the answer goes out as JSON, as the idempotency record stores it.
//!
//! Reads of stored state read first and then wait for durability ([`read_durable`]).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::error::ApiError;
use super::json_response;
use crate::access::Caller;
use crate::actors::sku::{ExecuteSkuCommand, Render};
use crate::actors::turns::Turn;
use crate::actors::{Mailbox, SkuActor};
use crate::domain::sku::SkuCommand;
use crate::domain::SkuId;
use crate::engine::Engine;
use crate::idempotency::{Admission, IdempotencyDraft, IdempotencyKey, Render as RenderAnswer};
use crate::metrics as names;

/// A keyed request as the idempotency gate needs it.
pub struct Keyed<'a> {
    /// The key, if the client sent one.
    pub key: &'a IdempotencyKey,
    /// Who sent it: keys are scoped to credentials.
    pub scope: String,
    /// Fingerprint of method, path and canonical body.
    pub fingerprint: [u8; 32],
}

impl<'a> Keyed<'a> {
    /// A request with `key`, sent by `caller` (whose keys have a scope of their own).
    pub fn new(key: &'a IdempotencyKey, caller: &Caller, request: &HttpRequest, canonical_body: &[u8]) -> Self {
        Keyed {
            key,
            scope: caller.scope(),
            fingerprint: crate::idempotency::fingerprint(request, canonical_body),
        }
    }
}

/// Sends `command` (asked by `by`) to a SKU actor, waits until its change is durable, and answers with
/// `render`. With an idempotency key, a repeat replays the stored answer.
pub async fn execute_sku_command(
    engine: &Engine,
    sku: &SkuId,
    mailbox: &Mailbox<SkuActor>,
    command: SkuCommand,
    keyed: Keyed<'_>,
    by: crate::access::By,
    render: Render,
) -> Result<HttpResponse, ApiError> {
    let _turn = sku_turn(engine, sku).await?;
    idempotent(engine, keyed, render, |draft| async move {
        let acked = mailbox
            .ask(|reply, slot| ExecuteSkuCommand {
                command,
                idempotency: draft,
                by,
                reply,
                slot,
            })?
            .await
            .map_err(|_| ApiError::from(crate::actors::AskError::NoAnswer))?;
        Ok((acked.value, acked.ticket))
    })
    .await
}

/// Runs a change with idempotency: a repeated key replays its stored answer; otherwise
/// `send` runs it (given the draft the actor stores its answer with), the answer waits until
/// its ticket is durable, and goes out rendered. `send` answers `Ok(answer)` with an answer
/// that stands (stored with the key), or `Err(failure)` when there is none (an overload):
/// that goes out as an error with its headers, and is not stored.
pub async fn idempotent<R, F, Send, Fut>(
    engine: &Engine,
    keyed: Keyed<'_>,
    render: RenderAnswer<R>,
    send: Send,
) -> Result<HttpResponse, ApiError>
where
    F: Into<ApiError>,
    Send: FnOnce(Option<IdempotencyDraft<R>>) -> Fut,
    Fut: std::future::Future<Output = Result<(Result<R, F>, crate::persistence::Ticket), ApiError>>,
{
    let mut draft = None;
    if let Some(key) = &keyed.key.0 {
        match engine.idempotency.admit(&keyed.scope, key, keyed.fingerprint)? {
            Admission::Replay(record) => {
                // The record may have been applied but not yet flushed by a request whose
                // client went away; report it only once durable.
                engine.barrier().await.map_err(|_| ApiError::Unavailable)?;
                metrics::counter!(names::IDEMPOTENT_REPLAYS_TOTAL).increment(1);
                let mut response = json_response(record.status, record.body);
                response.headers_mut().insert(
                    header::HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                );
                return Ok(response);
            }
            Admission::Proceed(in_flight) => {
                // The mark goes with the draft to the actor, which keeps it until the change
                // is durable: it must outlive this handler if the client goes away.
                draft = Some(IdempotencyDraft::new(
                    in_flight,
                    keyed.fingerprint,
                    render,
                    engine.limits.idempotency_retention_ms,
                ));
            }
        }
    }
    let (reply, ticket) = send(draft).await?;
    durable(engine, ticket).await?;
    let answer = reply.map_err(Into::into)?;
    let (status, body) = render(&answer);
    Ok(json_response(status, body))
}

/// Sends the message built by `make` to a SKU actor and returns its answer once everything
/// the answer reports is durable.
pub async fn ask_durable<M, T>(
    engine: &Engine,
    mailbox: &Mailbox<SkuActor>,
    make: impl FnOnce(crate::actors::Reply<T>, crate::actors::MailboxSlot) -> M,
) -> Result<T, ApiError>
where
    M: actix::Message<Result = ()> + Send + 'static,
    SkuActor: actix::Handler<M>,
{
    let acked = mailbox
        .ask(make)?
        .await
        .map_err(|_| ApiError::from(crate::actors::AskError::NoAnswer))?;
    durable(engine, acked.ticket).await?;
    Ok(acked.value)
}

/// Waits for a turn of `sku` for a write on it (see [`crate::actors::turns`]); the caller
/// keeps it until its answer is durable. A queue that waited too long answers 503
/// `overloaded`.
pub async fn sku_turn(engine: &Engine, sku: &SkuId) -> Result<Turn, ApiError> {
    engine.turns.take(sku).await.map_err(|_| ApiError::Overloaded)
}

/// Waits until `ticket` is durable: what a handler reports must have been synced. A failed
/// writer answers 500 `outcome_unknown`, never a retryable refusal: the failed sync may have
/// reached the disk, so the change may stand, and a blind retry could apply it twice.
pub async fn durable(engine: &Engine, ticket: crate::persistence::Ticket) -> Result<(), ApiError> {
    engine
        .writer
        .durability()
        .wait(ticket)
        .await
        .map_err(|_| ApiError::OutcomeUnknown)
}

/// Reads stored state with `read`, then waits until every change it could have seen is
/// durable. Reading first matters: readers see changes as soon as they are logged, so a
/// barrier taken before the read would not cover a change logged between the two. A failed
/// writer answers 503 `unavailable`: nothing was changed by the read, so it may be retried.
pub async fn read_durable<T>(engine: &Engine, read: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    let value = read()?;
    engine.barrier().await.map_err(|_| ApiError::Unavailable)?;
    Ok(value)
}
