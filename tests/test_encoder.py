"""Shapes, lengths, initialisation and streaming of the stack-time LSTM encoder."""

import math

import pytest
import torch

from rnnt_plugin.encoder import StackTimeLSTMEncoder, stack_frames


def make_encoder(**overrides) -> StackTimeLSTMEncoder:
    args = dict(
        feat_in=8,
        frame_splicing=3,
        pre_lstm_layers=2,
        stack_time_factor=2,
        post_lstm_layers=1,
        hidden_size=12,
        dropout=0.0,
        forget_gate_bias=1.0,
        weights_init_scale=0.5,
        hidden_hidden_bias_scale=0.0,
    )
    args.update(overrides)
    return StackTimeLSTMEncoder(**args).eval()


def test_stack_frames_concatenates_following_frames():
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)  # (B=2, T=5, F=2)
    out, lengths = stack_frames(x, torch.tensor([5, 4]), 3)
    assert out.shape == (2, 2, 6)
    assert torch.equal(out[0, 0], torch.cat([x[0, 0], x[0, 1], x[0, 2]]))
    assert torch.equal(out[0, 1], torch.cat([x[0, 3], x[0, 4], torch.zeros(2)]))
    assert lengths.tolist() == [2, 2]


@pytest.mark.parametrize("frames", [1, 5, 6, 7, 13, 36])
def test_output_shapes_and_lengths_for_odd_lengths(frames):
    encoder = make_encoder()
    lengths = torch.tensor([frames, max(1, frames - 4), 1])
    out, out_len = encoder(audio_signal=torch.randn(3, 8, frames), length=lengths)
    expected = [math.ceil(math.ceil(n / 3) / 2) for n in lengths.tolist()]
    assert out.shape == (3, 12, expected[0])
    assert out_len.tolist() == expected
    assert encoder.subsampling_factor == 6


def test_padding_does_not_change_valid_outputs():
    encoder = make_encoder()
    x = torch.randn(1, 8, 25)
    alone, alone_len = encoder(audio_signal=x, length=torch.tensor([25]))
    padded = torch.cat([x, torch.randn(1, 8, 11)], dim=2)
    batch, batch_len = encoder(audio_signal=padded, length=torch.tensor([25]))
    assert alone_len.tolist() == batch_len.tolist() == [5]
    torch.testing.assert_close(batch[..., :5], alone, rtol=1e-5, atol=1e-6)


def test_reference_initialisation():
    encoder = make_encoder(weights_init_scale=0.5, forget_gate_bias=1.0)
    hidden = 12
    for name, param in encoder.pre_lstm.lstm.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.all(param[hidden : 2 * hidden] == 0.5), name  # 1.0 forget bias x 0.5 scale
        if name.startswith("bias_hh"):
            assert torch.all(param[hidden : 2 * hidden] == 0.0), name  # hidden_hidden_bias_scale 0


def test_chunked_encoding_equals_whole_utterance():
    encoder = make_encoder()
    x = torch.randn(2, 8, 48)
    lengths = torch.tensor([48, 48])
    whole, _ = encoder(audio_signal=x, length=lengths)
    state, chunks = None, []
    for start in range(0, 48, 12):  # chunks of 12 frames, a multiple of the subsampling factor
        out, _, state = encoder.forward_chunk(x[:, :, start : start + 12], torch.tensor([12, 12]), state)
        chunks.append(out)
    torch.testing.assert_close(torch.cat(chunks, dim=2), whole, rtol=1e-5, atol=1e-6)


def test_onnx_export_holds_for_every_length(tmp_path):
    import onnxruntime
    encoder = make_encoder()
    path = str(tmp_path / "encoder.onnx")
    encoder.export(path)  # traced at the example length, 96 frames
    session = onnxruntime.InferenceSession(path)
    for frames in (96, 61, 224, 7):
        x, lengths = torch.randn(2, 8, frames), torch.tensor([frames, max(1, frames - 5)])
        expected, expected_len = encoder(audio_signal=x, length=lengths)
        out, out_len = session.run(None, {"audio_signal": x.numpy(), "length": lengths.numpy()})
        assert out_len.tolist() == expected_len.tolist()
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)
