"""Unit tests for ct2_to_ggml.py (stdlib unittest + numpy).

Run: python3 -m unittest discover -s scripts/whisper -v
"""

import io
import struct
import unittest

import numpy as np

import ct2_to_ggml as conv


# ---------------------------------------------------------------------------------------------
# A minimal CTranslate2 writer (the layout the converter reads), for synthetic models.

DTYPE_IDS = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3, np.dtype("<f2"): 4}


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(variables: dict, aliases: dict | None = None, spec="WhisperSpec", version=6) -> bytes:
    out = bytearray(struct.pack("<I", version))
    out += _string(spec) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        if isinstance(value, tuple) and value[0] == "bf16":
            arr, dtype_id = value[1], 5
            data = (np.asarray(arr, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
            shape = arr.shape
        else:
            arr = np.asarray(value)
            dtype_id, data, shape = DTYPE_IDS[arr.dtype.newbyteorder("<")], arr.tobytes(), arr.shape
        out += _string(name) + struct.pack("<B", len(shape))
        out += struct.pack(f"<{len(shape)}I", *shape)
        out += struct.pack("<BI", dtype_id, len(data)) + data
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    return bytes(out)


def synthetic_whisper(state=8, heads=2, enc_layers=1, dec_layers=2, n_mels=80, vocab=12,
                      audio_ctx=6, text_ctx=5, seed=0):
    """Random weights with Whisper's CTranslate2 names and shapes, f16 like the real model."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.standard_normal(shape).astype("<f2")

    def self_attention(prefix):
        qkv_bias = w(3 * state)
        # Whisper's key projection has no bias: CTranslate2 stores zeros in its slot.
        qkv_bias[state : 2 * state] = 0
        return {
            f"{prefix}/layer_norm/gamma": w(state),
            f"{prefix}/layer_norm/beta": w(state),
            f"{prefix}/linear_0/weight": w(3 * state, state),
            f"{prefix}/linear_0/bias": qkv_bias,
            f"{prefix}/linear_1/weight": w(state, state),
            f"{prefix}/linear_1/bias": w(state),
        }

    def ffn(prefix):
        return {
            f"{prefix}/layer_norm/gamma": w(state),
            f"{prefix}/layer_norm/beta": w(state),
            f"{prefix}/linear_0/weight": w(4 * state, state),
            f"{prefix}/linear_0/bias": w(4 * state),
            f"{prefix}/linear_1/weight": w(state, 4 * state),
            f"{prefix}/linear_1/bias": w(state),
        }

    v = {
        "encoder/num_heads": np.array(heads, "<i2"),
        "decoder/num_heads": np.array(heads, "<i2"),
        "encoder/conv1/weight": w(state, n_mels, 3),
        "encoder/conv1/bias": w(state),
        "encoder/conv2/weight": w(state, state, 3),
        "encoder/conv2/bias": w(state),
        "encoder/position_encodings/encodings": w(audio_ctx, state),
        "encoder/layer_norm/gamma": w(state),
        "encoder/layer_norm/beta": w(state),
        "decoder/embeddings/weight": w(vocab, state),
        "decoder/position_encodings/encodings": w(text_ctx, state),
        "decoder/layer_norm/gamma": w(state),
        "decoder/layer_norm/beta": w(state),
    }
    for i in range(enc_layers):
        v.update(self_attention(f"encoder/layer_{i}/self_attention"))
        v.update(ffn(f"encoder/layer_{i}/ffn"))
    for i in range(dec_layers):
        v.update(self_attention(f"decoder/layer_{i}/self_attention"))
        cross = f"decoder/layer_{i}/attention"
        v.update({
            f"{cross}/layer_norm/gamma": w(state),
            f"{cross}/layer_norm/beta": w(state),
            f"{cross}/linear_0/weight": w(state, state),
            f"{cross}/linear_0/bias": w(state),
            f"{cross}/linear_1/weight": w(2 * state, state),
            f"{cross}/linear_1/bias": np.concatenate([np.zeros(state, "<f2"), w(state)]),
            f"{cross}/linear_2/weight": w(state, state),
            f"{cross}/linear_2/bias": w(state),
        })
        v.update(ffn(f"decoder/layer_{i}/ffn"))
    return v


def read_ggml(data: bytes):
    """Parses a whisper.cpp ggml file the way whisper_model_load does."""
    f = io.BytesIO(data)

    def u(fmt):
        fmt = "<" + fmt
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

    (magic,) = u("I")
    hp = u("11i")
    n_mel, n_fft = u("ii")
    filters = np.frombuffer(f.read(4 * n_mel * n_fft), "<f4").reshape(n_mel, n_fft)
    (n_vocab,) = u("i")
    tokens = []
    for _ in range(n_vocab):
        (n,) = u("I")
        tokens.append(f.read(n))
    tensors = {}
    while True:
        head = f.read(12)
        if not head:
            break
        n_dims, name_len, ttype = struct.unpack("<iii", head)
        dims = u(f"{n_dims}i")
        name = f.read(name_len).decode()
        count = int(np.prod(dims))
        if ttype in conv.GGML_BLOCK_TYPES:
            # ggml_type_size per block of 32 values: q8_0 34 bytes, q5_1 24.
            block = {conv.GGML_TYPE_Q8_0: 34, conv.GGML_TYPE_Q5_1: 24}[ttype]
            arr = conv.dequantize(f.read(count // 32 * block), ttype)
        else:
            dtype = "<f2" if ttype == 1 else "<f4"
            arr = np.frombuffer(f.read(count * np.dtype(dtype).itemsize), dtype)
        tensors[name] = (ttype, dims, arr.reshape(tuple(reversed(dims))))
    if f.read(1):
        raise AssertionError("bytes left after the last tensor")
    return magic, hp, filters, tokens, tensors


# ---------------------------------------------------------------------------------------------


class BlockEncodingTest(unittest.TestCase):
    """The byte layouts of ggml-common.h and the rounding of ggml-quants.c's reference code."""

    def test_q8_0_block_is_an_f16_scale_and_32_rounded_int8(self):
        x = np.arange(32, dtype=np.float32) - 15.5  # -15.5 .. 15.5
        data = conv.quantize_q8_0(x)
        self.assertEqual(len(data), 34)
        d = np.frombuffer(data[:2], "<f2")[0]
        self.assertEqual(d, np.float16(15.5 / 127))
        qs = np.frombuffer(data[2:], "i1")
        # C's roundf: x / d = +-127 at the ends; halves round away from zero.
        self.assertEqual(qs[0], -127)
        self.assertEqual(qs[-1], 127)
        expected = np.sign(x) * np.floor(np.abs(x * np.float32(127 / 15.5)) + 0.5)
        np.testing.assert_array_equal(qs, expected.astype(np.int8))
        np.testing.assert_allclose(conv.dequantize(data, conv.GGML_TYPE_Q8_0), x, atol=0.07)

    def test_q8_0_of_zeros_decodes_to_zeros(self):
        data = conv.quantize_q8_0(np.zeros(64, np.float32))
        np.testing.assert_array_equal(conv.dequantize(data, conv.GGML_TYPE_Q8_0), np.zeros(64))

    def test_q5_1_packs_low_nibbles_in_pairs_and_fifth_bits_in_a_word(self):
        # Codes 0..31 exactly: min 0, step 1.
        x = np.arange(32, dtype=np.float32)
        data = conv.quantize_q5_1(x)
        self.assertEqual(len(data), 24)
        d, m = np.frombuffer(data[:4], "<f2")
        self.assertEqual((d, m), (1.0, 0.0))
        (qh,) = struct.unpack("<I", data[4:8])
        # Values 16..31 have the fifth bit set: bits 16..31 of qh.
        self.assertEqual(qh, 0xFFFF0000)
        qs = np.frombuffer(data[8:], "u1")
        # Byte j: value j in the low nibble, value j + 16 in the high one.
        np.testing.assert_array_equal(qs, [j | (j << 4) for j in range(16)])
        np.testing.assert_array_equal(conv.dequantize(data, conv.GGML_TYPE_Q5_1), x)

    def test_q5_1_round_trip_stays_within_half_a_step(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal(32 * 50).astype(np.float32)
        back = conv.dequantize(conv.quantize_q5_1(x), conv.GGML_TYPE_Q5_1)
        blocks = x.reshape(-1, 32)
        step = (blocks.max(axis=1) - blocks.min(axis=1)) / 31
        err = np.abs(back - x).reshape(-1, 32).max(axis=1)
        # Half a step, plus the f16 rounding of min and step.
        self.assertTrue(np.all(err <= step * 0.5 + np.abs(blocks).max(axis=1) * 2e-3))


class MelFilterTest(unittest.TestCase):
    def setUp(self):
        self.f = conv.mel_filters(16000, 400, 80)

    def test_shape_and_type_match_whisper(self):
        self.assertEqual(self.f.shape, (80, 201))
        self.assertEqual(self.f.dtype, np.float32)
        self.assertTrue(np.all(self.f >= 0))

    def test_values_match_librosa(self):
        # From librosa 0.11: librosa.filters.mel(sr=16000, n_fft=400, n_mels=80). The converter
        # matched it bit for bit when checked; a tolerance keeps the test portable across numpy
        # builds whose log/exp differ in the last bit.
        expected = {
            0: {1: 0.02486259490251541},
            1: {1: 0.001990821911022067, 2: 0.022871771827340126},
            40: {42: 0.005411104764789343, 43: 0.014735566452145576, 44: 0.006518189795315266},
            79: {186: 0.000366741674952209, 192: 0.0031647118739783764, 199: 0.0004487590049393475},
        }
        for row, cols in expected.items():
            self.assertEqual(np.flatnonzero(self.f[row]).min(), min(cols), row)
            for col, value in cols.items():
                self.assertAlmostEqual(float(self.f[row, col]), value, delta=1e-8, msg=(row, col))
        self.assertEqual(np.count_nonzero(self.f[79]), 14)
        self.assertAlmostEqual(float(self.f.sum()), 1.9990241527557373, delta=1e-5)

    def test_slaney_scale_is_linear_below_1khz_and_log_above(self):
        self.assertAlmostEqual(float(conv._hz_to_mel(1000.0)), 15.0)
        self.assertAlmostEqual(float(conv._hz_to_mel(200.0)), 3.0)
        self.assertAlmostEqual(float(conv._hz_to_mel(6400.0)), 15.0 + 27.0)
        hz = np.array([0.0, 150.0, 999.0, 1000.0, 4321.0, 8000.0])
        np.testing.assert_allclose(conv._mel_to_hz(conv._hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)

    def test_each_filter_is_one_triangle_moving_up_in_frequency(self):
        peaks = self.f.argmax(axis=1)
        self.assertTrue(np.all(np.diff(peaks) >= 0))
        self.assertGreater(peaks[-1], 190)
        for row in self.f:
            nonzero = np.flatnonzero(row)
            self.assertTrue(len(nonzero) > 0)
            # Contiguous support, rising then falling.
            self.assertEqual(nonzero[-1] - nonzero[0] + 1, len(nonzero))
            top = row.argmax()
            self.assertTrue(np.all(np.diff(row[nonzero[0] : top + 1]) >= 0))
            self.assertTrue(np.all(np.diff(row[top : nonzero[-1] + 1]) <= 0))

    def test_slaney_norm_gives_each_triangle_unit_area_in_hz(self):
        # Bins are 40 Hz apart: only the wide upper triangles are sampled finely enough to
        # integrate closely; narrow low ones land on few bins.
        bin_hz = 16000 / 400
        areas = self.f.sum(axis=1) * bin_hz
        np.testing.assert_allclose(areas[50:], 1.0, rtol=0.03)
        np.testing.assert_allclose(areas[20:], 1.0, rtol=0.15)
        # Heights fall as bands widen: 2 / (right edge - left edge).
        self.assertGreater(self.f[10].max(), self.f[70].max() * 3)


class VocabularyTest(unittest.TestCase):
    def setUp(self):
        self.dec = conv.byte_decoder()

    def test_byte_decoder_covers_every_byte_once(self):
        self.assertEqual(len(self.dec), 256)
        self.assertEqual(sorted(self.dec.values()), list(range(256)))

    def test_space_and_newline_stand_ins(self):
        self.assertEqual(conv.token_bytes("Ġthe", self.dec), b" the")
        self.assertEqual(conv.token_bytes("Ġ", self.dec), b" ")
        self.assertEqual(conv.token_bytes("ĊĊ", self.dec), b"\n\n")
        self.assertEqual(conv.token_bytes("hello", self.dec), b"hello")

    def test_non_ascii_tokens_become_their_utf8_bytes(self):
        self.assertEqual(conv.token_bytes("Ã©", self.dec), "é".encode())
        self.assertEqual(conv.token_bytes("âĢĻ", self.dec), "’".encode())
        # A lone continuation byte is kept as the raw byte, not re-encoded.
        self.assertEqual(conv.token_bytes("Ģ", self.dec), b"\x80")

    def test_special_tokens_after_endoftext_are_left_to_whisper_cpp(self):
        tokens = ["!", "Ġthe", "<|endoftext|>", "<|startoftranscript|>", "<|0.00|>"]
        self.assertEqual(conv.text_tokens(tokens), tokens[:3])
        with self.assertRaises(conv.ConversionError):
            conv.text_tokens(["a", "b"])


class Ct2ReaderTest(unittest.TestCase):
    def test_round_trip_of_every_dtype_and_an_alias(self):
        rng = np.random.default_rng(1)
        f32 = rng.standard_normal((3, 4)).astype("<f4")
        f16 = rng.standard_normal((5,)).astype("<f2")
        bf16 = np.array([1.0, -2.5, 0.15625], "<f4")  # exactly representable in bf16
        data = write_ct2(
            {
                "a/f32": f32,
                "a/f16": f16,
                "a/i8": np.array([-3, 4], "i1"),
                "a/i16": np.array(6, "<i2"),
                "a/i32": np.arange(6, dtype="<i4").reshape(2, 3),
                "a/bf16": ("bf16", bf16),
            },
            aliases={"b/same": "a/f32"},
            spec="TestSpec",
        )
        m = conv.read_ct2(io.BytesIO(data))
        self.assertEqual((m.spec, m.revision), ("TestSpec", 3))
        np.testing.assert_array_equal(m["a/f32"], f32)
        np.testing.assert_array_equal(m["a/f16"], f16)
        np.testing.assert_array_equal(m["a/i8"], [-3, 4])
        self.assertEqual(m.scalar("a/i16"), 6)
        self.assertEqual(m["a/i32"].shape, (2, 3))
        np.testing.assert_array_equal(m["a/bf16"], bf16)
        np.testing.assert_array_equal(m["b/same"], f32)

    def test_wrong_version_and_truncation_are_reported(self):
        with self.assertRaises(conv.ConversionError):
            conv.read_ct2(io.BytesIO(write_ct2({}, version=5)))
        data = write_ct2({"x": np.zeros((100,), "<f4")})
        with self.assertRaises(conv.ConversionError):
            conv.read_ct2(io.BytesIO(data[:-50]))


class ConversionTest(unittest.TestCase):
    def convert(self, variables, weight_type="f16"):
        model = conv.read_ct2(io.BytesIO(write_ct2(variables)))
        vocab = [f"t{i}" for i in range(9)] + ["<|endoftext|>", "<|startoftranscript|>", "<|en|>"]
        out = io.BytesIO()
        conv.write_ggml(out, model, vocab, weight_type)
        return read_ggml(out.getvalue())

    def test_synthetic_whisper_converts_to_the_layout_whisper_cpp_loads(self):
        v = synthetic_whisper()
        magic, hp, filters, tokens, tensors = self.convert(v)
        self.assertEqual(magic, 0x67676D6C)
        # n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
        # n_text_state, n_text_head, n_text_layer, n_mels, ftype
        self.assertEqual(hp, (12, 6, 8, 2, 1, 5, 8, 2, 2, 80, 1))
        self.assertEqual(filters.shape, (80, 201))
        self.assertEqual(len(tokens), 10)
        self.assertEqual(tokens[-1], b"<|endoftext|>")
        # whisper.cpp allocates 7 + 15 per encoder layer + 4 + 24 per decoder layer tensors.
        self.assertEqual(len(tensors), 7 + 15 * 1 + 4 + 24 * 2)
        self.assertNotIn("encoder.blocks.0.attn.key.bias", tensors)
        self.assertNotIn("decoder.blocks.1.cross_attn.key.bias", tensors)

        for name, (ttype, dims, arr) in tensors.items():
            big = name.endswith(".weight") and arr.ndim >= 2
            self.assertEqual(ttype, 1 if big else 0, name)

        # ggml dims are innermost first.
        self.assertEqual(tensors["encoder.conv1.weight"][1], (3, 80, 8))
        self.assertEqual(tensors["encoder.conv1.bias"][1], (1, 8))
        self.assertEqual(tensors["encoder.positional_embedding"][1], (8, 6))
        self.assertEqual(tensors["decoder.token_embedding.weight"][1], (8, 12))
        self.assertEqual(tensors["decoder.blocks.0.mlp.0.weight"][1], (8, 32))

        fused = v["encoder/layer_0/self_attention/linear_0/weight"]
        np.testing.assert_array_equal(tensors["encoder.blocks.0.attn.query.weight"][2], fused[:8])
        np.testing.assert_array_equal(tensors["encoder.blocks.0.attn.key.weight"][2], fused[8:16])
        np.testing.assert_array_equal(tensors["encoder.blocks.0.attn.value.weight"][2], fused[16:])
        fused_b = v["encoder/layer_0/self_attention/linear_0/bias"].astype("<f4")
        np.testing.assert_array_equal(tensors["encoder.blocks.0.attn.value.bias"][2], fused_b[16:])
        kv = v["decoder/layer_1/attention/linear_1/weight"]
        np.testing.assert_array_equal(tensors["decoder.blocks.1.cross_attn.key.weight"][2], kv[:8])
        np.testing.assert_array_equal(tensors["decoder.blocks.1.cross_attn.value.weight"][2], kv[8:])
        np.testing.assert_array_equal(
            tensors["decoder.blocks.1.cross_attn.out.weight"][2],
            v["decoder/layer_1/attention/linear_2/weight"],
        )
        np.testing.assert_array_equal(
            tensors["decoder.ln.weight"][2], v["decoder/layer_norm/gamma"].astype("<f4")
        )

    def test_quantised_models_block_encode_the_matrices_only(self):
        # Rows must hold whole blocks of 32 values: a 32-wide model.
        v = synthetic_whisper(state=32)
        for weight_type, ttype, ftype, tolerance in [
            ("q8_0", conv.GGML_TYPE_Q8_0, 2007, 1 / 127),
            ("q5_1", conv.GGML_TYPE_Q5_1, 2009, 1 / 31),
        ]:
            with self.subTest(weight_type):
                _, hp, _, _, tensors = self.convert(v, weight_type)
                self.assertEqual(hp[10], ftype)
                for name, (t, dims, arr) in tensors.items():
                    if name.startswith("encoder.conv") and name.endswith(".weight"):
                        self.assertEqual(t, 1, name)  # whisper.cpp keeps conv kernels f16
                    elif name.endswith(".weight") and arr.ndim == 2:
                        self.assertEqual(t, ttype, name)
                    else:
                        self.assertEqual(t, 0, name)
                q = tensors["decoder.blocks.1.mlp.0.weight"][2]
                ref = v["decoder/layer_1/ffn/linear_0/weight"].astype(np.float32)
                self.assertEqual(q.shape, ref.shape)
                # Within one step of the block's scale, plus f16 rounding of the scale.
                span = np.abs(ref).max() * 2
                self.assertLess(np.abs(q - ref).max(), span * tolerance)

    def test_rows_that_do_not_fill_blocks_are_refused(self):
        with self.assertRaises(conv.ConversionError):
            self.convert(synthetic_whisper(state=8), "q8_0")

    def test_unknown_weight_types_are_refused(self):
        with self.assertRaises(conv.ConversionError):
            self.convert(synthetic_whisper(), "q3_k")

    def test_a_non_zero_key_bias_is_refused_rather_than_dropped(self):
        v = synthetic_whisper()
        v["encoder/layer_0/self_attention/linear_0/bias"][9] = 1.0
        with self.assertRaises(conv.ConversionError):
            self.convert(v)

    def test_other_specs_are_refused(self):
        model = conv.read_ct2(io.BytesIO(write_ct2(synthetic_whisper(), spec="TransformerSpec")))
        with self.assertRaises(conv.ConversionError):
            conv.write_ggml(io.BytesIO(), model, ["<|endoftext|>"])


if __name__ == "__main__":
    unittest.main()
