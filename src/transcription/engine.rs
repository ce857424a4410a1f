//! The speech-to-text engine the configuration asks for.

use std::sync::Arc;

use anyhow::{bail, Context};
use callingest_transcribe::openai::{OpenAiConfig, OpenAiEngine};
use callingest_transcribe::Transcriber;

use crate::config::{TranscriberKind, TranscriptionConfig};

/// `None` for `CALLINGEST_TRANSCRIBER=none`. A misconfigured engine stops the start-up: better
/// than accepting calls whose transcripts would all fail.
pub fn build_engine(config: &TranscriptionConfig) -> anyhow::Result<Option<Arc<dyn Transcriber>>> {
    match config.transcriber {
        TranscriberKind::None => Ok(None),
        TranscriberKind::Openai => {
            let Some(base_url) = config.url.clone() else {
                bail!("CALLINGEST_TRANSCRIBER=openai needs CALLINGEST_TRANSCRIBE_URL");
            };
            let engine = OpenAiEngine::new(
                OpenAiConfig {
                    base_url,
                    api_key: config.api_key.as_ref().map(|k| k.expose().to_owned()),
                    model: config.model.clone(),
                    timeout: config.timeout,
                },
                crate::http_client::builder(),
            )
            .context("could not set up the transcription client")?;
            Ok(Some(Arc::new(engine)))
        }
        TranscriberKind::Whisper => whisper(config),
    }
}

#[cfg(feature = "whisper")]
fn whisper(config: &TranscriptionConfig) -> anyhow::Result<Option<Arc<dyn Transcriber>>> {
    let Some(model) = &config.whisper_model else {
        bail!("CALLINGEST_TRANSCRIBER=whisper needs CALLINGEST_WHISPER_MODEL (a ggml model file; scripts/fetch-whisper-model writes one)");
    };
    let engine = callingest_transcribe::whisper::WhisperEngine::load(model, config.whisper_threads)
        .context("could not load the whisper model")?;
    Ok(Some(Arc::new(engine)))
}

#[cfg(not(feature = "whisper"))]
fn whisper(_config: &TranscriptionConfig) -> anyhow::Result<Option<Arc<dyn Transcriber>>> {
    bail!("CALLINGEST_TRANSCRIBER=whisper, but this build has no whisper engine: build with `--features whisper`")
}
