"""Greedy RNN-T decoding speed on CPU, one thread: the plugin's batched greedy vs NeMo ``greedy`` and ``greedy_batch``.

Usage:
    python benchmarks/decode.py                                  # MLPerf-size prediction net + joint, random weights
    python benchmarks/decode.py --small-model exp/small.nemo     # also a trained small model (e.g. the demo's)

Same weights and encoder outputs for every decoder; batches of ``--seconds`` of audio (10 s = 167 encoder frames).
The random MLPerf-size model has its blank logit shifted until greedy emits 1-3 labels per frame (a trained model
emits ~0.3); its encoder outputs are Gaussian. NeMo's per-utterance ``greedy`` is slow (~17 ms per step), so it runs
on ``--greedy-utterances`` of each batch. Our search runs without ``max_symbol_per_sample`` (NeMo has none), so
``identical`` compares like with like. ``transcribe_rtfx_mlperf_1core``: featurizer + encoder + our greedy search of
the MLPerf-size model (random weights, same biased joint) on ``--seconds`` of a tone in noise (a trained model
emits fewer labels: this is pessimistic for decoding).
RTFx = audio seconds / CPU seconds of the process (``time.process_time``), so that a shared machine does not skew
the comparison; with ``--threads 1`` that is the single-core figure. The last line is a JSON object.
"""

import argparse
import json
import time

import torch
from nemo.collections.asr.modules import RNNTDecoder, RNNTJoint
from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import GreedyBatchedRNNTInfer, GreedyRNNTInfer

from rnnt_plugin.decoding.greedy import PluginGreedyRNNTInfer
from rnnt_plugin.models.encoder import StackTimeLSTMEncoder
from rnnt_plugin.models.features import MLPerfFilterbankFeatures
from rnnt_plugin.models import load_model

FRAME_SECONDS = 0.06
MAX_SYMBOLS = 30
MLPERF = dict(vocab=1023, enc=1024, pred=512, pred_layers=2, joint=512)


def mlperf_decoder_joint():
    decoder = RNNTDecoder(
        prednet=dict(pred_hidden=MLPERF["pred"], pred_rnn_layers=MLPERF["pred_layers"], dropout=0.0,
                     forget_gate_bias=1.0, weights_init_scale=0.5, hidden_hidden_bias_scale=0.0),
        vocab_size=MLPERF["vocab"], blank_as_pad=True)
    joint = RNNTJoint(
        jointnet=dict(encoder_hidden=MLPERF["enc"], pred_hidden=MLPERF["pred"], joint_hidden=MLPERF["joint"],
                      activation="relu", dropout=0.0),
        num_classes=MLPERF["vocab"], log_softmax=False)
    return decoder.eval(), joint.eval()


def searches(decoder, joint):
    blank = joint.num_classes_with_blank - 1
    return {
        "ours": PluginGreedyRNNTInfer(decoder, joint, blank, MAX_SYMBOLS, None),
        "nemo_greedy": GreedyRNNTInfer(decoder, joint, blank, MAX_SYMBOLS),
        "nemo_greedy_batch": GreedyBatchedRNNTInfer(decoder, joint, blank, MAX_SYMBOLS, loop_labels=True),
    }


def labels_per_frame(search, encoded, lengths) -> float:
    hyps = search(encoder_output=encoded, encoded_lengths=lengths)[0]
    return sum(len(h.y_sequence) for h in hyps) / int(lengths.sum())


def bias_blank(joint, search, encoded, lengths, low=1.0, high=3.0) -> float:
    """Shift the blank logit until the search emits ``low``-``high`` labels per frame; return the rate."""
    bias = joint.joint_net[-1].bias
    rate, step, direction = labels_per_frame(search, encoded, lengths), 0.5, 0
    for _ in range(60):
        if low <= rate <= high:
            return rate
        new_direction = 1 if rate > high else -1
        step = step / 2 if direction and new_direction != direction else step  # bisect once bracketed
        direction = new_direction
        with torch.no_grad():
            bias[-1] += direction * step
        rate = labels_per_frame(search, encoded, lengths)
    raise RuntimeError(f"blank bias did not reach {low}-{high} labels per frame (last {rate:.2f})")


def timed(search, encoded, lengths):
    """Hypotheses and CPU seconds of the process (one thread: the machine may be shared, so not wall time)."""
    start = time.process_time()
    hyps = search(encoder_output=encoded, encoded_lengths=lengths)[0]
    return hyps, time.process_time() - start


def same(a, b) -> bool:
    return all(x.y_sequence.tolist() == y.y_sequence.tolist() and list(x.timestamp) == [int(t) for t in y.timestamp]
               for x, y in zip(a, b))


def compare(name, decoder, joint, encoder_dim, batches, seconds, greedy_utterances, seed, bias):
    """Run the three searches on each batch size (``bias``: first shift the blank logit for 1-3 labels per frame
    on the batch's first utterances); print a line per batch and return {batch: figures}."""
    frames = round(seconds / FRAME_SECONDS)
    found = {}
    for batch in batches:
        torch.manual_seed(seed)
        encoded = torch.randn(batch, encoder_dim, frames)  # (B, D, T)
        lengths = torch.full((batch,), frames)
        s = searches(decoder, joint)
        if bias:
            bias_blank(joint, s["ours"], encoded[:4], lengths[:4])
        ours, t_ours = timed(s["ours"], encoded, lengths)
        batched, t_batched = timed(s["nemo_greedy_batch"], encoded, lengths)
        n = min(greedy_utterances, batch)
        greedy, t_greedy = timed(s["nemo_greedy"], encoded[:n], lengths[:n])
        figures = dict(
            rtfx_ours=batch * seconds / t_ours,
            rtfx_nemo_greedy_batch=batch * seconds / t_batched,
            rtfx_nemo_greedy=n * seconds / t_greedy,
            labels_per_frame=sum(len(h.y_sequence) for h in ours) / (batch * frames),
            identical=same(ours, batched) and same(ours[:n], greedy),
        )
        figures["speedup_vs_nemo_greedy_batch"] = figures["rtfx_ours"] / figures["rtfx_nemo_greedy_batch"]
        figures["speedup_vs_nemo_greedy"] = figures["rtfx_ours"] / figures["rtfx_nemo_greedy"]
        print(f"{name} B={batch}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in figures.items()), flush=True)
        found[batch] = figures
    return found


def transcribe_rtfx(decoder, joint, seconds: float, batch: int) -> float:
    """Featurizer + MLPerf-size encoder (random weights) + our greedy search on a batch of audio."""
    featurizer = MLPerfFilterbankFeatures(sample_rate=16000, window_size=0.02, window_stride=0.01, window="hann",
                                          n_fft=512, n_filt=80, dither=0.0).eval()
    encoder = StackTimeLSTMEncoder(feat_in=80, frame_splicing=3, pre_lstm_layers=2, stack_time_factor=2,
                                   post_lstm_layers=3, hidden_size=MLPERF["enc"], dropout=0.0, forget_gate_bias=1.0,
                                   weights_init_scale=0.5, hidden_hidden_bias_scale=0.0).eval()
    samples = int(seconds * 16000)
    t = torch.arange(samples) / 16000
    audio = (0.1 * torch.sin(2 * torch.pi * 220 * t) + 0.01 * torch.randn(batch, samples)).float()  # (B, S)
    lengths = torch.full((batch,), samples)
    search = PluginGreedyRNNTInfer(decoder, joint, joint.num_classes_with_blank - 1, MAX_SYMBOLS, 300)
    start = time.process_time()
    with torch.inference_mode():
        feats, feat_len = featurizer(input_signal=audio, length=lengths)
        encoded, encoded_len = encoder(audio_signal=feats, length=feat_len)
        search(encoder_output=encoded, encoded_lengths=encoded_len)
    return batch * seconds / (time.process_time() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-model", help="a trained small .nemo/.ckpt to benchmark as well")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    parser.add_argument("--greedy-utterances", type=int, default=2, help="utterances NeMo's slow greedy decodes")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    decoder, joint = mlperf_decoder_joint()
    results = {"mlperf_random": compare("mlperf_random", decoder, joint, MLPERF["enc"], args.batches, args.seconds,
                                        args.greedy_utterances, seed=1, bias=True)}
    if args.small_model:
        small = load_model(args.small_model)
        results["small_trained"] = compare("small_trained", small.decoder, small.joint, small.encoder.hidden_size,
                                           args.batches, args.seconds, args.greedy_utterances, seed=2, bias=False)
    rtfx_transcribe = transcribe_rtfx(decoder, joint, args.seconds, batch=8)
    print(f"transcribe path (featurizer + encoder + our greedy), MLPerf size, {args.threads} thread(s): "
          f"RTFx {rtfx_transcribe:.1f}", flush=True)

    last = max(args.batches)
    headline = results["mlperf_random"][last]
    print(json.dumps({
        f"rtfx_ours_b{last}": round(headline["rtfx_ours"], 2),
        f"rtfx_nemo_greedy_batch_b{last}": round(headline["rtfx_nemo_greedy_batch"], 2),
        f"speedup_vs_nemo_b{last}": round(headline["speedup_vs_nemo_greedy_batch"], 2),
        "identical": all(f["identical"] for r in results.values() for f in r.values()),
        "transcribe_rtfx_mlperf_1core": round(rtfx_transcribe, 2),
        "threads": args.threads,
        "details": {name: {str(b): {k: round(v, 3) if isinstance(v, float) else v for k, v in f.items()}
                           for b, f in r.items()} for name, r in results.items()},
    }))


if __name__ == "__main__":
    main()
