"""Shapes, lengths, initialisation and streaming of the stack-time LSTM encoder."""

import math

import pytest
import torch

from rnnt_plugin.core.encoder import stack_frames
from rnnt_plugin.models.encoder import StackTimeLSTMEncoder


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


def test_bf16_training_pass_is_close_to_fp32_and_eval_stays_fp32():
    torch.manual_seed(0)
    fp32, bf16 = make_encoder(), make_encoder(training_dtype="bfloat16")
    bf16.load_state_dict(fp32.state_dict())
    features, lengths = torch.randn(3, 8, 40), torch.tensor([40, 31, 7])  # (B, F, T), (B,)

    def encoding_and_grads(encoder):
        x = features.clone().requires_grad_()
        out, _ = encoder(audio_signal=x, length=lengths)  # (B, H, T')
        out.square().sum().backward()
        return out, [x.grad] + [w.grad for w in encoder.parameters()]

    ref, ref_grads = encoding_and_grads(fp32.train())
    out, grads = encoding_and_grads(bf16.train())
    assert out.dtype == torch.float32  # what follows the encoder sees fp32
    assert not torch.equal(out, ref)  # really computed in bf16
    torch.testing.assert_close(out, ref, rtol=0.03, atol=0.03)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32  # fp32 weights get fp32 gradients
        torch.testing.assert_close(g, r, rtol=0.05, atol=0.05 * r.abs().max().item())
    bf16.eval(), fp32.eval()
    torch.testing.assert_close(bf16(audio_signal=features, length=lengths),
                               fp32(audio_signal=features, length=lengths), rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder.training_dtype"):
        make_encoder(training_dtype="float64")
