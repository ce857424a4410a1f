//! Recording format identification from the first bytes of a file.
//!
//! The service trusts neither the URL's extension nor the `Content-Type` a partner's server
//! sends, so the format is decided from magic numbers alone. Only formats this crate can
//! demux and decode are recognised; everything else is `None` and becomes a permanent
//! "unsupported format" failure upstream.

/// A container/codec combination this crate can analyse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFormat {
    /// MPEG-1/2/2.5 Layer III, optionally behind an ID3v2 tag.
    Mp3,
    /// RIFF/WAVE (PCM or ADPCM).
    Wav,
    /// Raw AAC in an ADTS stream.
    Aac,
    /// ISO-BMFF (MP4) whose major brand says audio-only Apple/iTunes audio (`M4A ` / `M4B `).
    M4a,
    /// Any other ISO-BMFF file (`ftyp` box); its first audio track is analysed.
    Mp4,
}

impl RecordingFormat {
    /// Lower-case short name, as stored in events and shown to partners.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordingFormat::Mp3 => "mp3",
            RecordingFormat::Wav => "wav",
            RecordingFormat::Aac => "aac",
            RecordingFormat::M4a => "m4a",
            RecordingFormat::Mp4 => "mp4",
        }
    }
}

impl std::fmt::Display for RecordingFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies the recording format from the first bytes of a file.
///
/// The caller passes up to the first 64 bytes; shorter input is accepted and judged on what is
/// there (a 2-byte frame sync is enough for MP3/ADTS, 12 bytes are needed for WAV and MP4).
///
/// Rules, in order:
/// - `RIFF` at 0 and `WAVE` at 8 → [`RecordingFormat::Wav`];
/// - `ftyp` at 4 → [`RecordingFormat::M4a`] if the major brand (bytes 8..12) is `M4A ` or
///   `M4B `, else [`RecordingFormat::Mp4`];
/// - `ID3` at 0 → [`RecordingFormat::Mp3`];
/// - a 12-bit `0xFFF` sync with layer bits `00` → [`RecordingFormat::Aac`] (ADTS);
/// - an 11-bit `0xFFE` sync with layer bits `01` (Layer III) and a valid version →
///   [`RecordingFormat::Mp3`].
///
/// The ADTS test comes before the MPEG test because an ADTS header also starts with 11 set
/// bits; the layer field tells them apart (ADTS always `00`, which MPEG audio reserves).
pub fn identify(header: &[u8]) -> Option<RecordingFormat> {
    if header.len() >= 12 && &header[0..4] == b"RIFF" && &header[8..12] == b"WAVE" {
        return Some(RecordingFormat::Wav);
    }
    if header.len() >= 12 && &header[4..8] == b"ftyp" {
        return match &header[8..12] {
            b"M4A " | b"M4B " => Some(RecordingFormat::M4a),
            _ => Some(RecordingFormat::Mp4),
        };
    }
    if header.starts_with(b"ID3") {
        return Some(RecordingFormat::Mp3);
    }
    if is_adts(header) {
        return Some(RecordingFormat::Aac);
    }
    if is_mpeg_layer3(header) {
        return Some(RecordingFormat::Mp3);
    }
    None
}

/// ADTS: `syncword(12) = 0xFFF, id(1), layer(2) = 00, protection_absent(1)`, then the
/// sampling-frequency index (4 bits of byte 2), of which 13..15 are reserved.
fn is_adts(h: &[u8]) -> bool {
    if h.len() < 2 || h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
        return false;
    }
    match h.get(2) {
        Some(b) => (b >> 2) & 0x0F < 13,
        None => true,
    }
}

/// MPEG audio frame header: `sync(11), version(2), layer(2), protection(1)`, then
/// `bitrate_index(4), sample_rate_index(2), …`. Version `01` is reserved, layer `01` is Layer III;
/// bitrate index `1111` and sample-rate index `11` are invalid, which rejects most random data
/// that happens to start with `0xFF`.
fn is_mpeg_layer3(h: &[u8]) -> bool {
    if h.len() < 2 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return false;
    }
    let version = (h[1] >> 3) & 0b11;
    let layer = (h[1] >> 1) & 0b11;
    if version == 0b01 || layer != 0b01 {
        return false;
    }
    match h.get(2) {
        Some(b) => (b >> 4) != 0x0F && ((b >> 2) & 0b11) != 0b11,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(64, 0);
        v
    }

    #[test]
    fn riff_wave_is_wav() {
        assert_eq!(
            identify(&padded(b"RIFF\x24\x08\0\0WAVEfmt ")),
            Some(RecordingFormat::Wav)
        );
    }

    #[test]
    fn riff_that_is_not_wave_is_unknown() {
        assert_eq!(identify(&padded(b"RIFF\x24\x08\0\0AVI LIST")), None);
    }

    #[test]
    fn ftyp_with_m4a_or_m4b_brand_is_m4a() {
        assert_eq!(
            identify(&padded(b"\0\0\0\x1cftypM4A \0\0\x02\0")),
            Some(RecordingFormat::M4a)
        );
        assert_eq!(
            identify(&padded(b"\0\0\0\x1cftypM4B \0\0\x02\0")),
            Some(RecordingFormat::M4a)
        );
    }

    #[test]
    fn ftyp_with_any_other_brand_is_mp4() {
        for brand in [b"isom", b"mp42", b"3gp4", b"qt  "] {
            let mut h = b"\0\0\0\x20ftyp".to_vec();
            h.extend_from_slice(brand);
            assert_eq!(
                identify(&padded(&h)),
                Some(RecordingFormat::Mp4),
                "{brand:?}"
            );
        }
    }

    #[test]
    fn id3_tag_is_mp3() {
        assert_eq!(
            identify(b"ID3\x04\0\0\0\0\0\x23"),
            Some(RecordingFormat::Mp3)
        );
    }

    #[test]
    fn mpeg1_layer3_frame_sync_is_mp3() {
        // MPEG-1 Layer III, no CRC, 128 kbit/s, 44.1 kHz.
        assert_eq!(
            identify(&padded(&[0xFF, 0xFB, 0x90, 0x64])),
            Some(RecordingFormat::Mp3)
        );
        // MPEG-2 Layer III (16 kHz) and MPEG-2.5 Layer III (8 kHz).
        assert_eq!(
            identify(&padded(&[0xFF, 0xF3, 0x48, 0xC4])),
            Some(RecordingFormat::Mp3)
        );
        assert_eq!(
            identify(&padded(&[0xFF, 0xE3, 0x28, 0xC4])),
            Some(RecordingFormat::Mp3)
        );
    }

    #[test]
    fn adts_sync_is_aac_not_mp3() {
        // MPEG-4 ADTS (id 0) and MPEG-2 ADTS (id 1), no CRC, 16 kHz.
        assert_eq!(
            identify(&padded(&[0xFF, 0xF1, 0x60, 0x80])),
            Some(RecordingFormat::Aac)
        );
        assert_eq!(
            identify(&padded(&[0xFF, 0xF9, 0x60, 0x80])),
            Some(RecordingFormat::Aac)
        );
        // With CRC (protection_absent = 0).
        assert_eq!(
            identify(&padded(&[0xFF, 0xF0, 0x50, 0x80])),
            Some(RecordingFormat::Aac)
        );
    }

    #[test]
    fn other_mpeg_layers_and_reserved_fields_are_unknown() {
        // Layer II and Layer I.
        assert_eq!(identify(&padded(&[0xFF, 0xFD, 0x90, 0x64])), None);
        assert_eq!(identify(&padded(&[0xFF, 0xFF, 0x90, 0x64])), None);
        // Reserved version bits.
        assert_eq!(identify(&padded(&[0xFF, 0xEB, 0x90, 0x64])), None);
        // Bad bitrate index, reserved sample-rate index.
        assert_eq!(identify(&padded(&[0xFF, 0xFB, 0xF0, 0x64])), None);
        assert_eq!(identify(&padded(&[0xFF, 0xFB, 0x9C, 0x64])), None);
        // Reserved ADTS sampling-frequency index.
        assert_eq!(identify(&padded(&[0xFF, 0xF1, 0x3C, 0x80])), None);
    }

    #[test]
    fn pdf_and_other_junk_are_unknown() {
        assert_eq!(identify(&padded(b"%PDF-1.4\n%\xe2\xe3")), None);
        assert_eq!(identify(&padded(b"<html><body>")), None);
        assert_eq!(identify(&padded(b"OggS\0\x02")), None);
        assert_eq!(identify(&padded(b"fLaC\0\0\0\x22")), None);
    }

    #[test]
    fn short_and_empty_input_is_judged_on_what_is_there() {
        assert_eq!(identify(b""), None);
        assert_eq!(identify(b"\xFF"), None);
        assert_eq!(identify(b"ID3"), Some(RecordingFormat::Mp3));
        assert_eq!(identify(&[0xFF, 0xFB]), Some(RecordingFormat::Mp3));
        assert_eq!(identify(&[0xFF, 0xF1]), Some(RecordingFormat::Aac));
        // Too short to see "WAVE" or a brand.
        assert_eq!(identify(b"RIFF\0\0\0\0WAV"), None);
        assert_eq!(identify(b"\0\0\0\x1cftyp"), None);
    }

    #[test]
    fn as_str_names_are_stable() {
        let all = [
            (RecordingFormat::Mp3, "mp3"),
            (RecordingFormat::Wav, "wav"),
            (RecordingFormat::Aac, "aac"),
            (RecordingFormat::M4a, "m4a"),
            (RecordingFormat::Mp4, "mp4"),
        ];
        for (f, s) in all {
            assert_eq!(f.as_str(), s);
        }
    }
}
