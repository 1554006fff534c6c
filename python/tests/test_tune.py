"""carbide.tune: tunes the zoo MLP into a records file, resumes from it, and
carbide.compile(tuning_db=...) builds with the records and still matches
onnxruntime."""
import json

import pytest

import carbide
from conftest import assert_close_to_ort, zoo_files


def test_tune_records_resume_and_compile(tmp_path):
    path, inputs, expected = zoo_files("mlp")
    db = tmp_path / "tune.jsonl"
    summary = carbide.tune(path, trials=6, db=str(db), threads=1)
    assert summary["trials_run"] == 6 and summary["trials_resumed"] == 0
    assert summary["tasks"], "the MLP has GEMM kernels to tune"
    for task in summary["tasks"]:
        if task["best_us"] is not None:
            assert task["best_us"] <= task["default_us"]
            assert task["schedule"]["microkernel"]["mr"] >= 1
    records = [json.loads(line) for line in db.read_text().splitlines()]
    # One record per trial, plus the end-of-run re-measurements ("verified").
    assert len([r for r in records if not r.get("verified")]) == 6
    assert {r["workload"] for r in records} <= {t["workload"] for t in summary["tasks"]}

    again = carbide.tune(path, trials=6, db=db, time_budget="1m")
    assert again["trials_run"] == 0 and again["trials_resumed"] == 6

    module = carbide.compile(path, tuning_db=str(db))
    outputs = module.run(inputs)
    for name, reference in expected.items():
        assert_close_to_ort("mlp", name, outputs[name], reference)


def test_tune_rejects_bad_arguments(tmp_path):
    path, _, _ = zoo_files("mlp")
    with pytest.raises(carbide.InvalidArgument):
        carbide.tune(path, trials=1, db=str(tmp_path / "t.jsonl"), time_budget="soon")
    with pytest.raises(carbide.InvalidArgument):
        carbide.tune(path, trials=1, db=str(tmp_path / "t.jsonl"), target="riscv")
