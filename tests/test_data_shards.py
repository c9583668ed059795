"""Webdataset shards: read back through NeMo's tarred dataset, the same audio and text as from the files."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from rnnt_plugin.data import shards
from rnnt_plugin.data.librispeech import prepare


def _by_utterance(dataset, items):
    """{utt id: (waveform (T,), token ids (U,))} from a NeMo dataset's samples."""
    out = {}
    for sample in items:
        audio, audio_len, tokens, tokens_len, index = sample
        utt_id = dataset.get_manifest_sample(int(index)).audio_file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        out[utt_id] = (audio[: int(audio_len)].clone(), tokens[: int(tokens_len)].tolist())
    return out


def test_nemo_reads_the_same_samples_from_shards_as_from_files(synth_corpus, tmp_path):
    from nemo.collections.asr.data.audio_to_text import AudioToBPEDataset, TarredAudioToBPEDataset
    from nemo.collections.common.tokenizers import SentencePieceTokenizer

    info = json.loads(shards.write_shards(synth_corpus.manifests["train"], tmp_path / "sh", 3, seed=1).read_text())
    assert info["num_shards"] == 3 and info["utterances"] == 40
    tokenizer = SentencePieceTokenizer(str(synth_corpus.tokenizer_dir / "tokenizer.model"))
    files = AudioToBPEDataset(str(synth_corpus.manifests["train"]), tokenizer, sample_rate=16000,
                              return_sample_id=True)
    tarred = TarredAudioToBPEDataset(info["tarred_audio_filepaths"], info["manifest_filepath"], tokenizer,
                                     sample_rate=16000, shuffle_n=0, return_sample_id=True)
    from_files = _by_utterance(files, (files[i] for i in range(len(files))))
    from_shards = _by_utterance(tarred, iter(tarred))
    assert sorted(from_shards) == sorted(from_files) and len(from_shards) == 40
    for utt_id, (audio, tokens) in from_files.items():
        assert tokens == from_shards[utt_id][1], utt_id
        assert audio.shape == from_shards[utt_id][0].shape and bool((audio == from_shards[utt_id][0]).all())


def test_shard_layout_is_shuffled_balanced_and_reproducible(synth_corpus, tmp_path):
    manifest = synth_corpus.manifests["train"]
    source = [json.loads(r) for r in manifest.read_text().splitlines()]
    shards.write_shards(manifest, tmp_path / "a", 3, seed=7)
    shards.write_shards(manifest, tmp_path / "b", 3, seed=7)
    rows = [json.loads(r) for r in (tmp_path / "a" / "tarred_audio_manifest.json").read_text().splitlines()]
    assert [r["shard_id"] for r in rows] == sorted(r["shard_id"] for r in rows)
    assert [sum(r["shard_id"] == s for r in rows) for s in range(3)] == [13, 13, 14]
    names = [r["audio_filepath"] for r in rows]
    assert sorted(names) == sorted(s["audio_filepath"].rsplit("/", 1)[1] for s in source)
    assert names != [s["audio_filepath"].rsplit("/", 1)[1] for s in source]  # shuffled
    for s in range(3):
        assert (tmp_path / "a" / f"audio_{s}.tar").read_bytes() == (tmp_path / "b" / f"audio_{s}.tar").read_bytes()
        with tarfile.open(tmp_path / "a" / f"audio_{s}.tar") as tar:
            members = tar.getnames()
            part = [r for r in rows if r["shard_id"] == s]
            assert members[0::2] == [r["audio_filepath"] for r in part]
            assert [tar.extractfile(m).read().decode() for m in members[1::2]] == [r["text"] for r in part]
        lines = (tmp_path / "a" / "sharded_manifests" / f"manifest_{s}.json").read_text().splitlines()
        assert [json.loads(r) for r in lines] == [r for r in rows if r["shard_id"] == s]


def test_shard_argument_errors_and_prepare_option(synth_corpus, tmp_path):
    with pytest.raises(ValueError, match="num_shards must be in 1..10"):
        shards.write_shards(synth_corpus.manifests["dev"], tmp_path / "x", 11)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops\n")
    with pytest.raises(ValueError, match="bad.json:1: not JSON"):
        shards.write_shards(bad, tmp_path / "y", 1)
    root = tmp_path / "data"
    shutil.copytree(synth_corpus.data_dir / "train", root / "train")
    shutil.copytree(synth_corpus.data_dir / "dev", root / "train-more")
    result = prepare(root, ["train", "train-more"], vocab_size=0, shards=2)
    assert result.shards == root.resolve() / "shards" / "train" / "shards.json"
    info = json.loads(result.shards.read_text())
    assert info["num_shards"] == 2 and info["utterances"] == result.kept["train"] + result.kept["train-more"] == 50
    assert len(info["source_manifests"]) == 2


def test_training_steps_stream_from_shards(synth_corpus, tmp_path):
    """examples/train.py's driver, fed from the shards (tiny model, 2 steps, no validation or checkpoints)."""
    from hydra import compose, initialize_config_dir
    from nemo.collections.asr.data.audio_to_text import TarredAudioToBPEDataset

    from rnnt_plugin.training.trainer import train

    info = json.loads(shards.write_shards(synth_corpus.manifests["train"], tmp_path / "sh", 2).read_text())
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        cfg = compose(config_name="small_cpu", overrides=[
            f"model.tokenizer.dir={synth_corpus.tokenizer_dir}",
            f"model.train_ds.manifest_filepath={info['manifest_filepath']}",
            "++model.train_ds.is_tarred=true",
            f"++model.train_ds.tarred_audio_filepaths={info['tarred_audio_filepaths']}",
            f"model.validation_ds.manifest_filepath={synth_corpus.manifests['dev']}",
            "model.train_ds.batch_size=4", "model.train_ds.augmentor=null", "model.ctc_warmup.steps=0",
            "model.model_defaults.enc_hidden=32", "model.model_defaults.pred_hidden=32",
            "model.model_defaults.joint_hidden=32",
            "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=100",  # no training WER: greedy decoding of an untrained model is slow
            f"exp_manager.exp_dir={tmp_path / 'exp'}", "exp_manager.create_checkpoint_callback=false",
            f"nemo_path={tmp_path / 'm.nemo'}",
        ])
    model = train(cfg)
    assert isinstance(model._train_dl.dataset, TarredAudioToBPEDataset)
    assert model.trainer.global_step == 2
    assert torch.isfinite(model.trainer.callback_metrics["train_loss"])
