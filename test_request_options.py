"""Request options (issue 24): SYSTEM_PROMPT, SEED, TOP_P, STOP, RESPONSE_FORMAT, REASONING_EFFORT and EXTRA_BODY
reach the request body (respx's route.calls), unset ones stay out, bad ones are one ConfigError line; OpenAI Batch API
input lines set their own model, temperature and max_tokens, and each output line has a request_id of its own.

    MOA_REAL_ENDPOINT=http://127.0.0.1:8088/v1 python -m pytest -q test_request_options.py   # and a live llama.cpp
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import FAKE_KEY, REAL_ENDPOINT, URL, FakeModel, body_of, completion, test_runtime

HERE = Path(__file__).resolve().parent
QUESTION = "What is 17 * 23?"
PLAIN_BODY = {"model", "messages", "temperature", "max_tokens"}


@pytest.fixture
def small(endpoint_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two solvers, one judge, no rebuttal, no transcripts: a debate of five calls."""
    for name, value in {"NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false",
                        "ENABLE_FILE_LOGGING": "false"}.items():
        monkeypatch.setenv(name, value)


def ask_once(monkeypatch: pytest.MonkeyPatch, model: FakeModel | None = None, **env: str) -> respx.Route:
    """One question through the CLI (--json) with ``env`` set; the route, whose calls hold every request."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    route = respx.post(URL).mock(side_effect=model or FakeModel())
    assert moa.main(["-q", QUESTION, "--json"], runtime=test_runtime()) == 0
    return route


def settings(**values: str) -> dict[str, str]:
    return {"PROXY_URL": URL, "API_KEY": FAKE_KEY, **values}


# --- each option reaches every request body --------------------------------------------------------


@pytest.mark.parametrize("name, value, key, sent", [
    ("SEED", "42", "seed", 42),
    ("SEED", "-1", "seed", -1),
    ("TOP_P", "0.9", "top_p", 0.9),
    ("STOP", "<|im_end|>", "stop", ["<|im_end|>"]),
    ("STOP", "[INST]", "stop", ["[INST]"]),
    ("STOP", '["<|im_end|>", "###"]', "stop", ["<|im_end|>", "###"]),
    ("REASONING_EFFORT", "High", "reasoning_effort", "high"),
    ("REASONING_EFFORT", "xhigh", "reasoning_effort", "xhigh"),
    ("EXTRA_BODY", '{"provider": {"order": ["groq"], "allow_fallbacks": false}}', "provider",
     {"order": ["groq"], "allow_fallbacks": False}),
    ("EXTRA_BODY", '{"user": "team-a", "metadata": {"tags": ["moa"]}}', "metadata", {"tags": ["moa"]}),
], ids=["seed", "seed-negative-as-openai-and-vllm-take", "top-p", "stop-one", "stop-not-json-is-one", "stop-list",
        "effort-lowered", "effort-new-word", "openrouter-provider", "litellm-metadata"])
@respx.mock
def test_each_option_reaches_every_request_body(small, monkeypatch, name: str, value: str, key: str, sent: Any) -> None:
    """A set option is in the body of every call of the debate, solvers, critics and judges alike."""
    route = ask_once(monkeypatch, **{name: value})
    assert route.call_count == 5
    assert [body_of(call).get(key) for call in route.calls] == [sent] * 5


@respx.mock
def test_unset_options_leave_the_body_as_it_was(small, monkeypatch) -> None:
    """With no option set, every body holds model, messages, temperature and max_tokens, nothing more."""
    route = ask_once(monkeypatch)
    assert all(set(body_of(call)) == PLAIN_BODY for call in route.calls)


@respx.mock
def test_system_prompt_comes_first_in_every_system_message(small, monkeypatch) -> None:
    """SYSTEM_PROMPT opens the one system message of every call; the phase's rules follow it, format last; the
    nonce ends the user message, not the system one (issue 25: a prefix cache keeps it), but for a judge's rules."""
    mine = "You answer for a tax office.\nCite the article."
    route = ask_once(monkeypatch, SYSTEM_PROMPT=mine)
    for call in route.calls:
        messages = body_of(call)["messages"]
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"].startswith(mine + "\n\n")
        ends = 0 if call.request.headers["X-MoA-Phase"] == "judge" else 1  # a judge's nonce ends its rules
        assert re.search(r"\n\n#[0-9a-f]{16}\Z", messages[ends]["content"])
        assert not re.search(r"#[0-9a-f]{16}", messages[1 - ends]["content"])


@respx.mock
def test_system_prompt_is_counted_in_the_budget(small, monkeypatch) -> None:
    """The prompt estimate a call reserves includes SYSTEM_PROMPT, which every call sends."""
    config = moa.Config(URL, FAKE_KEY, system_prompt="x" * 3000)
    plain = moa.Config(URL, FAKE_KEY)
    assert moa.prompt_tokens_estimate("rules", "q", config) == moa.prompt_tokens_estimate("rules", "q", plain) + 1000
    assert moa.worst_case_costs(config, QUESTION, workers=2).solver == \
        moa.worst_case_costs(plain, QUESTION, workers=2).solver + 1000


def test_the_plain_strategy_sends_the_system_prompt_alone() -> None:
    """--eval's plain question (no rules of ours) gets SYSTEM_PROMPT as its only system message, without a nonce."""
    config = moa.Config(URL, FAKE_KEY, system_prompt="Be brief.", max_retries=0)
    sent: list[dict] = []

    async def run() -> None:
        with respx.mock:
            respx.post(URL).mock(side_effect=lambda r: sent.append(json.loads(r.content)) or completion("391"))
            async with httpx.AsyncClient() as client:
                runtime = test_runtime()
                state = moa.Debate(config, moa.Endpoint(config, client, runtime), runtime, "run", runtime.clock())
                await moa.ask(state, moa.Phase.GENERATE, "solver-1", "", QUESTION, temperature=0, max_tokens=9,
                              parse=lambda text: text)
    asyncio.run(run())
    assert sent[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]


@respx.mock
def test_extra_body_overrides_ours_and_null_removes_a_field(small, monkeypatch) -> None:
    """EXTRA_BODY is merged last: its seed beats SEED, a null drops max_tokens and temperature (OpenAI o-series)."""
    extra = '{"max_tokens": null, "max_completion_tokens": 4096, "temperature": null, "seed": 7}'
    route = ask_once(monkeypatch, SEED="1", EXTRA_BODY=extra)
    for call in route.calls:
        body = body_of(call)
        assert "max_tokens" not in body and "temperature" not in body
        assert body["max_completion_tokens"] == 4096 and body["seed"] == 7


# --- RESPONSE_FORMAT: the synthesis's alone ----------------------------------------------------------------

JSON_REPLY = '{"answer": 391, "steps": ["17 * 23 = 17 * 20 + 17 * 3 = 340 + 51"]}'


@respx.mock
def test_response_format_goes_to_the_synthesis_alone(small, monkeypatch, capsys) -> None:
    """Only the synthesis call carries response_format, its prompt says JSON, and its JSON reply is the solution."""
    model = FakeModel(overrides={"synthesis": lambda request, n: completion(JSON_REPLY)})
    route = ask_once(monkeypatch, model, SYNTHESIZE="on", RESPONSE_FORMAT='{"type": "json_object"}')
    printed = json.loads(capsys.readouterr().out)
    formats = {call.request.headers["X-MoA-Phase"]: body_of(call).get("response_format") for call in route.calls}
    assert formats == {"generate": None, "critique": None, "judge": None, "synthesis": {"type": "json_object"}}
    [synthesis] = [body_of(c) for c in route.calls if c.request.headers["X-MoA-Phase"] == "synthesis"]
    assert "JSON" in synthesis["messages"][0]["content"]
    assert printed["solution"] == JSON_REPLY and printed["final_answer"] == "391" and printed["synthesized"]


@pytest.mark.parametrize("reply", [
    JSON_REPLY,
    '{\n  "final answer": "391",\n  "confidence": "high"\n}',
    '[{"step": 1, "text": "Answer: 391"}]',
], ids=["compact", "pretty-with-answer-key", "a-list"])
def test_parse_synthesis_reads_plain_json_as_the_response(reply: str) -> None:
    """A synthesis reply that is JSON, with no tags, is the response exactly as written."""
    assert moa.parse_synthesis(reply) == reply


@pytest.mark.parametrize("values", [
    {"SYNTHESIZE": "off"},
    {"SYNTHESIZE": "auto", "ANSWER_SHAPE": "short"},
], ids=["synthesis-off", "short-answers-never-synthesized"])
def test_response_format_without_any_synthesis_is_refused(values: dict[str, str]) -> None:
    """RESPONSE_FORMAT where no call could carry it is a ConfigError naming it and what to do."""
    with pytest.raises(moa.ConfigError, match="RESPONSE_FORMAT .* set SYNTHESIZE=on"):
        moa.load_config({}, settings(RESPONSE_FORMAT='{"type": "json_object"}', **values), {})


def test_response_format_warns_when_only_full_answers_get_it(caplog) -> None:
    """With ANSWER_SHAPE and SYNTHESIZE at auto, one warning says short answers stay as voted."""
    with caplog.at_level(logging.WARNING, logger="moa"):
        moa.load_config({}, settings(RESPONSE_FORMAT='{"type": "json_object"}'), {})
    assert [r.message for r in caplog.records if "RESPONSE_FORMAT" in r.message]


@pytest.mark.parametrize("phase, has_format", [(moa.Phase.SYNTHESIS, True), (moa.Phase.JUDGE, False),
                                                (moa.Phase.GENERATE, False)], ids=["synthesis", "judge", "solver"])
def test_request_options_are_the_settings_of_a_phase(phase: moa.Phase, has_format: bool) -> None:
    """request_options is pure: the set options, response_format for the synthesis only, EXTRA_BODY last."""
    config = moa.load_config({}, settings(SEED="3", RESPONSE_FORMAT='{"type": "json_object"}', SYNTHESIZE="on",
                                          EXTRA_BODY='{"top_k": 40}'), {})
    expected = {"seed": 3, "top_k": 40} | ({"response_format": {"type": "json_object"}} if has_format else {})
    assert moa.request_options(config, phase) == expected


# --- bad values: one line naming the setting --------------------------------------------------------------


@pytest.mark.parametrize("name, value, says", [
    ("SEED", str(-2**63 - 1), "whole number from -9223372036854775808"),
    ("SEED", "1.5", "whole number"),
    ("TOP_P", "1.5", "number from 0 to 1"),
    ("STOP", "</answer>", "part of </answer>"),
    ("STOP", "<", "(it is part of <"),
    ("STOP", "FINAL ANSWER", "part of FINAL ANSWER:"),
    ("STOP", '["\\n\\n"]', "only whitespace"),
    ("STOP", '["a1", "a2", "a3", "a4", "a5"]', "list of 1 to 4"),
    ("STOP", '[1, 2]', "non-empty strings"),
    ("RESPONSE_FORMAT", '["json_object"]', "expected a JSON object"),
    ("RESPONSE_FORMAT", '{"type": ', "not valid JSON"),
    ("REASONING_EFFORT", "very high", "a word such as"),
    ("EXTRA_BODY", '{"messages": []}', "it sets messages"),
    ("EXTRA_BODY", '{"model": "x", "stream": true}', "it sets model, stream"),
    ("EXTRA_BODY", "[1]", "expected a JSON object"),
    ("EXTRA_BODY", '{"a": "' + "x" * parsing.JSON_SETTING_CHARS + '"}', "longer than"),
    ("EXTRA_BODY", '{"provider": {"weight": NaN}}', "not JSON compliant"),
    ("EXTRA_BODY", '{"seed": 1e999}', "not JSON compliant"),
    ("RESPONSE_FORMAT", '{"type": "json_object", "x": -Infinity}', "not JSON compliant"),
    ("EXTRA_BODY", '{"a": ' * 985 + "1" + "}" * 985, "nested"),  # pytest's deeper stack: json's own limit
    ("RESPONSE_FORMAT", '{"a": [' * 40 + "1" + "]}" * 40, "nested deeper than"),
], ids=["seed-below-int64", "seed-fraction", "top-p-above-1", "stop-closing-tag", "stop-bracket", "stop-judge-line",
        "stop-blank-line", "stop-five", "stop-numbers", "format-a-list", "format-broken-json", "effort-two-words",
        "extra-messages", "extra-model-and-stream", "extra-a-list", "extra-too-long",
        "extra-nan-no-request-could-send", "extra-overflow-is-infinity", "format-infinity",
        "extra-nested-985-deep-read-now-but-not-sendable", "format-nested-80-deep"])
def test_a_bad_option_is_one_line_naming_it(name: str, value: str, says: str) -> None:
    """A bad request option is a ConfigError of one line: the setting, where it came from, what is wrong."""
    with pytest.raises(moa.ConfigError) as raised:
        moa.load_config({}, settings(**{name: value}), {})
    message = str(raised.value)
    assert message.startswith(f"{name}=") and "(environment)" in message and says in message
    assert "\n" not in message


@pytest.mark.parametrize("env", [
    {"SEED": "7", "EXTRA_BODY": '{"temperature": 0, "max_tokens": null, "provider": {"order": ["groq"]}}'},
    {"STOP": "<|im_end|>", "TOP_P": "0.5"},
    {},
], ids=["extra-body-overrides-and-removes", "options", "none"])
@respx.mock
def test_the_trace_records_each_request_as_sent(small, monkeypatch, tmp_path, env: dict) -> None:
    """Each trace attempt's "request" is the body the endpoint got: options, EXTRA_BODY's overrides and removals."""
    monkeypatch.setenv("ENABLE_JSONL_TRACE", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    route = ask_once(monkeypatch, **env)
    attempts = [r for path in tmp_path.glob("*.jsonl") for line in path.read_text().splitlines()
                if (r := json.loads(line))["type"] == "attempt"]
    assert sorted(json.dumps(a["request"], sort_keys=True) for a in attempts) == \
        sorted(json.dumps(body_of(call), sort_keys=True) for call in route.calls)


@pytest.mark.parametrize("extra, secret", [
    ('{"api_key": "sk-litellm-client-987654", "user": "team-a"}', "sk-litellm-client-987654"),
    ('{"aws_secret_access_key": "wJalrXUtnFEMI-K7MDENG", "aws_region_name": "us-east-1"}', "wJalrXUtnFEMI-K7MDENG"),
], ids=["litellm-client-key", "bedrock-secret"])
@respx.mock
def test_a_credential_in_extra_body_is_sent_and_masked_everywhere(small, monkeypatch, tmp_path, capsys, extra: str,
                                                                   secret: str) -> None:
    """A credential-named field of EXTRA_BODY (as PROXY_URL's ?key=) is sent, and masked in stdout, logs and config."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    route = ask_once(monkeypatch, EXTRA_BODY=extra)
    assert all(secret in json.dumps(body_of(call)) for call in route.calls)
    assert moa.main(["config", "--json"]) == 0
    shown = capsys.readouterr().out + "".join(path.read_text() for path in tmp_path.iterdir())
    assert secret not in shown and ("team-a" in shown or "us-east-1" in shown)


@pytest.mark.parametrize("argv", [["-q", QUESTION, "--dry-run"], ["config"], ["config", "--json"]],
                         ids=["run", "config", "config-json"])
def test_a_broken_extra_body_is_not_echoed(endpoint_env, monkeypatch, capsys, argv: list) -> None:
    """EXTRA_BODY that is no JSON object (a trailing comma) is refused without echoing it: it may hold a credential."""
    monkeypatch.setenv("EXTRA_BODY", '{"api_key": "sk-litellm-client-987654", "user": "team-a",}')
    assert moa.main(argv) == 2
    captured = capsys.readouterr()
    assert "EXTRA_BODY=*** (environment) is not valid: not valid JSON" in captured.err
    assert "987654" not in captured.out + captured.err


@respx.mock
def test_check_sends_the_options_but_not_the_response_format() -> None:
    """--check's chat request carries EXTRA_BODY and the other options (a provider may need them to route), never
    RESPONSE_FORMAT, which only a synthesis takes."""
    config = moa.load_config({}, settings(SEED="5", SYNTHESIZE="on", RESPONSE_FORMAT='{"type": "json_object"}',
                                          EXTRA_BODY='{"provider": {"order": ["groq"]}}'), {})
    chat = respx.post(URL).mock(return_value=completion("OK"))
    respx.get(url__startswith="https://proxy.test/").mock(return_value=httpx.Response(404))
    report = asyncio.run(moa.check_endpoint(config, test_runtime()))
    assert report.ok
    body = body_of(chat.calls[0])
    assert body["seed"] == 5 and body["provider"] == {"order": ["groq"]} and "response_format" not in body


# --- OpenAI Batch API lines: their own settings, and a request_id each --------------------------------------


def batch_line(custom_id: str, question: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": question}], **body}}


def question_of(request: httpx.Request) -> str:
    return json.loads(request.content)["messages"][-1]["content"]


@respx.mock
def test_batch_api_lines_set_their_own_model_temperature_and_max_tokens(small, monkeypatch, tmp_path) -> None:
    """body.model, temperature and max_tokens (or max_completion_tokens) reach that line's requests, its judges
    use its model; the output names that model and gives each line a request_id of its own."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in [
        batch_line("r1", "Q-one", model="m-one", temperature=0.3, max_tokens=300),
        batch_line("r2", "Q-two", model="m-two", max_tokens=100, max_completion_tokens=500, seed=9),
        batch_line("r3", "Q-three")]))
    out = tmp_path / "results.jsonl"
    assert moa.main(["-f", str(source), "-o", str(out), "--output-format", "openai-batch"],
                    runtime=test_runtime()) == 0
    sent = {(question, call.request.headers["X-MoA-Phase"]): body_of(call) for call in route.calls
            for question in ("Q-one", "Q-two", "Q-three") if question in question_of(call.request)}
    assert {key: sent[("Q-one", key)]["model"] for key in ("generate", "critique", "judge")} == dict.fromkeys(
        ("generate", "critique", "judge"), "m-one")
    assert (sent[("Q-one", "generate")]["temperature"], sent[("Q-one", "generate")]["max_tokens"]) == (0.3, 300)
    assert (sent[("Q-two", "generate")]["max_tokens"], sent[("Q-two", "generate")]["seed"]) == (500, 9)
    assert sent[("Q-three", "generate")]["model"] == "default" and "seed" not in sent[("Q-three", "generate")]
    lines = {line["custom_id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert {c: lines[c]["response"]["body"]["model"] for c in lines} == {"r1": "m-one", "r2": "m-two", "r3": "default"}
    ids = [lines[c]["response"]["request_id"] for c in ("r1", "r2", "r3")]
    assert all(i.startswith("req_") and len(i) == 28 for i in ids) and len(set(ids)) == 3


@pytest.mark.parametrize("body, says", [
    ({"temperature": 7}, "body.temperature=7 is not valid for TEMPERATURE: expected a number from 0 to 2"),
    ({"max_tokens": "many"}, 'body.max_tokens="many" is not valid for MAX_TOKENS'),
    ({"max_completion_tokens": 0}, "body.max_completion_tokens=0 is not valid for MAX_TOKENS"),
    ({"model": ["a", "b"]}, "body.model=[\"a\", \"b\"] is not valid for MODEL_NAME: expected a string"),
    ({"seed": True}, "body.seed=true is not valid for SEED"),
    ({"stop": "</answer>"}, "body.stop=\"</answer>\" is not valid for STOP"),
], ids=["temperature-too-hot", "max-tokens-words", "max-completion-tokens-zero", "model-a-list", "seed-a-bool",
        "stop-our-tag"])
def test_a_bad_batch_body_value_is_that_lines_input_error(body: dict[str, Any], says: str) -> None:
    """A body value its setting refuses makes the line an input error that names the field, the setting and why."""
    item = parsing.item_from_json(json.dumps(batch_line("r1", "Q", **body)), 4, moa.SETTING_PARSERS)
    assert isinstance(item, moa.BadLine) and item.line == 4 and says in item.reason, item


@respx.mock
def test_a_bad_batch_line_is_reported_once_and_the_rest_runs(small, monkeypatch, tmp_path, capsys) -> None:
    """The batch reports the bad line on one stderr line with its number, answers the others, and exits 3."""
    respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "requests.jsonl"
    source.write_text(json.dumps(batch_line("r1", "Q-one", temperature=7)) + "\n"
                      + json.dumps(batch_line("r2", "Q-two")) + "\n")
    out = tmp_path / "results.jsonl"
    assert moa.main(["-f", str(source), "-o", str(out), "--output-format", "openai-batch"],
                    runtime=test_runtime()) == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if "body.temperature" in line]
    assert errors == ["input line 1: body.temperature=7 is not valid for TEMPERATURE: expected a number from 0 to 2; "
                      "skipped"]
    assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == ["r2"]


# --- a live llama.cpp takes the options -------------------------------------------------------------------


@pytest.mark.real_endpoint
@pytest.mark.timeout(1500)
def test_a_live_llama_cpp_server_takes_the_options(tmp_path: Path) -> None:
    """seed, top_p, stop and EXTRA_BODY (llama.cpp's own top_k) sent to a live server: the debate answers."""
    env = {**os.environ, "PROXY_URL": os.environ[REAL_ENDPOINT], "API_KEY": "local", "LOG_DIR": str(tmp_path / "logs"),
           "MAX_TOKENS": "96", "JUDGE_MAX_TOKENS": "96", "NUM_WORKERS": "2", "NUM_JUDGES": "1", "MIN_VALID_ANSWERS": "1",
           "ENABLE_REBUTTAL": "false", "MIN_JUDGE_CONFIDENCE": "0", "STRAGGLER_FACTOR": "0", "MAX_RETRIES": "1",
           "TEMPERATURE": "0.3", "SEED": "42", "TOP_P": "0.9", "STOP": '["<|im_end|>", "###"]',
           "EXTRA_BODY": '{"top_k": 20}', "SYSTEM_PROMPT": "You are careful with arithmetic."}
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-q", "What is 2 + 3?", "--json"], env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1400)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    printed = json.loads(done.stdout)
    assert printed["status"] == "ok" and printed["http_requests"] >= 3
    trace = next((tmp_path / "logs").glob("*.jsonl"))
    assert "You are careful with arithmetic." in trace.read_text(encoding="utf-8")
