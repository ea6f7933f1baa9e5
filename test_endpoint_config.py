"""Issue 20, items 5, 6, 9, 13 and 19: the endpoint as configured: Slurm shards from the task id,
masking only credentials in PROXY_URL, user info refused, --check that tells the truth quickly,
and connection errors that name the proxy they went through."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, test_runtime

HERE = Path(__file__).resolve().parent
BASE = URL.removesuffix("/chat/completions")


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# --- item 5: a Slurm array's shard is its task id -------------------------------------------------

def slurm(task: int, ids: list[int]) -> dict[str, str]:
    """What Slurm sets in task ``task`` of an array submitted as --array=<ids>."""
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(min(ids)),
            "SLURM_ARRAY_TASK_MAX": str(max(ids)), "SLURM_ARRAY_TASK_COUNT": str(len(ids))}


@pytest.mark.parametrize("ids, shards", [
    (list(range(1, 9)), list(range(1, 9))),
    (list(range(0, 8)), [8, *range(1, 8)]),
    ([3, 5], [3, 5]),
    ([0, 6], [8, 6]),
], ids=["array-1-8", "array-0-7", "resubmitted-3,5", "resubmitted-0,6-of-0-7"])
def test_each_slurm_task_runs_the_shard_of_its_own_id(ids: list[int], shards: list[int]) -> None:
    """With --shard auto/8 a task's id is its shard (id 0 is shard 8): a resubmitted part reruns exactly its shards."""
    assert [moa.parse_shard("auto/8", slurm(task, ids)) for task in ids] == [moa.Shard(k, 8) for k in shards]


@pytest.mark.parametrize("flag, environment, says", [
    ("auto", slurm(3, [3, 5]), "--shard auto/8"),
    ("auto/8", slurm(9, list(range(1, 10))), "--array=1-8"),
    ("auto/8", slurm(3, list(range(0, 9))), "0 and 8"),
], ids=["no-count", "id-above-the-count", "ids-0-and-N-both"])
@respx.mock
def test_a_slurm_task_that_cannot_be_mapped_is_refused(flag: str, environment: dict[str, str], says: str,
                                                       endpoint_env, monkeypatch, tmp_path, capsys) -> None:
    """Plain auto under Slurm, an id above N, or ids 0 and N in one array: exit 2, one line saying what to submit."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    code = moa.main(["-f", str(tmp_path / "q.txt"), "-o", str(tmp_path / "out.jsonl"), "--shard", flag],
                    runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and route.call_count == 0
    assert len(error_lines(err)) == 1 and says in err


# --- item 6: only credentials in PROXY_URL are secrets --------------------------------------------

AZURE = "https://res.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21"


@pytest.mark.parametrize("url, shown, secret", [
    (AZURE, AZURE, None),
    ("https://g.googleapis.com/v1beta/openai/chat/completions?key=AIzaFAKE0123456789&alt=json",
     "https://g.googleapis.com/v1beta/openai/chat/completions?key=***&alt=json", "AIzaFAKE0123456789"),
    ("https://acct.example/v1/chat/completions?sv=2022-11-02&sig=SASsig0123%2B45%3D&se=2030-01-01",
     "https://acct.example/v1/chat/completions?sv=2022-11-02&sig=***&se=2030-01-01", "SASsig0123+45="),
    ("https://s3.example/v1/chat/completions?X-Amz-Date=20250101T000000Z&X-Amz-Signature=deadbeef0123",
     "https://s3.example/v1/chat/completions?X-Amz-Date=20250101T000000Z&X-Amz-Signature=***", "deadbeef0123"),
    ("https://apim.example/v1/chat/completions?api-version=2024-10-21&subscription-key=0123abcd4567",
     "https://apim.example/v1/chat/completions?api-version=2024-10-21&subscription-key=***", "0123abcd4567"),
], ids=["azure-api-version", "google-key", "azure-sas-sig", "aws-signature", "apim-subscription-key"])
def test_credential_parameters_are_masked_and_harmless_ones_shown(url: str, shown: str, secret: str | None) -> None:
    """Where PROXY_URL is shown, credential parameters read *** and api-version and dates stay; only credentials
    are secrets."""
    config = moa.Config(proxy_url=url, api_key=FAKE_KEY)
    assert moa.display_url(url) == shown and config.shown()["PROXY_URL"] == shown and moa.masked_url(url) == shown
    assert "2024-10-21" not in config.secrets and "2030-01-01" not in config.secrets
    assert "20250101T000000Z" not in config.secrets
    if secret:
        assert secret in config.secrets and secret not in moa.redact(f"echo {secret}", config)


@respx.mock
def test_an_answer_equal_to_a_url_query_value_is_never_masked(monkeypatch, tmp_path, capsys) -> None:
    """Azure's ?api-version=2024-10-21 and an answer "2024-10-21": stdout, --json, transcript and batch line keep it."""
    monkeypatch.setenv("PROXY_URL", AZURE)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    monkeypatch.setenv("RETRY_BASE_DELAY", "0")
    monkeypatch.setenv("STRAGGLER_FACTOR", "0")
    respx.post(AZURE).mock(side_effect=FakeModel(answer="2024-10-21"))
    assert moa.main(["-q", "When was the API version released?", "--json"], runtime=test_runtime()) == 0
    assert json.loads(capsys.readouterr().out)["final_answer"] == "2024-10-21"
    assert moa.main(["-q", "When?"], runtime=test_runtime()) == 0
    assert "Answer: 2024-10-21" in capsys.readouterr().out
    transcript = sorted((tmp_path / "logs").glob("*.txt"))[0].read_text()
    assert "<answer>2024-10-21</answer>" in transcript and "api-version=2024-10-21" in transcript
    (tmp_path / "q.txt").write_text("When?\n")
    assert moa.main(["-f", str(tmp_path / "q.txt"), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime()) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["final_answer"] == "2024-10-21"


# --- item 9: user info in PROXY_URL is refused -----------------------------------------------------

@pytest.mark.parametrize("url", ["https://user:pw-SECRET-0123456789@proxy.test/v1",
                                 "https://sk-SECRET-as-user-0123@proxy.test/v1"], ids=["user-and-password", "user"])
@respx.mock
def test_user_info_in_proxy_url_is_refused_and_only_bearer_is_sent(url: str, endpoint_env, monkeypatch,
                                                                   capsys) -> None:
    """httpx would send user info as Basic auth in place of API_KEY: refused (exit 2, nothing sent, nothing shown);
    without it the request carries the Bearer key."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    monkeypatch.setenv("PROXY_URL", url)
    code = moa.main(["-q", "Q?"], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and route.call_count == 0
    assert len(error_lines(err)) == 1 and "API_KEY" in err and "Bearer" in err and "SECRET" not in err
    monkeypatch.setenv("PROXY_URL", BASE)
    assert moa.main(["-q", "Q?"], runtime=test_runtime()) == 0
    assert {call.request.headers["authorization"] for call in route.calls} == {f"Bearer {FAKE_KEY}"}
