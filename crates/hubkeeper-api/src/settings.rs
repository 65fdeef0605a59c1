//! Settings and maintenance: `GET|PUT /v1/settings`, `POST /v1/maintenance/reload-config`,
//! `POST /v1/maintenance/clear-rate-limits`, `GET|POST /v1/backups`, `GET|POST /v1/selftest`.
//!
//! A settings change is an event; the answer comes after it was broadcast on the control channel,
//! so every running process applies it within moments (see `hubkeeper_core::settings`). The
//! effective static configuration is `GET /v1/server/config`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::backup::{list_backups, BackupRun};
use hubkeeper_core::selftest::{self, SelfTestReport};
use hubkeeper_core::settings::{SettingsChange, SettingsSnapshot};
use hubkeeper_domain::operations::{BackupTrigger, OperationCommand};
use hubkeeper_domain::AppId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/settings", get(show).put(update))
        .route("/v1/maintenance/reload-config", post(reload))
        .route("/v1/maintenance/clear-rate-limits", post(clear_rate_limits))
        .route("/v1/backups", get(backups).post(backup_now))
        .route("/v1/selftest", get(last_selftest).post(run_selftest))
}

/// The stored settings and what this process applied.
#[derive(Serialize)]
struct SettingsAnswer {
    #[serde(flatten)]
    stored: SettingsSnapshot,
    /// Version this answering process applied last (equal to `version` once it caught up).
    applied_version: u64,
}

async fn show(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<SettingsAnswer>, ApiError> {
    caller.require(Permission::Read)?;
    let ops = state.maintenance()?;
    let stored = ops.settings.current().await?;
    Ok(Json(SettingsAnswer {
        stored,
        applied_version: ops.live.get().version,
    }))
}

async fn update(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
    JsonBody(change): JsonBody<SettingsChange>,
) -> Result<Json<SettingsAnswer>, ApiError> {
    caller.require(Permission::Administer)?;
    let ops = state.maintenance()?;
    let stored = ops
        .settings
        .update(change, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(SettingsAnswer {
        stored,
        applied_version: ops.live.get().version,
    }))
}

async fn reload(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    state.maintenance()?.settings.reload_everywhere().await?;
    state
        .audit()
        .operation(
            OperationCommand::RecordConfigurationReloaded,
            &request.metadata(caller.actor()),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "sent", "message": "every process re-reads the settings now"})),
    ))
}

async fn clear_rate_limits(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    state
        .maintenance()?
        .settings
        .clear_rate_limits_everywhere()
        .await?;
    state
        .audit()
        .operation(
            OperationCommand::RecordRateLimitsCleared,
            &request.metadata(caller.actor()),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"status": "sent", "message": "every process resets its rate-limit counters now"}),
        ),
    ))
}

/// A backup file on this process's host.
#[derive(Serialize)]
struct BackupFile {
    name: String,
    bytes: u64,
}

#[derive(Serialize)]
struct BackupsAnswer {
    /// Where this process writes backups (`null`: it cannot make backups).
    dir: Option<String>,
    /// Backup files there, newest first.
    files: Vec<BackupFile>,
    /// Recorded runs of every process, newest first.
    runs: Vec<BackupRun>,
}

async fn backups(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<BackupsAnswer>, ApiError> {
    caller.require(Permission::Read)?;
    let ops = state.maintenance()?;
    let Some(backups) = &ops.backups else {
        return Ok(Json(BackupsAnswer {
            dir: None,
            files: Vec::new(),
            runs: Vec::new(),
        }));
    };
    let mut files = Vec::new();
    for path in list_backups(backups.dir()).await?.into_iter().rev() {
        let bytes = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            files.push(BackupFile {
                name: name.to_owned(),
                bytes,
            });
        }
    }
    Ok(Json(BackupsAnswer {
        dir: Some(backups.dir().display().to_string()),
        files,
        runs: backups.runs(20).await?,
    }))
}

async fn backup_now(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    let ops = state.maintenance()?;
    let backups = ops
        .backups
        .as_ref()
        .ok_or_else(|| ApiError::not_configured("this process makes no backups"))?;
    // Recorded as it starts: a backup that then fails still shows who started it.
    state
        .audit()
        .operation(
            OperationCommand::RecordBackupStarted {
                trigger: BackupTrigger::Api,
            },
            &request.metadata(caller.actor()),
        )
        .await?;
    let keep = ops.live.get().values.backups.keep;
    let outcome = backups.backup("api", keep).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "file": outcome.file.file_name().map(|n| n.to_string_lossy().into_owned()),
            "bytes": outcome.bytes,
            "duration_ms": outcome.duration_ms,
            "removed": outcome.removed.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        })),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SelfTestRequest {
    #[serde(default)]
    app_id: Option<AppId>,
}

async fn run_selftest(
    caller: Caller,
    State(state): State<AppState>,
    request_id: RequestId,
    body: axum::body::Bytes,
) -> Result<Json<SelfTestReport>, ApiError> {
    caller.require(Permission::Administer)?;
    // The body is optional: the Settings page's button sends none.
    let request: SelfTestRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SelfTestRequest::default()
    } else {
        crate::extract::parse_json_object(&body)?
    };
    let ops = state.maintenance()?;
    let report = selftest::run(&ops.selftest, request.app_id).await;
    state
        .audit()
        .operation(report.as_operation(), &request_id.metadata(caller.actor()))
        .await?;
    Ok(Json(report))
}

async fn last_selftest(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::Read)?;
    let report = selftest::last_report(state.pool()).await?;
    Ok(Json(json!({ "last": report })))
}
