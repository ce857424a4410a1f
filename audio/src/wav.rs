//! Writing WAV files: what the OpenAI engine uploads, and what tests build recordings from
//! (one writer, so every recording a test makes has the header the decoder is tested against).

/// A RIFF/WAVE file of `channels` interleaved in `data` as given, described by a plain `fmt `
/// chunk: `format_tag` 1 for integer PCM, 3 for IEEE float.
pub fn wav(format_tag: u16, channels: u16, sample_rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let mut b = header(format_tag, channels, sample_rate, bits, data.len() as u32);
    b.extend_from_slice(data);
    b
}

/// The 44 bytes of [`wav`] before the samples, for `data_len` bytes of them: for writers that
/// stream the samples after it (a benchmark's two-hour recording).
pub fn header(
    format_tag: u16,
    channels: u16,
    sample_rate: u32,
    bits: u16,
    data_len: u32,
) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let mut b = Vec::with_capacity(44);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format_tag.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    b.extend_from_slice(&block_align.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b
}

/// 16-bit PCM at `sample_rate`, one plane per channel (all of one length), samples clamped to
/// ±1.
pub fn pcm16(sample_rate: u32, planes: &[&[f32]]) -> Vec<u8> {
    let frames = planes.first().map_or(0, |p| p.len());
    assert!(
        planes.iter().all(|p| p.len() == frames),
        "planes of one length"
    );
    let mut data = Vec::with_capacity(frames * planes.len() * 2);
    for i in 0..frames {
        for plane in planes {
            let v = (plane[i].clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    wav(1, planes.len() as u16, sample_rate, 16, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcm16_header_describes_its_samples() {
        let wav = pcm16(16_000, &[&[0.0, 1.0, -1.0]]);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), 36 + 6);
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1);
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(wav[28..32].try_into().unwrap()), 32_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 6);
        assert_eq!(i16::from_le_bytes([wav[46], wav[47]]), i16::MAX);
        assert_eq!(i16::from_le_bytes([wav[48], wav[49]]), -i16::MAX);
    }

    #[test]
    fn stereo_frames_are_interleaved() {
        let wav = pcm16(8_000, &[&[0.25, 0.25], &[-0.25, -0.25]]);
        assert_eq!(u16::from_le_bytes([wav[32], wav[33]]), 4);
        let samples: Vec<i16> = wav[44..]
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(samples, [8192, -8192, 8192, -8192]);
    }
}
