"""MLPerfJoint: NeMo's RNNTJoint with MaskDropout, a dropout of the same distribution and gradient, and an optional
bf16 training pass."""

import pytest
import torch

from rnnt_plugin.core.joint import MaskDropout
from rnnt_plugin.models.joint import MLPerfJoint


def test_mask_dropout_zeroes_p_and_scales_the_rest():
    torch.manual_seed(0)
    drop = MaskDropout(0.3)
    x = torch.rand(200, 1000) + 0.5  # no zeros of its own
    y = drop(x.requires_grad_())
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200k draws: std 0.001
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.7)  # the gradient goes through the kept elements only
    assert not torch.equal(kept, drop(x) != 0)  # a new mask each call
    torch.manual_seed(5)
    first = drop(x)
    torch.manual_seed(5)
    assert torch.equal(first, drop(x))  # torch's generator: seeding repeats it
    assert drop.eval()(x) is x and MaskDropout(0.0)(x) is x
    with pytest.raises(ValueError, match="dropout p"):
        MaskDropout(1.0)


JOINT_KWARGS = dict(jointnet={"encoder_hidden": 16, "pred_hidden": 8, "joint_hidden": 12, "activation": "relu",
                               "dropout": 0.3}, num_classes=9, log_softmax=False)


def test_mlperf_joint_is_nemos_joint_with_mask_dropout():
    kwargs = JOINT_KWARGS
    joint = MLPerfJoint(**kwargs)
    assert [type(m).__name__ for m in joint.joint_net] == ["ReLU", "MaskDropout", "Linear"]
    from nemo.collections.asr.modules import RNNTJoint

    nemo_joint = RNNTJoint(**kwargs)
    assert joint.state_dict().keys() == nemo_joint.state_dict().keys()
    nemo_joint.load_state_dict(joint.state_dict())
    enc, pred = torch.randn(2, 16, 5), torch.randn(2, 8, 3)  # (B, D, T), (B, H, U + 1)
    joint.eval(), nemo_joint.eval()
    torch.testing.assert_close(joint(encoder_outputs=enc, decoder_outputs=pred),
                               nemo_joint(encoder_outputs=enc, decoder_outputs=pred))  # (B, T, U + 1, V)


def test_bf16_training_pass_is_close_to_fp32_and_eval_stays_fp32():
    torch.manual_seed(0)
    kwargs = {**JOINT_KWARGS, "jointnet": {**JOINT_KWARGS["jointnet"], "dropout": 0.0}}
    fp32, bf16 = MLPerfJoint(**kwargs), MLPerfJoint(training_dtype="bfloat16", **kwargs)
    bf16.load_state_dict(fp32.state_dict())
    enc, pred = torch.randn(2, 16, 5), torch.randn(2, 8, 3)  # (B, D, T), (B, H, U + 1)

    def logits_and_grads(joint):
        e, p = enc.clone().requires_grad_(), pred.clone().requires_grad_()
        out = joint(encoder_outputs=e, decoder_outputs=p)  # (B, T, U + 1, V)
        out.float().square().sum().backward()
        return out, [e.grad, p.grad] + [w.grad for w in joint.parameters()]

    ref, ref_grads = logits_and_grads(fp32.train())
    out, grads = logits_and_grads(bf16.train())
    assert ref.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert not torch.equal(out.float(), ref)  # really computed in bf16
    torch.testing.assert_close(out.float(), ref, rtol=0.02, atol=0.02)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32  # fp32 weights get fp32 gradients
        torch.testing.assert_close(g, r, rtol=0.05, atol=0.05 * r.abs().max().item())
    bf16.eval(), fp32.eval()
    torch.testing.assert_close(bf16(encoder_outputs=enc, decoder_outputs=pred),
                               fp32(encoder_outputs=enc, decoder_outputs=pred), rtol=0, atol=0)
    with pytest.raises(ValueError, match="training_dtype"):
        MLPerfJoint(training_dtype="float64", **kwargs)
