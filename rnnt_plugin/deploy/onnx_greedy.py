"""Greedy RNN-T transcription over onnxruntime: the deployment side of ``examples/export.py``.

Self-contained on purpose: numpy, onnxruntime, sentencepiece and soundfile only (no torch, no NeMo, no other
module of this package). ``examples/export.py`` copies this file into the export directory, so a deployment
needs only that directory and those four packages:

    pip install onnxruntime numpy sentencepiece soundfile
    python OUT_DIR/onnx_greedy.py OUT_DIR a.wav b.flac          # prints "path<TAB>text" per file

    python OUT_DIR/onnx_greedy.py --timestamps OUT_DIR a.wav    # and "word[start-end] ..." under each line

or from Python: ``OnnxTranscriber("OUT_DIR").transcribe(["a.wav"]) -> ["text"]``, and
``.transcribe_with_timestamps(["a.wav"]) -> [{"pred_text", "words": [{"word", "start", "end"}]}]``.

The export directory holds (names below): the featurizer (audio -> log-mel features), the encoder, NeMo's
decoder+joint (one prediction-network step and the joint for one encoder frame), the sentencepiece model and
``deployment.json`` (blank id, decoding limits, sample rate, ...).

Shapes: B batch, A utterances still decoding (A <= B), S samples, F features per 10 ms frame, T feature frames,
D encoder width, T' encoder frames, L prediction-net LSTM layers, H their width, V vocabulary incl. blank.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime
import sentencepiece
import soundfile

DEPLOYMENT_CONFIG = "deployment.json"
PREPROCESSOR = "preprocessor.onnx"
ENCODER = "encoder-model.onnx"
DECODER_JOINT = "decoder_joint-model.onnx"
TOKENIZER = "tokenizer.model"


@dataclasses.dataclass
class DeploymentConfig:
    """What ``deployment.json`` holds; ``examples/export.py`` writes it."""

    model_name: str
    sample_rate: int  # Hz; audio at another rate is refused (resample it first)
    min_samples: int  # shortest audio the featurizer accepts
    subsampling_factor: int  # feature frames per encoder frame (splicing x stack-time: 6)
    blank_id: int  # V - 1, the last joint output
    max_symbols_per_step: int  # symbols emitted on one encoder frame at most (MLPerf: 30)
    max_symbol_per_sample: int  # symbols per utterance at most (MLPerf: 300)
    dither: float  # std of the exported featurizer's dither: a fixed noise sequence, the same every run
    format: str = "onnx"
    window_stride: Optional[float] = None  # seconds per feature frame; exports before word times lack it

    @classmethod
    def load(cls, path: Path) -> "DeploymentConfig":
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is this a directory written by examples/export.py?")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class GreedyDecoder:
    """Batched greedy RNN-T search over NeMo's exported decoder+joint, the rule of NeMo's ``greedy`` strategy.

    Each utterance keeps its own frame index; every step runs the decoder+joint once on the utterances still
    decoding (A of them), each on its current frame. A blank moves that utterance to its next frame and keeps
    its prediction-net state; a symbol is appended and updates the state, and the utterance stays on the frame
    until it has emitted ``max_symbols_per_step`` there. An utterance is done at its last frame, or at the start
    of a frame once it holds more than ``max_symbol_per_sample`` symbols (the MLPerf reference's rule, as the
    PyTorch search's ``rnnt_plugin.core.greedy``: it may end with up to ``max_symbol_per_sample +
    max_symbols_per_step``).
    """

    def __init__(self, session: onnxruntime.InferenceSession, blank_id: int, max_symbols_per_step: int,
                 max_symbol_per_sample: int):
        if max_symbols_per_step < 1 or max_symbol_per_sample < 0:
            raise ValueError(f"max_symbols_per_step ({max_symbols_per_step}) must be >= 1 and max_symbol_per_sample "
                             f"({max_symbol_per_sample}) >= 0")
        inputs = {i.name: i.shape for i in session.get_inputs()}
        layers, _, hidden = inputs["input_states_1"]  # (L, B, H); B is dynamic
        if not (isinstance(layers, int) and isinstance(hidden, int)):
            raise ValueError(f"decoder+joint state shape {inputs['input_states_1']} has no fixed L and H")
        self.session = session
        self.state_shape = (layers, hidden)
        self.blank_id = blank_id
        self.max_symbols_per_step = max_symbols_per_step
        self.max_symbol_per_sample = max_symbol_per_sample

    def __call__(self, encoded: np.ndarray, lengths: np.ndarray) -> List[List[int]]:
        """B lists of token ids (blank excluded) of a batch: ``align`` without the frames."""
        return self.align(encoded, lengths)[0]

    def align(self, encoded: np.ndarray, lengths: np.ndarray) -> Tuple[List[List[int]], List[List[int]]]:
        """Decode a batch.

        Args:
            encoded: (B, D, T') float32 encoder outputs.
            lengths: (B,) valid encoder frames per utterance.

        Returns:
            B lists of token ids (blank excluded), and B lists of the encoder frame each token was emitted on.
        """
        batch = encoded.shape[0]
        layers, hidden = self.state_shape
        h = np.zeros((layers, batch, hidden), np.float32)  # (L, B, H) state after each one's last symbol
        c = np.zeros((layers, batch, hidden), np.float32)
        label = np.full(batch, self.blank_id, np.int32)  # (B,) last symbol; blank embeds to zeros (start)
        frame = np.zeros(batch, np.int64)  # (B,) current encoder frame
        on_frame = np.zeros(batch, np.int64)  # (B,) symbols emitted on the current frame
        total = np.zeros(batch, np.int64)  # (B,) symbols emitted so far
        hyps: List[List[int]] = [[] for _ in range(batch)]
        hyp_frames: List[List[int]] = [[] for _ in range(batch)]
        active = np.flatnonzero(lengths > 0)  # (A,)
        while active.size:
            frames = encoded[active, :, frame[active]][:, :, None]  # (A, D, 1)
            logits, _, h_new, c_new = self.session.run(None, {
                "encoder_outputs": frames,
                "targets": label[active, None],  # (A, 1)
                "target_length": np.ones(active.size, np.int32),
                "input_states_1": h[:, active],
                "input_states_2": c[:, active],
            })
            best = logits.reshape(active.size, -1).argmax(-1)  # (A,) from (A, 1, 1, V)
            emit = best != self.blank_id  # (A,)
            emitters = active[emit]
            if emitters.size:
                label[emitters] = best[emit]
                h[:, emitters] = h_new[:, emit]
                c[:, emitters] = c_new[:, emit]
                on_frame[emitters] += 1
                total[emitters] += 1
                for utterance, token in zip(emitters.tolist(), best[emit].tolist()):
                    hyps[utterance].append(token)
                    hyp_frames[utterance].append(int(frame[utterance]))
            advance = active[~emit | (on_frame[active] >= self.max_symbols_per_step)]
            frame[advance] += 1
            on_frame[advance] = 0
            at_frame_start = on_frame[active] == 0  # just advanced: the per-utterance limit is checked here
            full = at_frame_start & (total[active] > self.max_symbol_per_sample)
            done = (frame[active] >= lengths[active]) | full
            active = active[~done]
        return hyps, hyp_frames


def format_words(words: List[dict]) -> str:
    """``word[start-end] ...`` with times in seconds, as the command lines print word times."""
    return " ".join(f"{w['word']}[{w['start']:.2f}-{w['end']:.2f}]" for w in words)


def read_audio(path: str, sample_rate: int, min_samples: int) -> np.ndarray:
    """(S,) float32 mono samples of a wav/flac file; several channels are averaged, as NeMo does."""
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (S, channels)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise ValueError(f"{path}: not a readable audio file ({e})") from e
    if rate != sample_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz, the model expects {sample_rate} Hz (resample it first)")
    if samples.shape[0] < min_samples:
        raise ValueError(f"{path}: {samples.shape[0]} samples, the featurizer needs at least {min_samples}")
    return samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]


class OnnxTranscriber:
    """Audio files -> text with an export directory of ``examples/export.py``, on onnxruntime (CPU).

    Args:
        export_dir: the directory ``examples/export.py`` wrote.
        threads: onnxruntime intra-op threads per session (0: onnxruntime's default, all cores).
        max_symbols_per_step, max_symbol_per_sample: override the limits of ``deployment.json``.
    """

    def __init__(self, export_dir: str, threads: int = 0, max_symbols_per_step: Optional[int] = None,
                 max_symbol_per_sample: Optional[int] = None):
        root = Path(export_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"export directory not found: {export_dir}")
        self.config = DeploymentConfig.load(root / DEPLOYMENT_CONFIG)
        if self.config.format != "onnx":
            raise ValueError(f"{root / DEPLOYMENT_CONFIG}: format {self.config.format!r}, this needs an ONNX export")
        self.preprocessor = _session(root / PREPROCESSOR, threads)
        self.encoder = _session(root / ENCODER, threads)
        self.decoder = GreedyDecoder(
            _session(root / DECODER_JOINT, threads),
            blank_id=self.config.blank_id,
            max_symbols_per_step=self.config.max_symbols_per_step if max_symbols_per_step is None
            else max_symbols_per_step,
            max_symbol_per_sample=self.config.max_symbol_per_sample if max_symbol_per_sample is None
            else max_symbol_per_sample,
        )
        self.tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(root / TOKENIZER))

    def features(self, audio: np.ndarray, lengths: np.ndarray):
        """(B, S) float32 audio + (B,) int64 sample counts -> (B, F, T) features + (B,) int64 frame counts."""
        return self.preprocessor.run(None, {"input_signal": audio, "length": lengths})

    def encode(self, features: np.ndarray, lengths: np.ndarray):
        """(B, F, T) features + (B,) frame counts -> (B, D, T') encoder outputs + (B,) int64 encoder frames.

        T is zero-padded to a multiple of the subsampling factor first: the exported encoder pads for frame
        stacking only where its tracing example needed it, so other lengths must come in whole groups (frames
        past each length are masked, so the padding changes nothing).
        """
        pad = -features.shape[2] % self.config.subsampling_factor
        features = np.pad(features, ((0, 0), (0, 0), (0, pad))) if pad else features  # (B, F, T + pad)
        return self.encoder.run(None, {"audio_signal": features, "length": lengths})

    def align_audio(self, audio: Sequence[np.ndarray]) -> Tuple[List[List[int]], List[List[int]]]:
        """Token ids and their encoder frames (``GreedyDecoder.align``) of one batch of (S_i,) float32 mono
        waveforms at the model's sample rate."""
        lengths = np.array([len(a) for a in audio], np.int64)  # (B,)
        padded = np.zeros((len(audio), int(lengths.max())), np.float32)  # (B, S)
        for row, samples in zip(padded, audio):
            row[: len(samples)] = samples
        features, frames = self.features(padded, lengths)
        encoded, encoded_lengths = self.encode(features, frames)
        return self.decoder.align(encoded, encoded_lengths)

    def transcribe_audio(self, audio: Sequence[np.ndarray]) -> List[str]:
        """Transcribe one batch of (S_i,) float32 mono waveforms at the model's sample rate."""
        return [self.tokenizer.decode(ids) for ids in self.align_audio(audio)[0]]

    def words(self, ids: List[int], frames: List[int]) -> List[dict]:
        """[{"word", "start", "end"}] in seconds from tokens and their frames, NeMo's rule for ``timestamps=True``:
        a piece beginning with sentencepiece's word mark starts a word, which runs from its first piece's frame
        to one frame after its last piece's."""
        if self.config.window_stride is None:
            raise ValueError("word times need window_stride in deployment.json: export the model again")
        frame_seconds = self.config.window_stride * self.config.subsampling_factor
        groups: List[Tuple[List[int], List[int]]] = []
        for token, frame in zip(ids, frames):
            if not groups or self.tokenizer.id_to_piece(token).startswith("\u2581"):
                groups.append(([], []))
            groups[-1][0].append(token)
            groups[-1][1].append(frame)
        return [{"word": self.tokenizer.decode(tokens), "start": round(token_frames[0] * frame_seconds, 3),
                 "end": round((token_frames[-1] + 1) * frame_seconds, 3)} for tokens, token_frames in groups]

    def _batches(self, paths: Sequence[str], batch_size: int, progress: Optional[Callable[[int], None]]):
        """(index into paths, token ids, frames) of every file; files of similar length are batched together.
        ``progress`` is called with the number of files each batch finished."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        audio = [read_audio(p, self.config.sample_rate, self.config.min_samples) for p in paths]
        order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield from zip(chunk, *self.align_audio([audio[i] for i in chunk]))
            if progress:
                progress(len(chunk))

    def transcribe(self, paths: Sequence[str], batch_size: int = 16,
                   progress: Optional[Callable[[int], None]] = None) -> List[str]:
        """Texts of ``paths`` in order (``progress``: called with the files each batch finished)."""
        texts = [""] * len(paths)
        for index, ids, _ in self._batches(paths, batch_size, progress):
            texts[index] = self.tokenizer.decode(ids)
        return texts

    def transcribe_with_timestamps(self, paths: Sequence[str], batch_size: int = 16,
                                   progress: Optional[Callable[[int], None]] = None) -> List[dict]:
        """{"pred_text", "words": [{"word", "start", "end"}]} of ``paths`` in order (see ``words``)."""
        results: List[dict] = [{} for _ in paths]
        for index, ids, frames in self._batches(paths, batch_size, progress):
            results[index] = {"pred_text": self.tokenizer.decode(ids), "words": self.words(ids, frames)}
        return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", help="directory written by examples/export.py")
    parser.add_argument("audio", nargs="+", help="wav/flac files")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument("--timestamps", action="store_true", help="print word[start-end] (seconds) under each line")
    args = parser.parse_args(argv)
    transcriber = OnnxTranscriber(args.export_dir, threads=args.threads)
    if args.timestamps:
        results = transcriber.transcribe_with_timestamps(args.audio, args.batch_size)
    else:
        results = [{"pred_text": text} for text in transcriber.transcribe(args.audio, args.batch_size)]
    for path, result in zip(args.audio, results):
        print(f"{path}\t{result['pred_text']}")
        if "words" in result:
            print("\t" + format_words(result["words"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
