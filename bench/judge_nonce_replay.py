"""Where a judge's nonce goes (issue 25): the first attempts of the judge requests in a run's traces, each sent again
to a llama.cpp server with the same seed and a new nonce '#<hex>' in each place asked for, counting usable verdicts
and replies cut at the cap.

    python bench/judge_nonce_replay.py "evals/**/logs/**/*.jsonl" 120 user,system,cue-generic,cue-named
"""
from __future__ import annotations

import asyncio
import glob
import json
import re
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parsing import answer_left_open, parse_judgement  # noqa: E402

URL = "http://127.0.0.1:8088/v1/chat/completions"  # llama-server, as bench/README.md starts it
NONCE = re.compile(r"\n\n(?:\[request ([0-9a-f]{16})\]|#([0-9a-f]{16}))")


def judge_requests(pattern: str) -> list[list[dict[str, str]]]:
    seen, out = set(), []
    for path in sorted(glob.glob(pattern, recursive=True)):
        for line in open(path):
            r = json.loads(line)
            if r.get("type") != "attempt" or r.get("phase") != "judge" or r.get("attempt") != 1:
                continue
            msgs = [{"role": m["role"], "content": NONCE.sub("", m["content"])} for m in r["request"]["messages"]]
            key = json.dumps(msgs)
            if key not in seen:
                seen.add(key)
                out.append(msgs)
    return out


CUES = {"cue-generic": "\n\nNow reply in the format above, ending with its two lines.",
        "cue-named": "\n\nNow write your <analysis>, then the FINAL ANSWER and CONFIDENCE lines."}


def placed(msgs: list[dict[str, str]], where: str, n: int) -> list[dict[str, str]]:
    nonce = f"\n\n#{n:016x}"
    system, user = msgs[0]["content"], msgs[-1]["content"]
    if where == "system":
        return [{"role": "system", "content": system + nonce}, {"role": "user", "content": user}]
    if where in CUES:
        return [{"role": "system", "content": system}, {"role": "user", "content": user + CUES[where] + nonce}]
    return [{"role": "system", "content": system}, {"role": "user", "content": user + nonce}]


def usable(text: str, finish: str) -> bool:
    j = parse_judgement(text)
    return bool(j.final_answer) and not (finish == "length" and (j.tier == "sentence" or answer_left_open(text)))


async def main() -> None:
    reqs = judge_requests(sys.argv[1])[: int(sys.argv[2])]
    sem = asyncio.Semaphore(4)
    async with httpx.AsyncClient() as client:
        async def one(msgs: list[dict[str, str]], seed: int) -> tuple[bool, bool]:
            body = {"messages": msgs, "temperature": 0.2, "max_tokens": 192, "seed": seed}
            async with sem:
                r = await client.post(URL, json=body, timeout=900)
            d = r.json()["choices"][0]
            return usable(d["message"]["content"] or "", d["finish_reason"]), d["finish_reason"] == "length"
        for where in sys.argv[3].split(","):
            t = time.time()
            got = await asyncio.gather(*(one(placed(m, where, 0xD1CE0000 + i), 1000 + i) for i, m in enumerate(reqs)))
            print(f"nonce ends the {where} message: {sum(g for g, _ in got)}/{len(got)} judges usable, "
                  f"{sum(c for _, c in got)} cut at the cap ({time.time() - t:.0f}s)", flush=True)


asyncio.run(main())
