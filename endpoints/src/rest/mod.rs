//! The JobManager's REST API (DESIGN §6a): Flink's REST API v1, so Flink's CLI,
//! dashboards and scripts administer rill unchanged.
//!
//! The server is a thin axum layer over the Dispatcher's gateway: every handler makes one
//! or a few Dispatcher calls (each bounded by `rpc.ask-timeout`) and hands the answers to
//! [`flink`], which builds Flink's JSON bodies. It binds `rest.address:rest.port` when
//! the JobManager starts (a bind failure fails the start) and runs as one named task of
//! the [`RestServer`], which aborts it on shutdown.
//!
//! Routes, each also under `/v1`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /config` | dashboard configuration |
//! | `GET /overview` | TaskManagers, slots, jobs per state |
//! | `GET /jobs` | ids and statuses |
//! | `POST /jobs` | rill's own: submits a built-in job by name ([`submit`]) |
//! | `GET /jobs/overview` | one summary per job |
//! | `GET /jobs/:jobid` | a job's details and vertices |
//! | `GET /jobs/:jobid/status` | its status |
//! | `GET /jobs/:jobid/exceptions[?maxExceptions=n]` | its failure history |
//! | `GET /jobs/:jobid/execution-result` | `IN_PROGRESS`, or its result |
//! | `GET /jobs/:jobid/metrics[?get=…]` | job metric ids, or their values (`numRestarts`) |
//! | `GET /jobs/:jobid/vertices/:vertexid` | a vertex and its subtasks |
//! | `GET /jobs/:jobid/vertices/:vertexid/backpressure` | its subtasks' backpressure ([`metrics`]) |
//! | `GET /jobs/:jobid/vertices/:vertexid/subtasks/metrics[?get=…&agg=…&subtasks=…]` | metric ids, or their aggregates over subtasks |
//! | `GET /jobs/:jobid/vertices/:vertexid/watermarks` | each subtask's input watermark |
//! | `GET /taskmanagers`, `GET /taskmanagers/:tmid` | TaskManagers (with rill's `metricsUrl`) |
//! | `GET /metrics` | Prometheus text format ([`prometheus`]) |
//! | `PATCH /jobs/:jobid[?mode=cancel]` | cancels: 202 with `{}` |
//! | `GET /jobs/:jobid/checkpoints` | checkpoint counts, summary, latest, history |
//! | `GET /jobs/:jobid/checkpoints/config` | the checkpoint settings |
//! | `POST /jobs/:jobid/checkpoints` | triggers a checkpoint: 202 with `request-id` |
//! | `GET /jobs/:jobid/checkpoints/:triggerid` | where that checkpoint stands |
//! | `POST /jobs/:jobid/savepoints` | triggers a savepoint (`cancel-job`: then stops) |
//! | `POST /jobs/:jobid/stop` | stop-with-savepoint (`drain`) |
//! | `GET /jobs/:jobid/savepoints/:triggerid` | where that savepoint or stop stands |
//!
//! The web dashboard ([`dashboard`]) is served at `/`, `/index.html` and `/web/<asset>`.
//!
//! With `rest.auth.token` set, every request but the dashboard's static ones must carry
//! `Authorization: Bearer <token>`; others are answered 401 before any route is looked
//! at ([`auth`]).
//!
//! Errors are always Flink's `{"errors":["…"]}`: 400 for a malformed id, query or body,
//! 401 for a missing or wrong token,
//! 404 for an unknown id or route, 405 for a wrong method, 409 for cancelling a job that
//! already ended or a checkpoint or savepoint the job cannot take now, 503
//! when the Dispatcher cannot be reached or the job's JobMaster is still starting
//! (retrying makes sense).
//!
//! Checkpoint and savepoint triggers are one Dispatcher call each; their trigger ids
//! and bodies are [`checkpoints`]'. A trigger carrying the client's own `triggerId` is
//! made under one lock, so two requests with the same id start one operation, as
//! Flink's idempotent triggers do.

pub mod auth;
pub mod checkpoints;
pub mod dashboard;
pub mod flink;
pub mod metrics;
pub mod prometheus;
pub mod submit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::join_all;
use rill_dataflow::JobId;
use rill_runtime::tasks::TaskSet;
use rill_runtime::{RpcAddress, RpcError, RpcService};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::RillConfig;
use crate::gateways::dispatcher;
use crate::messages::{
    now_ms, ClusterError, SavepointRequest, SnapshotStatus, TaskManagerInfo, VertexDetails,
};
use checkpoints::{CheckpointSettings, ClientTriggers, TriggerKind};

/// A running REST server.
pub struct RestServer {
    local_addr: SocketAddr,
    tasks: TaskSet,
}

impl RestServer {
    /// Binds `cluster.rest`'s socket and serves the API from the Dispatcher at
    /// `dispatcher` (reached through `rpc`), with the cluster's checkpoint settings for
    /// `GET /jobs/:jobid/checkpoints/config`. Must be called inside a tokio runtime.
    pub fn start(
        cluster: &RillConfig,
        rpc: RpcService,
        dispatcher: RpcAddress,
    ) -> std::io::Result<Self> {
        let checkpointing = CheckpointSettings::from_config(cluster);
        let config = &cluster.rest;
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = std::net::TcpListener::bind(config.bind())?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let access = auth::Access::new(config.auth.token.as_deref());
        let app = router(
            Api {
                rpc,
                address: dispatcher,
                gateway: Arc::new(OnceCell::new()),
                checkpointing: Arc::new(checkpointing),
                triggers: Arc::new(tokio::sync::Mutex::new(ClientTriggers::default())),
                sampler: Arc::new(parking_lot::Mutex::new(metrics::Sampler::default())),
            },
            access,
        );
        let tasks = TaskSet::new(runtime);
        tasks.spawn("rest-server", async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the REST server stopped");
            }
        });
        tracing::info!(
            address = %local_addr,
            token = config.auth.token.is_some(),
            "REST endpoint listening"
        );
        Ok(RestServer { local_addr, tasks })
    }

    /// The bound socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops serving (open connections are dropped).
    pub fn shutdown(&self) {
        self.tasks.shutdown();
    }
}

/// What every handler shares: the way to the Dispatcher, the cluster's checkpoint
/// settings if known, and the client-chosen trigger ids.
#[derive(Clone)]
struct Api {
    rpc: RpcService,
    address: RpcAddress,
    gateway: Arc<OnceCell<dispatcher::Gateway>>,
    checkpointing: Arc<CheckpointSettings>,
    /// Held across the trigger call of a request with a client's `triggerId` (see the
    /// module docs); a tokio lock, as it is held across an await.
    triggers: Arc<tokio::sync::Mutex<ClientTriggers>>,
    /// The subtasks' last heartbeats seen, for backpressure ratios and rates.
    sampler: Arc<parking_lot::Mutex<metrics::Sampler>>,
}

impl Api {
    async fn dispatcher(&self) -> Result<dispatcher::Gateway, RestError> {
        self.gateway
            .get_or_try_init(|| self.rpc.connect::<dispatcher::Gateway>(&self.address))
            .await
            .cloned()
            .map_err(RestError::from)
    }

    async fn task_managers(&self) -> Result<Vec<TaskManagerInfo>, RestError> {
        Ok(self.dispatcher().await?.list_task_managers().await??)
    }

    /// The vertex `vertexid` of job `jobid`, as the JobMaster reports it now.
    async fn vertex(
        &self,
        jobid: &str,
        vertexid: &str,
    ) -> Result<(JobId, VertexDetails), RestError> {
        let job = flink::parse_job_id(jobid)?;
        let vertex = flink::parse_vertex_id(vertexid)?;
        let details = self.dispatcher().await?.job_details(job).await??;
        let v = vertex
            .and_then(|id| details.vertices.into_iter().find(|v| v.vertex == id))
            .ok_or_else(|| {
                RestError::new(
                    StatusCode::NOT_FOUND,
                    format!("job {job} has no vertex {vertexid}"),
                )
            })?;
        Ok((job, v))
    }

    /// The ratios of `v`'s subtasks over their latest intervals; a job that ended is
    /// forgotten by the sampler, its subtasks' counters being final.
    fn ratios(&self, job: JobId, v: &VertexDetails) -> Vec<metrics::Ratios> {
        let mut sampler = self.sampler.lock();
        let ratios = sampler.observe(job, v);
        if flink::vertex_state(v).is_terminal() {
            sampler.forget(job);
        }
        ratios
    }
}

/// An error answer: a status and Flink's `{"errors":[…]}` body.
#[derive(Debug)]
struct RestError {
    status: StatusCode,
    message: String,
}

impl RestError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        RestError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.status, Json(flink::errors(&self.message))).into_response()
    }
}

impl From<RpcError> for RestError {
    fn from(e: RpcError) -> Self {
        RestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the Dispatcher cannot be reached: {e}"),
        )
    }
}

impl From<ClusterError> for RestError {
    fn from(e: ClusterError) -> Self {
        let status = match &e {
            ClusterError::JobNotFound(_) | ClusterError::SnapshotNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ClusterError::SnapshotRefused(_) => StatusCode::CONFLICT,
            ClusterError::DuplicateJob(_) | ClusterError::JobTerminal { .. } => {
                StatusCode::CONFLICT
            }
            ClusterError::InvalidJob(_) | ClusterError::Rejected(_) => StatusCode::BAD_REQUEST,
            ClusterError::JobNotTerminal { .. } | ClusterError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        RestError::new(status, e.to_string())
    }
}

impl From<checkpoints::BodyError> for RestError {
    fn from(e: checkpoints::BodyError) -> Self {
        RestError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<submit::SubmitError> for RestError {
    fn from(e: submit::SubmitError) -> Self {
        RestError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<metrics::MetricsQueryError> for RestError {
    fn from(e: metrics::MetricsQueryError) -> Self {
        RestError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<flink::BadId> for RestError {
    fn from(e: flink::BadId) -> Self {
        RestError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

type Answer = Result<Json<Value>, RestError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
/// Path parameters; axum's rejections (a parameter that is not UTF-8, …) become Flink's
/// error body like every other error.
type PathParams<T> = Result<Path<T>, PathRejection>;

fn query(params: Params) -> Result<HashMap<String, String>, RestError> {
    params
        .map(|Query(q)| q)
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

fn path<T>(params: PathParams<T>) -> Result<T, RestError> {
    params
        .map(|Path(p)| p)
        .map_err(|e| RestError::new(e.status(), e.body_text()))
}

fn router(api: Api, access: auth::Access) -> Router {
    let routes = Router::new()
        .route("/config", get(config))
        .route("/overview", get(overview))
        .route("/jobs", get(jobs).post(submit_job))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{jobid}", get(job).patch(cancel))
        .route("/jobs/{jobid}/status", get(job_status))
        .route("/jobs/{jobid}/exceptions", get(job_exceptions))
        .route("/jobs/{jobid}/execution-result", get(execution_result))
        .route("/jobs/{jobid}/metrics", get(job_metrics))
        .route("/jobs/{jobid}/vertices/{vertexid}", get(vertex))
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/backpressure",
            get(backpressure),
        )
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics",
            get(subtask_metrics),
        )
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/watermarks",
            get(watermarks),
        )
        .route(
            "/jobs/{jobid}/checkpoints",
            get(checkpoint_statistics).post(trigger_checkpoint),
        )
        .route("/jobs/{jobid}/checkpoints/config", get(checkpoint_config))
        .route(
            "/jobs/{jobid}/checkpoints/{triggerid}",
            get(checkpoint_trigger_status),
        )
        .route("/jobs/{jobid}/savepoints", post(trigger_savepoint))
        .route(
            "/jobs/{jobid}/savepoints/{triggerid}",
            get(savepoint_trigger_status),
        )
        .route("/jobs/{jobid}/stop", post(stop_with_savepoint))
        .route("/taskmanagers", get(task_managers))
        .route("/taskmanagers/{tmid}", get(task_manager))
        .route("/metrics", get(prometheus_metrics));
    let api_routes = Router::new()
        .nest("/v1", routes.clone())
        .merge(routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            require_token,
        ));
    // The dashboard's static routes come without the token check (see [`dashboard`]).
    dashboard::routes()
        .method_not_allowed_fallback(method_not_allowed)
        .merge(api_routes)
        .with_state(api)
}

/// Lets a request through only with the configured bearer token (see [`auth`]).
async fn require_token(
    State(access): State<Arc<auth::Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match access.check(header) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            tracing::debug!(path = %request.uri().path(), reason = %denied, "REST request refused");
            let mut answer =
                RestError::new(StatusCode::UNAUTHORIZED, denied.to_string()).into_response();
            answer
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            answer
        }
    }
}

async fn not_found(uri: Uri) -> RestError {
    RestError::new(StatusCode::NOT_FOUND, format!("Not found: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn config() -> Json<Value> {
    Json(flink::dashboard_config())
}

async fn overview(State(api): State<Api>) -> Answer {
    let d = api.dispatcher().await?;
    let jobs = d.list_jobs().await?;
    let tms = api.task_managers().await?;
    Ok(Json(flink::cluster_overview(&jobs, &tms)))
}

async fn jobs(State(api): State<Api>) -> Answer {
    let jobs = api.dispatcher().await?.list_jobs().await?;
    Ok(Json(flink::job_ids_with_status(&jobs)))
}

async fn jobs_overview(State(api): State<Api>) -> Answer {
    let d = api.dispatcher().await?;
    let jobs = d.list_jobs().await?;
    let mut details = Vec::with_capacity(jobs.len());
    for answer in join_all(jobs.iter().map(|j| d.job_details(j.job))).await {
        match answer? {
            Ok(job) => details.push(job),
            // The Dispatcher keeps every job it listed; should one still be gone by
            // now, the list simply leaves it out.
            Err(ClusterError::JobNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(flink::jobs_overview(&details)))
}

async fn job(State(api): State<Api>, jobid: PathParams<String>) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let details = api.dispatcher().await?.job_details(job).await??;
    Ok(Json(flink::job_details(&details, now_ms())))
}

async fn job_status(State(api): State<Api>, jobid: PathParams<String>) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let status = api.dispatcher().await?.job_status(job).await??;
    Ok(Json(flink::job_status(status)))
}

/// Flink's default `maxExceptions`.
const DEFAULT_MAX_EXCEPTIONS: usize = 20;

async fn job_exceptions(
    State(api): State<Api>,
    jobid: PathParams<String>,
    params: Params,
) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let max = match query(params)?.get("maxExceptions") {
        None => DEFAULT_MAX_EXCEPTIONS,
        Some(n) => n.parse().map_err(|_| {
            RestError::new(
                StatusCode::BAD_REQUEST,
                format!("maxExceptions must be a non-negative integer, is {n:?}"),
            )
        })?,
    };
    let details = api.dispatcher().await?.job_details(job).await??;
    Ok(Json(flink::job_exceptions(&details, max)))
}

async fn job_metrics(State(api): State<Api>, jobid: PathParams<String>, params: Params) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let q = query(params)?;
    let details = api.dispatcher().await?.job_details(job).await??;
    Ok(Json(flink::job_metrics(
        &details,
        q.get("get").map(String::as_str),
    )))
}

async fn execution_result(State(api): State<Api>, jobid: PathParams<String>) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    match api.dispatcher().await?.request_job_result(job).await? {
        Ok(result) => Ok(Json(flink::execution_result(&result))),
        Err(ClusterError::JobNotTerminal { .. }) => Ok(Json(flink::execution_result_in_progress())),
        Err(e) => Err(e.into()),
    }
}

async fn vertex(State(api): State<Api>, ids: PathParams<(String, String)>) -> Answer {
    let (jobid, vertexid) = path(ids)?;
    let (_, v) = api.vertex(&jobid, &vertexid).await?;
    // Without the TaskManager list the subtasks' endpoints show as unassigned.
    let tms = api.task_managers().await.unwrap_or_default();
    Ok(Json(flink::vertex_details(&v, &tms, now_ms())))
}

async fn backpressure(State(api): State<Api>, ids: PathParams<(String, String)>) -> Answer {
    let (jobid, vertexid) = path(ids)?;
    let (job, v) = api.vertex(&jobid, &vertexid).await?;
    let ratios = api.ratios(job, &v);
    Ok(Json(metrics::backpressure(&v, &ratios, now_ms())))
}

async fn subtask_metrics(
    State(api): State<Api>,
    ids: PathParams<(String, String)>,
    params: Params,
) -> Answer {
    let (jobid, vertexid) = path(ids)?;
    let q = metrics::MetricsQuery::parse(&query(params)?)?;
    let (job, v) = api.vertex(&jobid, &vertexid).await?;
    let ratios = api.ratios(job, &v);
    Ok(Json(metrics::subtask_metrics(&v, &ratios, &q)))
}

async fn watermarks(State(api): State<Api>, ids: PathParams<(String, String)>) -> Answer {
    let (jobid, vertexid) = path(ids)?;
    let (_, v) = api.vertex(&jobid, &vertexid).await?;
    Ok(Json(metrics::watermarks(&v)))
}

/// `POST /jobs` (rill's, see [`submit`]): 200 with `{"jobid": …}`.
async fn submit_job(State(api): State<Api>, b: Body) -> Answer {
    let job = submit::build(&body(b)?)?;
    let name = job.name.clone();
    let id = api.dispatcher().await?.submit_job(job).await??;
    tracing::info!(job = %id, %name, "job submitted through the REST API");
    Ok(Json(serde_json::json!({ "jobid": id.to_string() })))
}

async fn task_managers(State(api): State<Api>) -> Answer {
    let tms = api.task_managers().await?;
    let mut body = flink::task_managers(&tms);
    prometheus::add_metrics_urls(&mut body, &tms);
    Ok(Json(body))
}

/// `GET /metrics`: the cluster, every listed job and the JobManager process in
/// Prometheus' text format. A job whose details cannot be had now (gone, or its
/// JobMaster still starting) is left out of this scrape.
async fn prometheus_metrics(State(api): State<Api>) -> Result<Response, RestError> {
    let d = api.dispatcher().await?;
    let jobs = d.list_jobs().await?;
    let tms = api.task_managers().await?;
    let cluster = prometheus::ClusterSample {
        task_managers: tms.len() as u64,
        slots_total: tms.iter().map(|t| u64::from(t.slots_total)).sum(),
        slots_available: tms.iter().map(|t| u64::from(t.slots_free)).sum(),
        running_jobs: jobs
            .iter()
            .filter(|j| j.status == crate::messages::JobStatus::Running)
            .count() as u64,
    };
    let mut checkpoints = Vec::with_capacity(jobs.len());
    let mut tasks = Vec::new();
    for answer in join_all(jobs.iter().map(|j| d.job_details(j.job))).await {
        match answer? {
            Ok(job) => {
                let (c, t) = prometheus::job_samples(&job, |v| api.ratios(job.overview.job, v));
                checkpoints.push(c);
                tasks.extend(t);
            }
            Err(ClusterError::JobNotFound(_) | ClusterError::Unavailable(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let text = prometheus::job_manager_metrics(
        &cluster,
        &checkpoints,
        &tasks,
        prometheus::ProcessSample::read(),
    );
    Ok(([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response())
}

async fn task_manager(State(api): State<Api>, tmid: PathParams<String>) -> Answer {
    let tmid = path(tmid)?;
    let tms = api.task_managers().await?;
    let tm = tms
        .iter()
        .find(|t| t.location.resource_id.as_str() == tmid)
        .ok_or_else(|| {
            RestError::new(
                StatusCode::NOT_FOUND,
                format!("Could not find TaskManager {tmid}"),
            )
        })?;
    Ok(Json(flink::task_manager_details(tm)))
}

/// `PATCH /jobs/:jobid?mode=cancel`: Flink's request body is empty (`{}` is accepted);
/// `mode` defaults to `cancel`, Flink's deprecated `stop` is refused.
async fn cancel(
    State(api): State<Api>,
    jobid: PathParams<String>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), RestError> {
    let job: JobId = flink::parse_job_id(&path(jobid)?)?;
    match query(params)?.get("mode").map(String::as_str) {
        None | Some("cancel") => {}
        Some(other) => {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!("unsupported termination mode {other:?}: only \"cancel\" is supported"),
            ))
        }
    }
    let body = body.map_err(|e| RestError::new(e.status(), e.body_text()))?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(_)) => {}
            _ => {
                return Err(RestError::new(
                    StatusCode::BAD_REQUEST,
                    "Bad request received: the request body must be empty or a JSON object",
                ))
            }
        }
    }
    api.dispatcher().await?.cancel_job(job).await??;
    tracing::info!(%job, "job cancelled through the REST API");
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}

/// A request body; axum's rejection (a body that cannot be read) becomes Flink's error.
type Body = Result<Bytes, BytesRejection>;

fn body(body: Body) -> Result<Bytes, RestError> {
    body.map_err(|e| RestError::new(e.status(), e.body_text()))
}

/// What a trigger asks the Dispatcher for.
enum Trigger {
    Checkpoint,
    Savepoint(SavepointRequest),
}

impl Trigger {
    fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Checkpoint => TriggerKind::Checkpoint,
            Trigger::Savepoint(_) => TriggerKind::Savepoint,
        }
    }
}

impl Api {
    /// Starts `trigger` for `job`; answers its trigger id: the client's own `client` id
    /// (a second trigger with the same id starts nothing), else one of rill's.
    async fn trigger(
        &self,
        job: JobId,
        trigger: Trigger,
        client: Option<u128>,
    ) -> Result<u128, RestError> {
        let d = self.dispatcher().await?;
        let kind = trigger.kind();
        let start = async {
            let request = match trigger {
                Trigger::Checkpoint => d.trigger_checkpoint(job).await??,
                Trigger::Savepoint(r) => d.trigger_savepoint(job, r).await??,
            };
            Ok::<u64, RestError>(request)
        };
        let Some(id) = client else {
            let request = start.await?;
            tracing::info!(%job, kind = kind.name(), request, "triggered through the REST API");
            return Ok(checkpoints::trigger_id(kind, request));
        };
        let mut triggers = self.triggers.lock().await;
        if triggers.get(job, kind, id).is_none() {
            let request = start.await?;
            tracing::info!(%job, kind = kind.name(), request, "triggered through the REST API");
            triggers.insert(job, kind, id, request);
        }
        Ok(id)
    }

    /// Where the operation trigger id `trigger` of `job` names stands, with the job's
    /// checkpoints for a completed checkpoint's id.
    async fn trigger_status(
        &self,
        job: JobId,
        kind: TriggerKind,
        trigger: &str,
    ) -> Result<SnapshotStatus, RestError> {
        let id = checkpoints::parse_trigger_id(trigger)?;
        let unknown = || {
            RestError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "There is no {} operation with trigger id {trigger} for job {job}",
                    kind.name()
                ),
            )
        };
        let request = self
            .triggers
            .lock()
            .await
            .resolve(job, kind, id)
            .ok_or_else(unknown)?;
        match self
            .dispatcher()
            .await?
            .snapshot_status(job, request)
            .await?
        {
            Ok(status) => Ok(status),
            Err(ClusterError::SnapshotNotFound { .. }) => Err(unknown()),
            Err(e) => Err(e.into()),
        }
    }
}

/// 202 with Flink's `TriggerResponse`.
fn accepted(trigger: u128) -> (StatusCode, Json<Value>) {
    (
        StatusCode::ACCEPTED,
        Json(checkpoints::trigger_response(trigger)),
    )
}

async fn checkpoint_statistics(State(api): State<Api>, jobid: PathParams<String>) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let details = api.dispatcher().await?.job_details(job).await??;
    Ok(Json(checkpoints::checkpointing_statistics(
        &details.checkpoints,
    )))
}

/// 404 for a job without checkpoints, as Flink answers.
async fn checkpoint_config(State(api): State<Api>, jobid: PathParams<String>) -> Answer {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let details = api.dispatcher().await?.job_details(job).await??;
    if !details.checkpoints.enabled {
        return Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("Checkpointing is not enabled for this job ({job})."),
        ));
    }
    Ok(Json(checkpoints::checkpoint_config(&api.checkpointing)))
}

async fn trigger_checkpoint(
    State(api): State<Api>,
    jobid: PathParams<String>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), RestError> {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let t = checkpoints::parse_checkpoint_trigger(&body(b)?)?;
    Ok(accepted(
        api.trigger(job, Trigger::Checkpoint, t.trigger_id).await?,
    ))
}

async fn trigger_savepoint(
    State(api): State<Api>,
    jobid: PathParams<String>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), RestError> {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let t = checkpoints::parse_savepoint_trigger(&body(b)?)?;
    let trigger = Trigger::Savepoint(t.request);
    Ok(accepted(api.trigger(job, trigger, t.trigger_id).await?))
}

async fn stop_with_savepoint(
    State(api): State<Api>,
    jobid: PathParams<String>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), RestError> {
    let job = flink::parse_job_id(&path(jobid)?)?;
    let t = checkpoints::parse_stop(&body(b)?)?;
    let trigger = Trigger::Savepoint(t.request);
    Ok(accepted(api.trigger(job, trigger, t.trigger_id).await?))
}

async fn checkpoint_trigger_status(
    State(api): State<Api>,
    ids: PathParams<(String, String)>,
) -> Answer {
    let (jobid, trigger) = path(ids)?;
    let job = flink::parse_job_id(&jobid)?;
    let status = api
        .trigger_status(job, TriggerKind::Checkpoint, &trigger)
        .await?;
    let checkpoint = match &status {
        SnapshotStatus::Completed { path } => {
            // The history names the checkpoint of a directory; without it, its name does.
            let history = match api.dispatcher().await?.job_details(job).await? {
                Ok(d) => d.checkpoints,
                Err(_) => Default::default(),
            };
            checkpoints::checkpoint_id_of(&history, path)
        }
        _ => None,
    };
    Ok(Json(checkpoints::checkpoint_status(&status, checkpoint)))
}

async fn savepoint_trigger_status(
    State(api): State<Api>,
    ids: PathParams<(String, String)>,
) -> Answer {
    let (jobid, trigger) = path(ids)?;
    let job = flink::parse_job_id(&jobid)?;
    let status = api
        .trigger_status(job, TriggerKind::Savepoint, &trigger)
        .await?;
    Ok(Json(checkpoints::savepoint_status(&status)))
}
