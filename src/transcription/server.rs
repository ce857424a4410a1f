//! `callingest transcribe-server`: any engine of this service behind the OpenAI-compatible
//! transcription API (`POST /v1/audio/transcriptions`), so one machine with the model can
//! serve the transcription pools of several others (`CALLINGEST_TRANSCRIBER=openai`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use callingest_transcribe::{Stop, TranscribeError, Transcriber};
use poem::http::StatusCode;
use poem::web::{Data, Json, Multipart};
use poem::{handler, post, EndpointExt, IntoResponse, Request, Response, Route};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Largest upload taken, in bytes (an hour of 16 kHz 16-bit mono is 115 MB).
const MAX_UPLOAD_BYTES: usize = 256 << 20;

#[derive(Clone)]
struct State {
    engine: Arc<dyn Transcriber>,
    api_key: Option<Arc<Secret>>,
}

/// The routes of the transcription server. With `api_key`, requests need it as a bearer
/// token.
pub fn routes(engine: Arc<dyn Transcriber>, api_key: Option<Secret>) -> impl poem::Endpoint {
    Route::new()
        .at("/v1/audio/transcriptions", post(transcriptions))
        .data(State {
            engine,
            api_key: api_key.map(Arc::new),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": "invalid_request_error"}});
    (status, Json(body)).into_response()
}

#[handler]
async fn transcriptions(request: &Request, state: Data<&State>, mut form: Multipart) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.expose().as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong API key");
        }
    }
    let mut upload = None;
    let mut verbose = false;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed form: {e}")),
        };
        match field.name() {
            Some("file") => match read_limited(field).await {
                Ok(bytes) => upload = Some(bytes),
                Err(response) => return response,
            },
            Some("response_format") => match field.text().await.as_deref() {
                Ok("verbose_json") => verbose = true,
                Ok("json") => verbose = false,
                Ok(other) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("response_format {other:?} is not supported (json, verbose_json)"),
                    )
                }
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed form: {e}")),
            },
            // `model`, `language`, `timestamp_granularities[]`, ...: this server has one model.
            _ => {}
        }
    }
    let Some(upload) = upload else {
        return error(StatusCode::BAD_REQUEST, "the form has no `file`");
    };
    match transcribe(state.engine.as_ref(), upload).await {
        Ok(body) if verbose => Json(body).into_response(),
        Ok(body) => Json(json!({"text": body["text"]})).into_response(),
        Err(TranscribeError::Audio(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(TranscribeError::Transient(message)) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        Err(TranscribeError::Permanent(message)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        // Nothing here asks an engine to stop; answered like any engine that gave up.
        Err(err @ TranscribeError::Stopped) => {
            error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
    }
}

async fn read_limited(field: poem::web::Field) -> Result<Vec<u8>, Response> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut reader = field.into_async_read().take(MAX_UPLOAD_BYTES as u64 + 1);
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("uploads are limited to {MAX_UPLOAD_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// The `verbose_json` answer for an uploaded recording.
async fn transcribe(
    engine: &dyn Transcriber,
    upload: Vec<u8>,
) -> Result<serde_json::Value, TranscribeError> {
    let format = callingest_audio::identify(&upload).ok_or_else(|| {
        TranscribeError::Audio("the file is none of MP3, WAV, AAC, M4A or MP4".into())
    })?;
    let (file, duration) = tokio::task::spawn_blocking(move || {
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| TranscribeError::Transient(format!("temporary file: {e}")))?;
        file.write_all(&upload)
            .map_err(|e| TranscribeError::Transient(format!("temporary file: {e}")))?;
        drop(upload);
        // The duration answered is the decoded audio's, measured by a first (fast, streaming)
        // pass, so that the transcription can stream the file rather than hold its channels.
        let analysis = callingest_audio::analyze(file.path(), format).map_err(|e| match e {
            callingest_audio::AnalysisError::Io(_) => TranscribeError::Transient(e.to_string()),
            _ => TranscribeError::Audio(e.to_string()),
        })?;
        Ok::<_, TranscribeError>((file, analysis.duration_ms as f64 / 1000.0))
    })
    .await
    .map_err(|e| TranscribeError::Permanent(format!("decoding failed: {e}")))??;
    // No length limit of its own: the upload limit bounds the work.
    let transcript = engine
        .transcribe_recording(file.path(), format, Duration::MAX, &Stop::new())
        .await?;
    drop(file);
    let segments: Vec<serde_json::Value> = transcript
        .segments
        .iter()
        .enumerate()
        .map(|(id, s)| {
            json!({
                "id": id,
                "start": s.start_ms as f64 / 1000.0,
                "end": s.end_ms as f64 / 1000.0,
                "text": s.text,
            })
        })
        .collect();
    Ok(json!({
        "task": "transcribe",
        "language": transcript.language,
        "duration": duration,
        "text": transcript.text(),
        "segments": segments,
    }))
}
