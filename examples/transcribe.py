"""Transcribe audio files, a directory of them, or a manifest with a .nemo model, a training checkpoint, or an
ONNX export directory of examples/export.py (run on onnxruntime; the same text as the .nemo it came from: both
dither with the same fixed noise, so every run gives the same text).

Usage:
    python examples/transcribe.py --model model.nemo a.wav b.flac
    python examples/transcribe.py --model model.nemo --manifest DATA/manifests/test.json --output hyps.json
    python examples/transcribe.py --model exported/ DATA/test-sentences
    python examples/transcribe.py --model model.nemo --stream 0.96 a.wav   # partial text every 0.96 s of audio
    python examples/transcribe.py --model model.nemo --timestamps a.wav --output words.json
    python examples/transcribe.py --model model.nemo --beam-size 4 a.wav   # beam search instead of greedy
"""

import argparse
import time
from pathlib import Path

import soundfile
from tqdm import tqdm

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.data import fileio
from rnnt_plugin.decoding.beam import beam_size_argument, use_beam_search
from rnnt_plugin.deploy.onnx_greedy import OnnxTranscriber, format_words
from rnnt_plugin.decoding.streaming import print_stream
from rnnt_plugin.decoding.evaluation import read_manifest, transcribe_files, transcribe_with_timestamps
from rnnt_plugin.models import load_model
from rnnt_plugin.decoding.vtln import use_vtln, warps_argument

AUDIO_SUFFIXES = (".wav", ".flac")


def collect_audio(inputs, manifest):
    """Audio paths from files, directories (searched recursively) and an optional manifest, in order."""
    paths = [u.audio_filepath for u in read_manifest(manifest)] if manifest else []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            paths.append(str(path))
        else:
            raise FileNotFoundError(f"no such audio file or directory: {item}")
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help=".nemo archive, .ckpt training checkpoint or ONNX export directory (examples/export.py)")
    parser.add_argument("audio", nargs="*", help="audio files or directories")
    parser.add_argument("--manifest", help="NeMo JSON-lines manifest of audio to transcribe")
    parser.add_argument("--output", help="write JSON lines {audio_filepath, pred_text[, words]} here")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stream", type=float, metavar="SECONDS",
                        help="stream each file in chunks of SECONDS (.nemo/.ckpt model), printing partial text")
    parser.add_argument("--vtln-warps", type=warps_argument, metavar="A,B,...",
                        help="test-time VTLN over these frequency-warp factors (.nemo or .ckpt; default: the "
                             "model's vtln_warps)")
    parser.add_argument("--timestamps", action="store_true",
                        help="word start and end times in seconds from the greedy alignment: printed, and as "
                             "words [{word, start, end}] in --output")
    parser.add_argument("--beam-size", type=beam_size_argument, metavar="N",
                        help="decode with NeMo's beam search of N hypotheses (.nemo or .ckpt; default: greedy)")
    args = parser.parse_args()

    if args.stream and args.vtln_warps:
        parser.error("--vtln-warps: streaming transcribes each chunk as it comes, without VTLN")
    if args.beam_size and (args.stream or args.timestamps):
        parser.error("--beam-size: streaming and --timestamps decode greedily")
    audio = collect_audio(args.audio, args.manifest)
    if not audio:
        parser.error("no audio given")
    if Path(args.model).is_dir():
        if args.stream or args.vtln_warps or args.beam_size:
            parser.error("--stream, --vtln-warps and --beam-size need a .nemo or .ckpt model")
        transcriber = OnnxTranscriber(args.model)
        start = time.perf_counter()
        with tqdm(total=len(audio), desc="Transcribing", unit="file") as bar:
            if args.timestamps:
                results = transcriber.transcribe_with_timestamps(audio, args.batch_size, progress=bar.update)
            else:
                texts = transcriber.transcribe(audio, args.batch_size, progress=bar.update)
                results = [{"pred_text": text} for text in texts]
    else:
        model = load_model(args.model)
        if args.vtln_warps:
            use_vtln(model, args.vtln_warps)
        if args.beam_size:
            use_beam_search(model, args.beam_size)
        if args.stream:
            print_stream(model, audio, args.stream)
            return
        start = time.perf_counter()
        if args.timestamps:
            results = transcribe_with_timestamps(model, audio, args.batch_size, progress=True)
        else:
            results = [{"pred_text": text} for text in transcribe_files(model, audio, args.batch_size, progress=True)]
    seconds = time.perf_counter() - start
    audio_seconds = sum(soundfile.info(path).duration for path in audio)
    for path, result in zip(audio, results):
        print(f"{path}\t{result['pred_text']}")
        if "words" in result:
            print("\t" + format_words(result["words"]))
    if args.output:  # atomically: an interrupted run leaves the previous file, never half of one
        fileio.write_jsonl(args.output, ({"audio_filepath": path, **result} for path, result in zip(audio, results)))
    print(f"{len(audio)} files, {audio_seconds:.1f} s of audio in {seconds:.1f} s: RTFx {audio_seconds / seconds:.1f}")


if __name__ == "__main__":
    main()
