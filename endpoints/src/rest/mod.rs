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
//! | `GET /jobs/overview` | one summary per job |
//! | `GET /jobs/:jobid` | a job's details and vertices |
//! | `GET /jobs/:jobid/status` | its status |
//! | `GET /jobs/:jobid/exceptions[?maxExceptions=n]` | its failure history |
//! | `GET /jobs/:jobid/execution-result` | `IN_PROGRESS`, or its result |
//! | `GET /jobs/:jobid/vertices/:vertexid` | a vertex and its subtasks |
//! | `GET /taskmanagers`, `GET /taskmanagers/:tmid` | TaskManagers |
//! | `PATCH /jobs/:jobid[?mode=cancel]` | cancels: 202 with `{}` |
//!
//! Errors are always Flink's `{"errors":["…"]}`: 400 for a malformed id, query or body,
//! 404 for an unknown id or route, 405 for a wrong method, 409 for cancelling a job that
//! already ended, 503 when the Dispatcher cannot be reached or the job's JobMaster is
//! still starting (retrying makes sense).

pub mod flink;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::join_all;
use rill_dataflow::JobId;
use rill_runtime::tasks::TaskSet;
use rill_runtime::{RpcAddress, RpcError, RpcService};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::RestConfig;
use crate::gateways::dispatcher;
use crate::messages::{now_ms, ClusterError, TaskManagerInfo};

/// A running REST server.
pub struct RestServer {
    local_addr: SocketAddr,
    tasks: TaskSet,
}

impl RestServer {
    /// Binds `config`'s socket and serves the API from the Dispatcher at `dispatcher`
    /// (reached through `rpc`). Must be called inside a tokio runtime.
    pub fn start(
        config: &RestConfig,
        rpc: RpcService,
        dispatcher: RpcAddress,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = std::net::TcpListener::bind(config.bind())?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = router(Api {
            rpc,
            address: dispatcher,
            gateway: Arc::new(OnceCell::new()),
        });
        let tasks = TaskSet::new(runtime);
        tasks.spawn("rest-server", async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the REST server stopped");
            }
        });
        tracing::info!(address = %local_addr, "REST endpoint listening");
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

/// What every handler shares: the way to the Dispatcher.
#[derive(Clone)]
struct Api {
    rpc: RpcService,
    address: RpcAddress,
    gateway: Arc<OnceCell<dispatcher::Gateway>>,
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

fn router(api: Api) -> Router {
    let routes = Router::new()
        .route("/config", get(config))
        .route("/overview", get(overview))
        .route("/jobs", get(jobs))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{jobid}", get(job).patch(cancel))
        .route("/jobs/{jobid}/status", get(job_status))
        .route("/jobs/{jobid}/exceptions", get(job_exceptions))
        .route("/jobs/{jobid}/execution-result", get(execution_result))
        .route("/jobs/{jobid}/vertices/{vertexid}", get(vertex))
        .route("/taskmanagers", get(task_managers))
        .route("/taskmanagers/{tmid}", get(task_manager));
    Router::new()
        .nest("/v1", routes.clone())
        .merge(routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
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
    let job = flink::parse_job_id(&jobid)?;
    let vertex = flink::parse_vertex_id(&vertexid)?;
    let details = api.dispatcher().await?.job_details(job).await??;
    let v = vertex
        .and_then(|id| details.vertices.iter().find(|v| v.vertex == id))
        .ok_or_else(|| {
            RestError::new(
                StatusCode::NOT_FOUND,
                format!("job {job} has no vertex {vertexid}"),
            )
        })?;
    // Without the TaskManager list the subtasks' endpoints show as unassigned.
    let tms = api.task_managers().await.unwrap_or_default();
    Ok(Json(flink::vertex_details(v, &tms, now_ms())))
}

async fn task_managers(State(api): State<Api>) -> Answer {
    Ok(Json(flink::task_managers(&api.task_managers().await?)))
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
