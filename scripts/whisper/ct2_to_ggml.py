#!/usr/bin/env python3
"""Convert a Whisper model from CTranslate2 format to a whisper.cpp ggml file.

Usage: ct2_to_ggml.py MODEL_DIR OUT_FILE [f16|q8_0|q5_1]

MODEL_DIR holds CTranslate2's `model.bin` (binary format version 6, spec `WhisperSpec`) and
`vocabulary.txt` (one GPT-2 byte-level token per line). Needs Python 3.11 and numpy only.

Why a converter: the only Whisper weights reachable from this project's machines come from a
PyPI wheel in CTranslate2 format, while whisper.cpp (through whisper-rs) reads ggml.

Layout written, as whisper.cpp's `whisper_model_load` reads it (all little-endian):
  magic u32 0x67676d6c ("ggml"), 11 x i32 hparams, mel filters (i32 n_mel, i32 n_fft,
  f32 data), vocabulary (i32 count, then u32 length + bytes per token), then tensors:
  i32 n_dims, i32 name length, i32 type (0 = f32, 1 = f16), i32 dims (innermost first),
  name bytes, data. whisper.cpp looks tensors up by name, so their order is free, but it
  checks each tensor's type and shape against what it allocated.

Weight types (the last argument, default f16): `q8_0` and `q5_1` store the big matrices (every
2-D weight and the token embedding) in ggml's 32-value blocks, as whisper.cpp's own `quantize`
tool writes them; the conv kernels stay f16 and biases, norms and positional embeddings f32,
which is what whisper.cpp's loader allocates for a quantised model. q8_0 halves the weights
that every encoder and decoder step reads, which is most of the CPU time on a tiny model.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

GGML_MAGIC = 0x67676D6C
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8
# Values of ggml_type that may appear in a tensor header below.
GGML_BLOCK_TYPES = (GGML_TYPE_Q5_1, GGML_TYPE_Q8_0)
# Values per block for both block encodings.
QK = 32
# hparams.ftype: the type of the big weight matrices (ggml_ftype); 1 = all f16. Quantised
# types are stored as ftype + GGML_QNT_VERSION * 1000, which whisper.cpp splits again.
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000
# Weight type name → (ggml_type of the big matrices, hparams.ftype as stored).
WEIGHT_TYPES = {
    "f16": (GGML_TYPE_F16, 1),
    "q8_0": (GGML_TYPE_Q8_0, 7 + GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR),
    "q5_1": (GGML_TYPE_Q5_1, 9 + GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR),
}

CT2_SUPPORTED_VERSION = 6
# CTranslate2's DataType enum, in its on-disk numbering.
CT2_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: "bfloat16",  # numpy has no bfloat16: widened to f32 on read
}


class ConversionError(Exception):
    """The input is not a model this converter understands."""


# ---------------------------------------------------------------------------------------------
# CTranslate2 reader


class Ct2Model:
    """Variables of a CTranslate2 model.bin, aliases resolved."""

    def __init__(self, spec: str, revision: int, variables: dict[str, np.ndarray]):
        self.spec = spec
        self.revision = revision
        self.variables = variables

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise ConversionError(f"model.bin has no variable {name!r}") from None

    def scalar(self, name: str) -> int:
        return int(self[name].reshape(-1)[0])


def _read_exact(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise ConversionError(f"model.bin ends early (wanted {n} bytes, got {len(b)})")
    return b


def _unpack(f: BinaryIO, fmt: str):
    fmt = "<" + fmt
    return struct.unpack(fmt, _read_exact(f, struct.calcsize(fmt)))


def _read_string(f: BinaryIO) -> str:
    # u16 length including a trailing NUL, then the bytes.
    (n,) = _unpack(f, "H")
    raw = _read_exact(f, n)
    if n == 0 or raw[-1] != 0:
        raise ConversionError("malformed string in model.bin")
    return raw[:-1].decode("utf-8")


def read_ct2(f: BinaryIO) -> Ct2Model:
    """Reads CTranslate2's binary model layout (version 6).

    version u32, spec name, spec revision u32, variable count u32, then per variable: name,
    rank u8, dims u32 x rank, dtype u8, byte count u32, data; then alias count u32 and
    (alias, target) name pairs.
    """
    (version,) = _unpack(f, "I")
    if version != CT2_SUPPORTED_VERSION:
        raise ConversionError(
            f"model.bin binary version {version}, this converter reads {CT2_SUPPORTED_VERSION}"
        )
    spec = _read_string(f)
    (revision,) = _unpack(f, "I")
    (count,) = _unpack(f, "I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = _read_string(f)
        (rank,) = _unpack(f, "B")
        shape = _unpack(f, "I" * rank) if rank else ()
        (dtype_id,) = _unpack(f, "B")
        (nbytes,) = _unpack(f, "I")
        data = _read_exact(f, nbytes)
        dtype = CT2_DTYPES.get(dtype_id)
        if dtype is None:
            raise ConversionError(f"{name}: unknown dtype id {dtype_id}")
        if dtype == "bfloat16":
            # bf16 is the top half of an f32.
            arr = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view("<f4")
        else:
            arr = np.frombuffer(data, dtype)
        expected = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if arr.size != expected:
            raise ConversionError(f"{name}: {arr.size} values for shape {shape}")
        variables[name] = arr.reshape(shape)
    (n_aliases,) = _unpack(f, "I")
    for _ in range(n_aliases):
        alias = _read_string(f)
        target = _read_string(f)
        if target not in variables:
            raise ConversionError(f"alias {alias!r} points at missing {target!r}")
        variables[alias] = variables[target]
    return Ct2Model(spec, revision, variables)


# ---------------------------------------------------------------------------------------------
# Mel filter bank (librosa.filters.mel with htk=False, norm="slaney")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, freqs)


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32.

    Same definition as librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) with its
    defaults (fmin 0, fmax sr/2, Slaney mel scale, Slaney area normalisation), which is what
    Whisper was trained with and what whisper.cpp expects in the model file.
    """
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    # float32 throughout, as librosa does: the triangles are rounded to f32 before the
    # normalisation is applied, and matching that keeps the file bit-identical to librosa's.
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each triangle gets unit area in Hz, so wide high bands do not
    # dominate the spectrum.
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, None]
    return weights


# ---------------------------------------------------------------------------------------------
# GPT-2 byte-level vocabulary


def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: maps each printable stand-in character to its byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (control characters,
    space, 0x7f-0xa0, 0xad) are shifted to code points 256 and up, so that every token is a
    printable string (space, 0x20, becomes 'Ġ', U+0120; newline becomes 'Ċ').
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping: dict[str, int] = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + shifted)] = b
            shifted += 1
    return mapping


def token_bytes(token: str, decoder: dict[str, int]) -> bytes:
    """The raw bytes a byte-level token stands for."""
    out = bytearray()
    for ch in token:
        b = decoder.get(ch)
        if b is None:
            # Not produced by the byte-level mapping (never the case for GPT-2 tokens): keep
            # the character itself rather than failing the whole conversion.
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def read_vocabulary(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def text_tokens(tokens: list[str]) -> list[str]:
    """The tokens to store: the text vocabulary up to and including <|endoftext|>.

    whisper.cpp derives the ids of the special tokens (<|startoftranscript|>, languages,
    tasks, timestamps) from n_vocab and names them itself ("[_SOT_]", "[_TT_42]", ...); the
    reference ggml files store only these leading tokens and let the loader add the rest.
    """
    try:
        eot = tokens.index("<|endoftext|>")
    except ValueError:
        raise ConversionError("vocabulary has no <|endoftext|> token") from None
    return tokens[: eot + 1]


# ---------------------------------------------------------------------------------------------
# Tensor mapping


def _count_layers(model: Ct2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    if n == 0:
        raise ConversionError(f"no {prefix} layers in model.bin")
    return n


def _split_rows(a: np.ndarray, parts: int) -> list[np.ndarray]:
    if a.shape[0] % parts:
        raise ConversionError(f"cannot split {a.shape} into {parts} equal parts")
    return np.split(a, parts, axis=0)


def _drop_zero_bias(name: str, bias: np.ndarray) -> None:
    # Whisper's key projections have no bias; CTranslate2 fills zeros into the fused bias.
    # whisper.cpp has nowhere to put one, so a non-zero value would be silently lost.
    if np.any(bias.astype(np.float32) != 0):
        raise ConversionError(f"{name}: key bias is not zero; whisper.cpp cannot represent it")


def _attention(model, src: str, dst: str, fused: str) -> list[tuple[str, np.ndarray, int]]:
    """Maps one attention block; `fused` is "qkv" (self-attention) or "kv" (cross-attention)."""
    out: list[tuple[str, np.ndarray, int]] = []
    if fused == "qkv":
        q_w, k_w, v_w = _split_rows(model[f"{src}/linear_0/weight"], 3)
        q_b, k_b, v_b = _split_rows(model[f"{src}/linear_0/bias"], 3)
        out_w, out_b = model[f"{src}/linear_1/weight"], model[f"{src}/linear_1/bias"]
    else:
        q_w, q_b = model[f"{src}/linear_0/weight"], model[f"{src}/linear_0/bias"]
        k_w, v_w = _split_rows(model[f"{src}/linear_1/weight"], 2)
        k_b, v_b = _split_rows(model[f"{src}/linear_1/bias"], 2)
        out_w, out_b = model[f"{src}/linear_2/weight"], model[f"{src}/linear_2/bias"]
    _drop_zero_bias(f"{src} key", k_b)
    out += [
        (f"{dst}.query.weight", q_w, GGML_TYPE_F16),
        (f"{dst}.query.bias", q_b, GGML_TYPE_F32),
        (f"{dst}.key.weight", k_w, GGML_TYPE_F16),
        (f"{dst}.value.weight", v_w, GGML_TYPE_F16),
        (f"{dst}.value.bias", v_b, GGML_TYPE_F32),
        (f"{dst}.out.weight", out_w, GGML_TYPE_F16),
        (f"{dst}.out.bias", out_b, GGML_TYPE_F32),
    ]
    return out


def _norm(model, src: str, dst: str) -> list[tuple[str, np.ndarray, int]]:
    return [
        (f"{dst}.weight", model[f"{src}/gamma"], GGML_TYPE_F32),
        (f"{dst}.bias", model[f"{src}/beta"], GGML_TYPE_F32),
    ]


def _mlp(model, src: str, dst: str) -> list[tuple[str, np.ndarray, int]]:
    return _norm(model, f"{src}/layer_norm", f"{dst}.mlp_ln") + [
        (f"{dst}.mlp.0.weight", model[f"{src}/linear_0/weight"], GGML_TYPE_F16),
        (f"{dst}.mlp.0.bias", model[f"{src}/linear_0/bias"], GGML_TYPE_F32),
        (f"{dst}.mlp.2.weight", model[f"{src}/linear_1/weight"], GGML_TYPE_F16),
        (f"{dst}.mlp.2.bias", model[f"{src}/linear_1/bias"], GGML_TYPE_F32),
    ]


def whisper_tensors(model: Ct2Model) -> list[tuple[str, np.ndarray, int]]:
    """(whisper.cpp name, array in numpy/PyTorch layout, ggml type) for every tensor.

    Types follow whisper.cpp's loader for an f16 model: 2-D weights, the token embedding and
    the conv kernels f16; biases, norms and both positional embeddings f32. Conv biases are
    2-D (n_state, 1) there.
    """
    t: list[tuple[str, np.ndarray, int]] = []
    t += [
        ("encoder.positional_embedding", model["encoder/position_encodings/encodings"], GGML_TYPE_F32),
        ("encoder.conv1.weight", model["encoder/conv1/weight"], GGML_TYPE_F16),
        ("encoder.conv1.bias", model["encoder/conv1/bias"].reshape(-1, 1), GGML_TYPE_F32),
        ("encoder.conv2.weight", model["encoder/conv2/weight"], GGML_TYPE_F16),
        ("encoder.conv2.bias", model["encoder/conv2/bias"].reshape(-1, 1), GGML_TYPE_F32),
    ]
    t += _norm(model, "encoder/layer_norm", "encoder.ln_post")
    for i in range(_count_layers(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        t += _norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        t += _attention(model, f"{src}/self_attention", f"{dst}.attn", "qkv")
        t += _mlp(model, f"{src}/ffn", dst)
    t += [
        ("decoder.positional_embedding", model["decoder/position_encodings/encodings"], GGML_TYPE_F32),
        ("decoder.token_embedding.weight", model["decoder/embeddings/weight"], GGML_TYPE_F16),
    ]
    t += _norm(model, "decoder/layer_norm", "decoder.ln")
    for i in range(_count_layers(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        t += _norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        t += _attention(model, f"{src}/self_attention", f"{dst}.attn", "qkv")
        t += _norm(model, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        t += _attention(model, f"{src}/attention", f"{dst}.cross_attn", "kv")
        t += _mlp(model, f"{src}/ffn", dst)
    return t


def hparams(model: Ct2Model, weight_type: str = "f16") -> list[int]:
    """whisper.cpp's hparams, in file order, derived from the tensors themselves."""
    n_vocab, n_text_state = model["decoder/embeddings/weight"].shape
    n_audio_ctx, n_audio_state = model["encoder/position_encodings/encodings"].shape
    n_text_ctx = model["decoder/position_encodings/encodings"].shape[0]
    n_mels = model["encoder/conv1/weight"].shape[1]
    return [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        model.scalar("encoder/num_heads"),
        _count_layers(model, "encoder"),
        n_text_ctx,
        n_text_state,
        model.scalar("decoder/num_heads"),
        _count_layers(model, "decoder"),
        n_mels,
        WEIGHT_TYPES[weight_type][1],
    ]


# ---------------------------------------------------------------------------------------------
# ggml block encodings (ggml-quants.c's reference quantisers, vectorised)


def _blocks(array: np.ndarray) -> np.ndarray:
    """The values as f32 rows of QK; ggml blocks run along the innermost dimension."""
    x = np.ascontiguousarray(array, dtype="<f4")
    if x.shape[-1] % QK:
        raise ConversionError(f"rows of {x.shape[-1]} values do not split into blocks of {QK}")
    return x.reshape(-1, QK)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    # C's roundf, which ggml uses; numpy's round goes half to even.
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_q8_0(array: np.ndarray) -> bytes:
    """block_q8_0 per 32 values: f16 scale d = max|x| / 127, then 32 x int8 round(x / d)."""
    x = _blocks(array)
    d = np.abs(x).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = _round_half_away(x * inv[:, None]).astype(np.int8)
    out = np.empty(len(x), dtype=[("d", "<f2"), ("qs", "i1", QK)])
    out["d"], out["qs"] = d.astype("<f2"), q
    return out.tobytes()


def quantize_q5_1(array: np.ndarray) -> bytes:
    """block_q5_1 per 32 values: f16 step d = (max - min) / 31 and f16 min m, then the 5-bit
    codes round((x - m) / d): their fifth bits packed into a u32 (bit j for value j), their low
    four bits two per byte (value j low nibble, value j + 16 high nibble)."""
    x = _blocks(array)
    lo, hi = x.min(axis=1), x.max(axis=1)
    d = (hi - lo) / 31.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    # (uint8_t)(v + 0.5f) in C: truncation of a non-negative value.
    q = np.floor((x - lo[:, None]) * inv[:, None] + 0.5).astype(np.uint32)
    qs = ((q[:, : QK // 2] & 0x0F) | ((q[:, QK // 2 :] & 0x0F) << 4)).astype(np.uint8)
    qh = (((q >> 4) & 1) << np.arange(QK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    out = np.empty(len(x), dtype=[("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)])
    out["d"], out["m"], out["qh"], out["qs"] = d.astype("<f2"), lo.astype("<f2"), qh, qs
    return out.tobytes()


def dequantize(data: bytes, ggml_type: int) -> np.ndarray:
    """Values of a block-encoded tensor, flat (for tests and checks)."""
    if ggml_type == GGML_TYPE_Q8_0:
        b = np.frombuffer(data, dtype=[("d", "<f2"), ("qs", "i1", QK)])
        return (b["d"].astype(np.float32)[:, None] * b["qs"]).reshape(-1)
    if ggml_type == GGML_TYPE_Q5_1:
        b = np.frombuffer(data, dtype=[("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)])
        low = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1).astype(np.uint32)
        high = (b["qh"][:, None] >> np.arange(QK, dtype=np.uint32)) & 1
        q = (low | (high << 4)).astype(np.float32)
        return (b["d"].astype(np.float32)[:, None] * q + b["m"].astype(np.float32)[:, None]).reshape(-1)
    raise ValueError(f"ggml type {ggml_type} is not a block encoding")


# ---------------------------------------------------------------------------------------------
# ggml writer


def _encode(array: np.ndarray, ggml_type: int) -> bytes:
    if ggml_type == GGML_TYPE_Q8_0:
        return quantize_q8_0(array)
    if ggml_type == GGML_TYPE_Q5_1:
        return quantize_q5_1(array)
    return np.ascontiguousarray(array, dtype="<f2" if ggml_type == GGML_TYPE_F16 else "<f4").tobytes()


def _write_tensor(out: BinaryIO, name: str, array: np.ndarray, ggml_type: int) -> None:
    encoded = name.encode("utf-8")
    # ggml lists dimensions innermost first: the reverse of numpy's C-order shape.
    dims = list(reversed(array.shape))
    out.write(struct.pack("<iii", len(dims), len(encoded), ggml_type))
    out.write(struct.pack(f"<{len(dims)}i", *dims))
    out.write(encoded)
    out.write(_encode(array, ggml_type))


def _weight_type(name: str, array: np.ndarray, ggml_type: int, weight_type: int) -> int:
    """The type a tensor is stored in for a model of `weight_type`: whisper.cpp allocates its
    2-D matrices in the model's weight type and keeps conv kernels f16 (they are 3-D)."""
    if ggml_type == GGML_TYPE_F16 and array.ndim == 2:
        return weight_type
    return ggml_type


def write_ggml(out: BinaryIO, model: Ct2Model, vocabulary: list[str], weight_type: str = "f16") -> int:
    """Writes the ggml file with its big matrices in `weight_type` (a key of WEIGHT_TYPES);
    returns the number of tensors written."""
    if model.spec != "WhisperSpec":
        raise ConversionError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    if weight_type not in WEIGHT_TYPES:
        raise ConversionError(f"weight type {weight_type!r}, expected one of {', '.join(WEIGHT_TYPES)}")
    matrix_type = WEIGHT_TYPES[weight_type][0]
    hp = hparams(model, weight_type)
    n_mels = hp[9]
    out.write(struct.pack("<I", GGML_MAGIC))
    out.write(struct.pack("<11i", *hp))

    filters = mel_filters(16000, 400, n_mels)
    out.write(struct.pack("<ii", *filters.shape))
    out.write(filters.astype("<f4").tobytes())

    tokens = text_tokens(vocabulary)
    decoder = byte_decoder()
    out.write(struct.pack("<i", len(tokens)))
    for tok in tokens:
        raw = token_bytes(tok, decoder)
        out.write(struct.pack("<I", len(raw)))
        out.write(raw)

    tensors = whisper_tensors(model)
    for name, array, ggml_type in tensors:
        _write_tensor(out, name, array, _weight_type(name, array, ggml_type, matrix_type))
    return len(tensors)


def convert(model_dir: Path, out_path: Path, weight_type: str = "f16") -> int:
    with open(model_dir / "model.bin", "rb") as f:
        model = read_ct2(f)
    vocabulary = read_vocabulary(model_dir / "vocabulary.txt")
    with open(out_path, "wb") as out:
        return write_ggml(out, model, vocabulary, weight_type)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model_dir, out_path = Path(argv[1]), Path(argv[2])
    weight_type = argv[3] if len(argv) == 4 else "f16"
    try:
        n = convert(model_dir, out_path, weight_type)
    except (ConversionError, OSError) as e:
        print(f"ct2_to_ggml: {e}", file=sys.stderr)
        return 1
    print(f"ct2_to_ggml: wrote {n} tensors, {os.path.getsize(out_path)} bytes to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
