"""A batch's files (issue 20, items 12, 15, 16): every path it writes is checked before the first request,
what killed runs leave is swept under the lock, and each output has a log folder of its own."""
from __future__ import annotations

import json
from pathlib import Path

import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, test_runtime

SMALL = {"NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false"}  # 3 calls per question


def config(tmp_path: Path) -> moa.Config:
    """Settings whose LOG_DIR is tmp_path/logs."""
    return moa.Config(URL, "k", log_dir=str(tmp_path / "logs"))


# --- 16. each output its own log folder -------------------------------------------------------------


@respx.mock
def test_two_outputs_named_alike_keep_their_logs_apart(endpoint_env, tmp_path, monkeypatch) -> None:
    """a/results.jsonl and b/results.jsonl: each q0 gets q0.txt in a folder of its own, and a resume through
    another spelling of the same output finds that folder again."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"id": "q0", "question": "Q"}) + "\n")
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        assert moa.main(["-f", str(source), "-o", str(tmp_path / side / "results.jsonl")], runtime=test_runtime()) == 0
    folders = sorted(p for p in (tmp_path / "logs").iterdir())
    assert len(folders) == 2 and all(sorted(p.name for p in f.iterdir()) == ["q0.jsonl", "q0.txt"] for f in folders)
    assert moa.main(["-f", str(source), "-o", "a/../a/results.jsonl", "--no-resume"], runtime=test_runtime()) == 0
    assert sorted((tmp_path / "logs").iterdir()) == folders, "the same output, the same folder"
    assert moa.batch_log_folder(config(tmp_path), Path("a/results.1-of-2.jsonl")).name.startswith("results.1-of-2-")
