//! Streaming demux + decode with symphonia, feeding each decoded block to a [`PcmSink`] (the
//! [`Meter`] for `analyze`, a resampler for transcription).
//!
//! Only one decoded packet (a few KiB of samples) is alive at a time; nothing accumulates here
//! with the length of the call (what the sink keeps is up to the sink).

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use symphonia::core::audio::conv::IntoSample;
use symphonia::core::audio::sample::Sample;
use symphonia::core::audio::{Audio, AudioBuffer, GenericAudioBufferRef};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::formats::{AdtsReader, IsoMp4Reader, MpaReader, WavReader};

use crate::meter::{Measurements, Meter};
use crate::samples::SampleCheck;
use crate::RecordingFormat;
use crate::{AnalysisError, Bounds, PcmSink};

/// What the decoder produced, before conversion to the domain's `AudioAnalytics`.
pub(crate) struct Decoded {
    pub codec: String,
    pub measurements: Measurements,
}

/// Adapts the meter, which needs the rate and layout at construction, to the sink protocol.
#[derive(Default)]
struct MeterSink(Option<Meter>);

impl PcmSink for MeterSink {
    fn start(&mut self, sample_rate: u32, channels: usize) {
        self.0 = Some(Meter::new(sample_rate, channels));
    }
    fn push_plane(&mut self, channel: usize, samples: &[f32]) {
        if let Some(m) = &mut self.0 {
            m.push_plane(channel, samples);
        }
    }
    fn end_block(&mut self, frames: usize) {
        if let Some(m) = &mut self.0 {
            m.end_block(frames);
        }
    }
}

pub(crate) fn decode_and_measure(
    path: &Path,
    format: RecordingFormat,
    bounds: &Bounds,
) -> Result<Decoded, AnalysisError> {
    let mut sink = MeterSink::default();
    let codec = decode_into(path, format, &mut sink, bounds)?;
    // decode_into only returns Ok after at least one block, so the meter exists.
    let meter = sink.0.ok_or_else(|| {
        AnalysisError::Undecodable(format!("{format}: no audio could be decoded"))
    })?;
    Ok(Decoded {
        codec,
        measurements: meter.finish(),
    })
}

/// Opens the reader for the format the bytes were identified as.
///
/// The caller already knows the format (from [`crate::identify`]), so the matching demuxer is
/// built directly instead of probing: a probe would scan for *any* known format and could pick
/// a different reader than the one the recording was accepted as.
fn open_reader(
    path: &Path,
    format: RecordingFormat,
) -> Result<Box<dyn FormatReader>, AnalysisError> {
    let file = File::open(path)?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let opts = FormatOptions::default();
    let what = format.as_str();
    let reader: Box<dyn FormatReader> = match format {
        RecordingFormat::Wav => {
            Box::new(WavReader::try_new(mss, opts).map_err(|e| open_err(what, e))?)
        }
        RecordingFormat::Mp3 => {
            Box::new(MpaReader::try_new(mss, opts).map_err(|e| open_err(what, e))?)
        }
        RecordingFormat::Aac => {
            Box::new(AdtsReader::try_new(mss, opts).map_err(|e| open_err(what, e))?)
        }
        RecordingFormat::M4a | RecordingFormat::Mp4 => {
            Box::new(IsoMp4Reader::try_new(mss, opts).map_err(|e| open_err(what, e))?)
        }
    };
    Ok(reader)
}

/// A container that cannot even be opened is not what its first bytes claimed.
fn open_err(what: &str, e: SymError) -> AnalysisError {
    match e {
        SymError::Unsupported(f) => AnalysisError::Unsupported(format!("{what}: {f}")),
        SymError::IoError(io) if io.kind() != ErrorKind::UnexpectedEof => AnalysisError::Io(io),
        SymError::IoError(_) => {
            AnalysisError::Undecodable(format!("{what}: file ends before the first audio"))
        }
        other => AnalysisError::Undecodable(format!("not a valid {what} file: {other}")),
    }
}

/// Decodes the whole file into `sink` and returns the decoder's short name.
///
/// `sink.start` is called once, before the first block; the rate and channel count must then
/// stay the same for the whole stream (both consumers assume one layout per call). Every
/// sample the sink gets is ordinary (see [`crate::samples`]). Decoding stops with
/// [`AnalysisError::TooLong`] as soon as the decoded audio passes `max_duration`.
pub(crate) fn decode_into(
    path: &Path,
    format: RecordingFormat,
    sink: &mut dyn PcmSink,
    bounds: &Bounds,
) -> Result<String, AnalysisError> {
    let mut reader = open_reader(path, format)?;
    let what = format.as_str();

    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| AnalysisError::Unsupported(format!("{what}: no audio track")))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AnalysisError::Unsupported(format!("{what}: no audio codec parameters")))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(f) => AnalysisError::Unsupported(format!("{what}: codec {f}")),
            other => AnalysisError::Undecodable(format!("{what}: {other}")),
        })?;
    let codec = decoder.codec_info().short_name.to_string();

    let mut layout: Option<(u32, usize)> = None;
    let mut scratch: Vec<f32> = Vec::new();
    let mut good_packets = 0u64;
    let mut bad_packets = 0u64;
    let mut check = SampleCheck::default();
    // Sample frames allowed by `max_duration`, once the rate is known.
    let mut max_frames: Option<u64> = None;
    let mut frames = 0u64;

    loop {
        if bounds.stop.requested() {
            return Err(AnalysisError::Stopped);
        }
        let packet = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // Demuxers report a file cut short inside a packet or box as an unexpected EOF.
            // Once audio has been decoded, that is the ordinary end of a recording whose upload
            // or encoder stopped early: the audio that is there is measured. Before any audio
            // it means there is nothing to measure.
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                if layout.is_some() {
                    break;
                }
                return Err(AnalysisError::Undecodable(format!(
                    "{what}: file ends before the first audio"
                )));
            }
            Err(SymError::IoError(e)) => return Err(AnalysisError::Io(e)),
            Err(SymError::ResetRequired) => {
                return Err(AnalysisError::Unsupported(format!(
                    "{what}: chained streams"
                )))
            }
            Err(SymError::Unsupported(f)) => {
                return Err(AnalysisError::Unsupported(format!("{what}: {f}")))
            }
            Err(e) => return Err(AnalysisError::Undecodable(format!("{what}: {e}"))),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // One damaged packet should not fail an hour-long call: skip it, and judge the
            // file as a whole at the end.
            Err(SymError::DecodeError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                bad_packets += 1;
                continue;
            }
            Err(SymError::Unsupported(f)) => {
                return Err(AnalysisError::Unsupported(format!("{what}: {f}")))
            }
            Err(e) => return Err(AnalysisError::Undecodable(format!("{what}: {e}"))),
        };
        good_packets += 1;
        if buf.frames() == 0 {
            continue;
        }
        let rate = buf.spec().rate();
        let channels = buf.spec().channels().count();
        if rate == 0 || channels == 0 {
            return Err(AnalysisError::Undecodable(format!(
                "{what}: no sample rate or channels"
            )));
        }
        let &mut (first_rate, first_channels) = layout.get_or_insert_with(|| {
            max_frames = bounds
                .max_duration
                .map(|d| (d.as_secs_f64() * f64::from(rate)) as u64);
            sink.start(rate, channels);
            (rate, channels)
        });
        // Talk measurements and resampling assume one rate and layout for the whole call.
        if first_rate != rate || first_channels != channels {
            return Err(AnalysisError::Unsupported(format!(
                "{what}: sample rate or channel count changes mid-stream"
            )));
        }
        frames += buf.frames() as u64;
        if let (Some(max), Some(limit)) = (max_frames, bounds.max_duration) {
            // Checked before the block is measured: nothing past the limit is worked on.
            if frames > max {
                return Err(AnalysisError::TooLong { limit });
            }
        }
        feed(sink, &buf, &mut scratch, &mut check);
    }

    if bad_packets > good_packets {
        return Err(AnalysisError::Undecodable(format!(
            "{what}: {bad_packets} of {} packets are corrupt",
            bad_packets + good_packets
        )));
    }
    if layout.is_none() {
        return Err(AnalysisError::Undecodable(format!(
            "{what}: no audio could be decoded"
        )));
    }
    if check.mostly_invalid() {
        return Err(AnalysisError::InvalidSamples {
            invalid: check.invalid,
            total: check.total,
        });
    }
    Ok(codec)
}

/// Feeds one decoded block to the sink as ordinary f32 planes (see [`crate::samples`]).
fn feed(
    sink: &mut dyn PcmSink,
    buf: &GenericAudioBufferRef<'_>,
    scratch: &mut Vec<f32>,
    check: &mut SampleCheck,
) {
    match buf {
        // Decoders of lossy codecs and float WAVs output f32: passed on in place, copied only
        // when a plane holds a sample that must be made ordinary.
        GenericAudioBufferRef::F32(b) => {
            for (c, plane) in b.iter_planes().enumerate() {
                sink.push_plane(c, check.f32_plane(plane, scratch));
            }
            sink.end_block(b.frames());
        }
        GenericAudioBufferRef::F64(b) => {
            for (c, plane) in b.iter_planes().enumerate() {
                sink.push_plane(c, check.f64_plane(plane, scratch));
            }
            sink.end_block(b.frames());
        }
        GenericAudioBufferRef::U8(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::U16(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::U24(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::U32(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::S8(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::S16(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::S24(b) => feed_converted(sink, b, scratch, check),
        GenericAudioBufferRef::S32(b) => feed_converted(sink, b, scratch, check),
    }
}

/// Integer (PCM) samples are converted plane by plane into one reused scratch buffer; they
/// always land in -1.0..=1.0.
fn feed_converted<S>(
    sink: &mut dyn PcmSink,
    buf: &AudioBuffer<S>,
    scratch: &mut Vec<f32>,
    check: &mut SampleCheck,
) where
    S: Sample + IntoSample<f32>,
{
    for (c, plane) in buf.iter_planes().enumerate() {
        check.integer_plane(plane.len());
        scratch.clear();
        scratch.extend(plane.iter().map(|&s| s.into_sample()));
        sink.push_plane(c, scratch);
    }
    sink.end_block(buf.frames());
}
