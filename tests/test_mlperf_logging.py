"""MLPerf log lines: the mllog format, event types, caller metadata, and the stop at the target WER."""

import json
from types import SimpleNamespace

import pytest

from rnnt_plugin.training.mlperf_logging import MLPerfLogger, format_line, parse_log

SUBMISSION = {"org": "o", "platform": "p", "division": "closed", "status": "onprem"}


def test_line_format_and_event_types():
    line = format_line("eval_accuracy", 0.1, {"epoch_num": 3}, time_ms=5, file="x.py", lineno=7)
    assert line.startswith(":::MLLOG {")
    assert json.loads(line[len(":::MLLOG "):]) == {
        "namespace": "", "time_ms": 5, "event_type": "POINT_IN_TIME", "key": "eval_accuracy", "value": 0.1,
        "metadata": {"file": "x.py", "lineno": 7, "epoch_num": 3}}
    assert json.loads(format_line("run_start")[9:])["event_type"] == "INTERVAL_START"
    assert json.loads(format_line("run_stop")[9:])["event_type"] == "INTERVAL_END"
    with pytest.raises(ValueError):
        format_line("eval_accuracy", float("nan"))  # not valid JSON for the checker


def _fake_trainer(wer, epoch):
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch, callback_metrics={"val_wer": wer},
                           should_stop=False)


def test_stops_with_success_at_the_target(tmp_path):
    log = MLPerfLogger(tmp_path / "mlperf.log", target_wer=0.058, submission=SUBMISSION)
    for epoch, wer in enumerate([0.3, 0.058]):
        trainer = _fake_trainer(wer, epoch)
        log.on_train_epoch_start(trainer, None)
        log.on_validation_start(trainer, None)
        log.on_validation_end(trainer, None)
        assert trainer.should_stop == (wer <= 0.058)
    log.on_train_end(trainer, None)  # run_stop is written once
    records = parse_log((tmp_path / "mlperf.log").read_text())
    keys = [r["key"] for r in records]
    assert keys[:7] == ["init_start", "submission_benchmark", "submission_org", "submission_platform",
                        "submission_division", "submission_status", "cache_clear"]
    assert keys[7:] == ["block_start", "epoch_start", "epoch_stop", "eval_start", "eval_accuracy", "eval_stop",
                        "block_stop"] * 2 + ["run_stop"]
    assert records[-1]["metadata"]["status"] == "success" and records[-1]["metadata"]["epoch_num"] == 2
    assert [r["value"] for r in records if r["key"] == "eval_accuracy"] == [0.3, 0.058]
    stop = next(r for r in records if r["key"] == "run_stop")["metadata"]
    assert stop["file"].endswith("mlperf_logging.py") and stop["lineno"] > 0


def test_the_ctc_warmup_wer_never_stops_the_run(tmp_path):
    log = MLPerfLogger(tmp_path / "mlperf.log", target_wer=0.058, submission=SUBMISSION)
    for epoch, in_ctc_warmup in enumerate([True, False]):
        trainer, model = _fake_trainer(0.01, epoch), SimpleNamespace(in_ctc_warmup=in_ctc_warmup)
        log.on_train_epoch_start(trainer, model)
        log.on_validation_start(trainer, model)
        log.on_validation_end(trainer, model)
        assert trainer.should_stop == (not in_ctc_warmup)


def test_only_rank_zero_writes_and_bad_target_is_rejected(tmp_path):
    MLPerfLogger(tmp_path / "rank1.log", target_wer=0.058, submission=SUBMISSION, is_rank_zero=False)
    assert not (tmp_path / "rank1.log").exists()
    with pytest.raises(ValueError, match="target_wer"):
        MLPerfLogger(tmp_path / "x.log", target_wer=5.8, submission=SUBMISSION)
